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
    [  # the out-of-distribution score and flag /predict answers (issue 18)
        "ALTER TABLE predictions ADD COLUMN ood_score DOUBLE PRECISION",
        "ALTER TABLE predictions ADD COLUMN ood_flag INTEGER",
    ],
    # Shadow scoring (serving/inference/shadow.py): the challenger's answer per photo it
    # scored, beside the served one in `predictions`. A table of its own, so the drift
    # window and live accuracy (which read `predictions`) never see the challenger.
    [
        """CREATE TABLE IF NOT EXISTS shadow_predictions (
            request_id TEXT NOT NULL,
            model_version TEXT NOT NULL,
            label TEXT NOT NULL,
            confidence DOUBLE PRECISION NOT NULL,
            probabilities TEXT NOT NULL,
            ts DOUBLE PRECISION NOT NULL,
            replica TEXT,
            PRIMARY KEY (request_id, model_version)
        )""",
        "CREATE INDEX IF NOT EXISTS shadow_predictions_ts ON shadow_predictions (ts)",
    ],
    [
        # Which API key asked (its name from API_KEYS; NULL without keys): live accuracy
        # by client, and the live window's per-client share.
        "ALTER TABLE predictions ADD COLUMN client TEXT",
    ],
]
