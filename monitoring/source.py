"""The report's input, read from the store every replica writes (SQLite or PostgreSQL).

One query per table over an indexed time range; the store keeps one row per request id
and one true label per prediction, so nothing needs deduplicating here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from serving.store import PredictionRecord, StoreConfig
from serving.store.database import Database


@dataclass
class Window:
    """Predictions in the window (as report dicts, oldest first) and their true labels."""

    predictions: list[dict] = field(default_factory=list)
    truths: dict[str, str] = field(default_factory=dict)


def _as_dict(record: PredictionRecord) -> dict:
    return {
        "request_id": record.request_id,
        "time": datetime.fromtimestamp(record.ts, UTC).isoformat(timespec="milliseconds"),
        "label": record.label,
        "confidence": record.confidence,
        "probabilities": record.probabilities,
        "latency_ms": record.latency_ms,
        "model_version": record.model_version,
        "replica": record.replica,
        "image": {"width": record.width, "height": record.height, "brightness": record.brightness},
    }


def _where(
    since: datetime | None, until: datetime | None, model_version: str | None, prefix: str
) -> tuple[str, list]:
    clauses, params = [], []
    if since is not None:
        clauses.append(f"{prefix}ts >= ?")
        params.append(since.timestamp())
    if until is not None:
        clauses.append(f"{prefix}ts < ?")
        params.append(until.timestamp())
    if model_version is not None:
        clauses.append(f"{prefix}model_version = ?")
        params.append(model_version)
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


def read_window(
    config: StoreConfig,
    since: datetime | None = None,
    until: datetime | None = None,
    model_version: str | None = None,
) -> Window:
    """Predictions with `since <= time < until` (of one model version, if given), and the
    true labels stored for them (whenever the feedback came)."""
    db = Database(config)
    try:
        db.migrate()  # a report on a store no service has written yet is an empty report
        where, params = _where(since, until, model_version, "p.")
        columns = ", ".join(f"p.{c}" for c in PredictionRecord.COLUMNS)
        with db.transaction() as cur:
            rows = cur.execute(
                f"SELECT {columns}, f.label FROM predictions p "
                f"LEFT JOIN feedback f ON f.request_id = p.request_id{where} ORDER BY p.ts",
                params,
            ).fetchall()
    finally:
        db.close()
    window = Window()
    n = len(PredictionRecord.COLUMNS)
    for row in rows:
        record = PredictionRecord.from_row(row[:n])
        window.predictions.append(_as_dict(record))
        if row[n] is not None:
            window.truths[record.request_id] = row[n]
    return window
