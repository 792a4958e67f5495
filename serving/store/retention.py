"""Store retention: predictions older than STORE_RETENTION_DAYS, or past the newest
STORE_MAX_ROWS, are deleted with their feedback and their shadow (challenger) answers, every STORE_PRUNE_INTERVAL_S.

Every replica may prune: the deletes are idempotent, so replicas sharing PostgreSQL need
no coordination. Without it the store grows with every request for ever.
"""

from __future__ import annotations

import logging
import threading
import time

from serving.store.config import StoreConfig
from serving.store.database import Database, StoreError

log = logging.getLogger("serving.store")


def _cutoff(db: Database, config: StoreConfig) -> float | None:
    """The newest `ts` to delete (it and everything older), or None: nothing to delete."""
    cutoffs = []
    if config.retention_days > 0:
        cutoffs.append(time.time() - config.retention_days * 86400.0)
    if config.max_rows > 0:
        with db.transaction() as cur:
            sql = "SELECT ts FROM predictions ORDER BY ts DESC LIMIT 1 OFFSET ?"
            row = cur.execute(sql, (config.max_rows,)).fetchone()
        if row is not None:
            cutoffs.append(float(row[0]))
    return max(cutoffs) if cutoffs else None


def prune(db: Database, config: StoreConfig) -> int:
    """Delete what retention no longer keeps; the number of predictions deleted."""
    cutoff = _cutoff(db, config)
    if cutoff is None:
        return 0
    with db.transaction() as cur:
        cur.execute(
            "DELETE FROM feedback WHERE request_id IN "
            "(SELECT request_id FROM predictions WHERE ts <= ?)",
            (cutoff,),
        )
        cur.execute("DELETE FROM shadow_predictions WHERE ts <= ?", (cutoff,))
        cur.execute("DELETE FROM predictions WHERE ts <= ?", (cutoff,))
        return max(cur.rowcount, 0)


class Pruner:
    """A daemon thread that prunes the store now and then, until stopped."""

    def __init__(self, db: Database, config: StoreConfig, ready: threading.Event) -> None:
        self.db, self.config, self.ready = db, config, ready
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="store-pruner", daemon=True)

    def start(self) -> None:
        if self.config.retention_days > 0 or self.config.max_rows > 0:
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.config.prune_interval_s):
            if not self.ready.is_set():
                continue
            try:
                deleted = prune(self.db, self.config)
            except StoreError as exc:
                log.warning("Store not pruned: %s", exc)
                continue
            if deleted:
                log.info(
                    "Deleted %d predictions past retention",
                    deleted,
                    extra={"fields": {"event": "store_pruned", "count": deleted}},
                )
