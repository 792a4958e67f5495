"""The store's tables, as numbered migrations applied once each (SQLite and PostgreSQL).

Append a new list to `MIGRATIONS` to change the schema; never edit an applied one.
Times are UNIX seconds (DOUBLE PRECISION) so both databases compare them the same way.
"""

from __future__ import annotations

MIGRATIONS: list[list[str]] = [
    [
        """CREATE TABLE IF NOT EXISTS predictions (
            request_id TEXT PRIMARY KEY,
            correlation_id TEXT,
            ts DOUBLE PRECISION NOT NULL,
            label TEXT NOT NULL,
            confidence DOUBLE PRECISION NOT NULL,
            probabilities TEXT NOT NULL,
            latency_ms DOUBLE PRECISION,
            inference_ms DOUBLE PRECISION,
            model_version TEXT NOT NULL,
            width INTEGER,
            height INTEGER,
            brightness DOUBLE PRECISION,
            sha256 TEXT,
            replica TEXT
        )""",
        "CREATE INDEX IF NOT EXISTS predictions_ts ON predictions (ts)",
        """CREATE TABLE IF NOT EXISTS feedback (
            request_id TEXT PRIMARY KEY REFERENCES predictions (request_id),
            label TEXT NOT NULL,
            correct INTEGER NOT NULL,
            ts DOUBLE PRECISION NOT NULL,
            replica TEXT
        )""",
        "CREATE INDEX IF NOT EXISTS feedback_ts ON feedback (ts)",
    ],
    [
        # Which API key asked (its name from API_KEYS; NULL without keys): live accuracy
        # by client, and the live window's per-client share.
        "ALTER TABLE predictions ADD COLUMN client TEXT",
    ],
]
