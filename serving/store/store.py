"""The store of predictions and feedback that every replica shares.

Predictions go through the batching writer (never blocking a request); feedback is one
transaction that either stores the label or changes nothing. Look-ups use the primary
key, never a scan. Blocking calls: run them in a worker thread, not on the event loop.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from dataclasses import replace

from prometheus_client import CollectorRegistry

from serving.cpu_stages import StageCpu
from serving.store.config import StoreConfig
from serving.store.database import Database, StoreError
from serving.store.metrics import StoreMetrics
from serving.store.records import FeedbackOutcome, PredictionRecord, RecentWindow, ShadowRecord
from serving.store.retention import Pruner
from serving.store.writer import PredictionWriter

log = logging.getLogger("serving.store")

REPLICA = f"{socket.gethostname()}:{os.getpid()}"

# The live window: the newest RECENT_WINDOW predictions, at most WINDOW_CLIENT_SHARE of it
# from one client (its newest), looked for among the newest LOOKBACK windows' worth of
# rows, so one client's flood cannot fill the window alone (rows without a client name,
# served without API keys, cannot be told apart and are not capped).
LOOKBACK = 10
WINDOW_SQL = (
    "SELECT label, confidence, brightness, ood_flag FROM ("
    " SELECT label, confidence, brightness, ood_flag, ts, client,"
    " ROW_NUMBER() OVER (PARTITION BY client ORDER BY ts DESC) AS nth"
    " FROM (SELECT label, confidence, brightness, ood_flag, ts, client FROM predictions"
    " ORDER BY ts DESC LIMIT ?) AS recent"
    ") AS ranked WHERE client IS NULL OR nth <= ? ORDER BY ts DESC LIMIT ?"
)
# The newest RECENT_WINDOW labels, counted by the client that asked for the prediction.
ACCURACY_SQL = (
    "SELECT p.client, count(*), sum(f.correct) FROM"
    " (SELECT request_id, correct FROM feedback ORDER BY ts DESC LIMIT ?) AS f"
    " JOIN predictions p ON p.request_id = f.request_id GROUP BY p.client"
)


class UnknownPrediction(LookupError):
    """No prediction with this request id is stored (or waiting to be)."""


class LabelConflict(Exception):
    """A different true label is already stored for this prediction."""

    def __init__(self, existing: str) -> None:
        super().__init__(existing)
        self.existing = existing


class Store:
    """Predictions and true labels of every replica, in SQLite or PostgreSQL."""

    def __init__(
        self,
        config: StoreConfig,
        registry: CollectorRegistry | None = None,
        cpu: StageCpu | None = None,
    ) -> None:
        self.config = config
        self.db = Database(config)
        self.metrics = StoreMetrics(registry)
        self.writer = PredictionWriter(
            self.db, config, self.metrics.written.inc, self._count_loss, self.ensure_schema, cpu
        )
        self.metrics.watch(lambda: self.writer.queued, lambda: float(self.writer.available))
        self._schema_ready = False
        self._schema_lock = threading.Lock()
        self._window = RecentWindow()
        self._window_at = float("-inf")
        self._window_lock = threading.Lock()
        self._schema_event = threading.Event()
        self.pruner = Pruner(self.db, config, self._schema_event)

    def _count_loss(self, reason: str, n: int) -> None:
        self.metrics.lost.labels(reason=reason).inc(n)

    # -- life cycle ---------------------------------------------------------------------

    def open(self) -> None:
        """Start the writer and create the schema; a store that is down is retried later."""
        try:
            self.ensure_schema()
        except StoreError as exc:
            self.writer.available, self.writer.last_error = False, str(exc)
            log.error("Store not reachable at start: %s", exc, extra={"fields": {"event": "store"}})
        self.writer.start()
        self.pruner.start()
        log.info("Store: %s", self.config.describe(), extra={"fields": {"event": "store"}})

    def ensure_schema(self) -> None:
        if self._schema_ready:
            return
        with self._schema_lock:
            if not self._schema_ready:
                self.db.migrate()
                self._schema_ready = True
                self._schema_event.set()

    def close(self) -> None:
        """Write what is queued (bounded by the retry time), then close the connections."""
        self.pruner.stop()
        self.writer.stop(timeout=self.config.retry_s + 5.0)
        self.db.close()

    # -- predictions --------------------------------------------------------------------

    def record(self, record: PredictionRecord) -> bool:
        """Queue a prediction for writing (never blocks); False when it was dropped."""
        if record.replica is None:
            record = replace(record, replica=REPLICA)
        return self.writer.submit(record)

    def prediction(self, request_id: str) -> PredictionRecord | None:
        """The stored prediction, after writing it first if it is still queued here."""
        if not self.writer.wait_written(request_id, self.config.feedback_wait_s):
            raise StoreError("unavailable", "The prediction is not written yet; retry shortly.")
        self.ensure_schema()
        columns = ", ".join(PredictionRecord.COLUMNS)
        with self.db.transaction() as cur:
            sql = f"SELECT {columns} FROM predictions WHERE request_id = ?"
            row = cur.execute(sql, (request_id,)).fetchone()
        return PredictionRecord.from_row(row) if row else None

    def record_shadow(self, records: list[ShadowRecord]) -> None:
        """Write challenger answers now, in one transaction (the shadow thread's own
        call, never the request path's); raises StoreError when the store is down."""
        sql = (
            f"INSERT INTO shadow_predictions ({', '.join(ShadowRecord.COLUMNS)}) VALUES "
            f"({', '.join('?' for _ in ShadowRecord.COLUMNS)}) "
            "ON CONFLICT (request_id, model_version) DO NOTHING"
        )
        rows = [replace(r, replica=r.replica or REPLICA).row() for r in records]
        self.ensure_schema()
        with self.db.transaction() as cur:
            cur.executemany(sql, rows)

    # -- feedback -----------------------------------------------------------------------

    def add_feedback(self, request_id: str, label: str) -> FeedbackOutcome:
        """Store the one true label of a prediction, atomically.

        A prediction still queued here is written first; one unknown to the store is
        looked up again for up to a flush interval plus `feedback_wait_s`, since another
        replica may still hold it in its queue. Raises UnknownPrediction (no such id), LabelConflict (another
        label is stored) or StoreError (the store is down or full: nothing was stored).
        """
        if not self.writer.wait_written(request_id, self.config.feedback_wait_s):
            raise StoreError("unavailable", "The prediction is not written yet; retry shortly.")
        self.ensure_schema()
        # Another replica writes its queue within a flush interval plus the time a write
        # takes: look again until then (feedback_wait_s bounds the write, as above).
        deadline = time.monotonic() + self.config.flush_ms / 1000.0 + self.config.feedback_wait_s
        while True:
            try:
                return self._store_label(request_id, label)
            except UnknownPrediction:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.05)

    def _store_label(self, request_id: str, label: str) -> FeedbackOutcome:
        with self.db.transaction() as cur:
            sql = "SELECT label FROM predictions WHERE request_id = ?"
            row = cur.execute(sql, (request_id,)).fetchone()
            if row is None:
                raise UnknownPrediction(request_id)
            predicted = row[0]
            cur.execute(
                "INSERT INTO feedback (request_id, label, correct, ts, replica) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (request_id) DO NOTHING",
                (request_id, label, int(label == predicted), time.time(), REPLICA),
            )
            if cur.rowcount == 1:
                return FeedbackOutcome(request_id, label, predicted, stored=True)
            sql = "SELECT label FROM feedback WHERE request_id = ?"
            existing = cur.execute(sql, (request_id,)).fetchone()[0]
        if existing != label:
            raise LabelConflict(existing)
        return FeedbackOutcome(request_id, label, predicted, stored=False)

    # -- live window --------------------------------------------------------------------

    def window(self) -> RecentWindow:
        """The newest `window` predictions and labels of all replicas, cached a few seconds.

        When the store is down the last window read is returned (the gauges go stale
        rather than blank); `prediction_store_up` tells which.
        """
        with self._window_lock:
            if time.monotonic() - self._window_at < self.config.window_ttl_s:
                return self._window
            try:
                self._window = self._read_window()
            except StoreError as exc:
                log.warning("Live window not read: %s", exc)
            self._window_at = time.monotonic()
            return self._window

    def _read_window(self) -> RecentWindow:
        self.ensure_schema()
        n = self.config.window
        per_client = max(1, int(n * self.config.client_share))
        with self.db.transaction() as cur:
            rows = cur.execute(WINDOW_SQL, (n * LOOKBACK, per_client, n)).fetchall()
            by_client = {
                client: (int(labelled), int(correct or 0))
                for client, labelled, correct in cur.execute(ACCURACY_SQL, (n,)).fetchall()
            }
        rows.reverse()  # oldest first, as the traffic came
        return RecentWindow(
            labels=[r[0] for r in rows],
            confidences=[r[1] for r in rows],
            brightness=[r[2] for r in rows],
            ood_flags=[None if r[3] is None else bool(r[3]) for r in rows],
            labelled=sum(v[0] for v in by_client.values()),
            correct=sum(v[1] for v in by_client.values()),
            by_client=by_client,
        )
