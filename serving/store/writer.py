"""Prediction writes, batched in one thread off the event loop and bounded.

`submit` never blocks: a record joins a bounded queue or is counted as lost. The writer
thread commits a batch every `batch_size` records or `flush_ms`, whichever comes first,
retrying a failed batch for up to `retry_s` before it gives the batch up (counted and
logged; while the store stays down, later batches get one attempt each). A record
leaves `pending` only once it is committed or given up, so /feedback for a prediction
not yet written waits for it (`wait_written`) instead of answering 404.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable

from serving.cpu_stages import StageCpu
from serving.store.config import StoreConfig
from serving.store.database import Database, StoreError
from serving.store.records import PredictionRecord

log = logging.getLogger("serving.store")

INSERT = (
    f"INSERT INTO predictions ({', '.join(PredictionRecord.COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in PredictionRecord.COLUMNS)}) "
    "ON CONFLICT (request_id) DO NOTHING"
)


class PredictionWriter:
    """A bounded queue of predictions and the thread that commits them in batches."""

    def __init__(
        self,
        db: Database,
        config: StoreConfig,
        on_written: Callable[[int], None],
        on_lost: Callable[[str, int], None],
        ensure_schema: Callable[[], None],
        cpu: StageCpu | None = None,
    ) -> None:
        self.db = db
        self.cpu = cpu  # the writer thread's CPU counts as "recording"
        self.ensure_schema = ensure_schema  # a store down at start gets its schema later
        self.config = config
        self.on_written = on_written
        self.on_lost = on_lost
        self.available = True  # the last write (or attempt) reached the store
        self.last_error = ""
        self._queue: deque[PredictionRecord] = deque()
        self._pending: dict[str, PredictionRecord] = {}
        self._cond = threading.Condition()
        self._flush_now = False
        self._stopping = False
        self._dropped = 0  # dropped since the last log line
        self._dropped_logged_at = float("-inf")
        self._thread = threading.Thread(target=self._run, name="store-writer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def submit(self, record: PredictionRecord) -> bool:
        """Queue one prediction; False (and counted) when the queue is full or stopped."""
        with self._cond:
            if self._stopping or len(self._pending) >= self.config.queue_max:
                reason = "queue_full" if not self._stopping else "stopping"
            else:
                self._queue.append(record)
                self._pending[record.request_id] = record
                if len(self._queue) in (1, self.config.batch_size):  # start the clock / flush
                    self._cond.notify_all()
                return True
        self.on_lost(reason, 1)
        self._note_drop(reason)
        return False

    def _note_drop(self, reason: str) -> None:
        """Log dropped predictions at most once a second, with their count (no log flood)."""
        now = time.monotonic()
        with self._cond:
            self._dropped += 1
            if now - self._dropped_logged_at < 1.0:
                return
            count, self._dropped, self._dropped_logged_at = self._dropped, 0, now
        log.warning(
            "%d predictions not stored: %s",
            count,
            reason,
            extra={"fields": {"event": "store_loss", "reason": reason, "count": count}},
        )

    def pending(self, request_id: str) -> PredictionRecord | None:
        with self._cond:
            return self._pending.get(request_id)

    @property
    def queued(self) -> int:
        with self._cond:
            return len(self._pending)

    def wait_written(self, request_id: str, timeout: float) -> bool:
        """Flush now and wait until `request_id` is committed or given up (False: timeout)."""
        with self._cond:
            if request_id not in self._pending:
                return True
            self._flush_now = True
            self._cond.notify_all()
            return self._cond.wait_for(lambda: request_id not in self._pending, timeout)

    def stop(self, timeout: float = 10.0) -> None:
        """Write what is queued (within `timeout`), then end the thread."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _next_batch(self) -> list[PredictionRecord]:
        """Wait for a full batch, the flush interval, a flush request or the stop."""
        c = self.config
        with self._cond:
            self._cond.wait_for(lambda: self._queue or self._stopping)
            if not self._stopping:
                self._cond.wait_for(
                    lambda: len(self._queue) >= c.batch_size or self._flush_now or self._stopping,
                    c.flush_ms / 1000.0,
                )
            self._flush_now = False
            n = min(len(self._queue), c.batch_size)
            return [self._queue.popleft() for _ in range(n)]

    def _run(self) -> None:
        while True:
            batch = self._next_batch()
            if not batch:
                return  # stopping and nothing left
            if self.cpu is None:
                self._write(batch)
            else:
                with self.cpu.measure("recording"):
                    self._write(batch)
            with self._cond:
                for record in batch:
                    self._pending.pop(record.request_id, None)
                self._cond.notify_all()

    def _write(self, batch: list[PredictionRecord]) -> None:
        """Commit `batch`, retrying an outage for `retry_s`; then give it up, counted.

        Once a batch has been given up, the store is known to be down: later batches get
        one attempt each, so the writer keeps pace with traffic instead of queueing it.
        """
        deadline = time.monotonic() + (self.config.retry_s if self.available else 0.0)
        pause = 0.05
        while True:
            try:
                self.ensure_schema()
                with self.db.transaction() as cur:
                    cur.executemany(INSERT, [r.row() for r in batch])
            except StoreError as exc:
                self.available, self.last_error = False, str(exc)
                if time.monotonic() + pause > deadline or self._stopping:
                    self.on_lost(exc.reason, len(batch))
                    log.error(
                        "%d predictions not stored (%s): %s",
                        len(batch),
                        exc.reason,
                        exc,
                        extra={"fields": {"event": "store_loss", "reason": exc.reason}},
                    )
                    return
                time.sleep(pause)
                pause = min(pause * 2, 1.0)
                continue
            except Exception:  # a bug must not end the thread: the batch is lost, loudly
                self.on_lost("error", len(batch))
                log.exception("%d predictions not stored", len(batch))
                return
            self.available, self.last_error = True, ""
            self.on_written(len(batch))
            return
