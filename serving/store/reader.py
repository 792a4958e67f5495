"""The store's public read interface: predictions and their true labels in a time range.

For readers outside the service (the monitoring report): it opens the store read-only,
SQLite with `mode=ro` and PostgreSQL in read-only transactions, and never creates a
database, a table or a migration. A store no service has written yet (no file, no
tables) reads as empty, so a report on it says "no predictions" instead of failing.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from serving.store.config import StoreConfig
from serving.store.database import StoreError, classify
from serving.store.records import PredictionRecord

TABLES = ("predictions", "feedback")


@dataclass(frozen=True)
class LabelledPrediction:
    """One stored prediction and the true label fed back for it (None: not labelled)."""

    record: PredictionRecord
    true_label: str | None = None


@dataclass(frozen=True)
class TimeRange:
    """`since <= time < until` (either end open when None), of one model version if set."""

    since: datetime | None = None
    until: datetime | None = None
    model_version: str | None = None

    def where(self) -> tuple[str, list[Any]]:
        """The SQL condition on `p.` (the predictions table) and its parameters."""
        clauses, params = [], []
        if self.since is not None:
            clauses.append("p.ts >= ?")
            params.append(self.since.timestamp())
        if self.until is not None:
            clauses.append("p.ts < ?")
            params.append(self.until.timestamp())
        if self.model_version is not None:
            clauses.append("p.model_version = ?")
            params.append(self.model_version)
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


def _query(span: TimeRange) -> tuple[str, list[Any]]:
    where, params = span.where()
    columns = ", ".join(f"p.{c}" for c in PredictionRecord.COLUMNS)
    sql = (
        f"SELECT {columns}, f.label FROM predictions p "
        f"LEFT JOIN feedback f ON f.request_id = p.request_id{where} ORDER BY p.ts, p.request_id"
    )
    return sql, params


@contextmanager
def _sqlite(config: StoreConfig) -> Iterator[Any]:
    """A read-only connection, or None when the file does not exist (nothing to read)."""
    if not config.path.is_file():
        yield None
        return
    uri = f"{config.path.resolve().as_uri()}?mode=ro"
    with closing(sqlite3.connect(uri, uri=True, timeout=config.timeout_s)) as conn:
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        yield conn if names.issuperset(TABLES) else None


@contextmanager
def _postgres(config: StoreConfig) -> Iterator[Any]:
    """A connection whose transactions are read-only, or None when the tables are missing."""
    import psycopg

    options = (
        f"-c default_transaction_read_only=on -c statement_timeout={round(config.timeout_s * 1000)}"
    )
    with psycopg.connect(
        config.database_url, connect_timeout=max(2, round(config.timeout_s)), options=options
    ) as conn:
        checks = ", ".join(f"to_regclass('{t}') IS NOT NULL" for t in TABLES)
        present = conn.execute(f"SELECT {checks}").fetchone()
        yield conn if present and all(present) else None


def _rows(config: StoreConfig, span: TimeRange) -> list[tuple]:
    sql, params = _query(span)
    if config.dialect == "postgresql":
        with _postgres(config) as conn:
            return [] if conn is None else conn.execute(sql.replace("?", "%s"), params).fetchall()
    with _sqlite(config) as conn:
        return [] if conn is None else conn.execute(sql, params).fetchall()


@dataclass(frozen=True)
class ShadowPair:
    """One photo answered by the served model and scored by a challenger in its shadow."""

    request_id: str
    served_label: str
    served_version: str
    challenger_label: str
    challenger_version: str
    true_label: str | None = None  # the feedback, when it came


def _shadow_query(span: TimeRange) -> tuple[str, list[Any]]:
    where, params = span.where()
    sql = (
        "SELECT s.request_id, p.label, p.model_version, s.label, s.model_version, f.label "
        "FROM shadow_predictions s JOIN predictions p ON p.request_id = s.request_id "
        f"LEFT JOIN feedback f ON f.request_id = s.request_id{where} "
        "ORDER BY p.ts, s.request_id"
    )
    return sql, params


def _shadow_rows(config: StoreConfig, span: TimeRange) -> list[tuple]:
    """Like `_rows`, but a store without the shadow table (never shadowed) reads as empty."""
    sql, params = _shadow_query(span)
    if config.dialect == "postgresql":
        with _postgres(config) as conn:
            if conn is None or not conn.execute(SHADOW_PG_CHECK).fetchone()[0]:
                return []
            return conn.execute(sql.replace("?", "%s"), params).fetchall()
    with _sqlite(config) as conn:
        if conn is None or not conn.execute(SHADOW_SQLITE_CHECK).fetchone():
            return []
        return conn.execute(sql, params).fetchall()


SHADOW_PG_CHECK = "SELECT to_regclass('shadow_predictions') IS NOT NULL"
SHADOW_SQLITE_CHECK = "SELECT 1 FROM sqlite_master WHERE type='table' AND name='shadow_predictions'"


def read_shadow(config: StoreConfig, span: TimeRange | None = None) -> list[ShadowPair]:
    """The photos a challenger scored in `span` (of the served predictions' times), with
    both answers and the true label when it came. Raises StoreError when unreachable."""
    rows = _read(_shadow_rows, config, span or TimeRange())
    return [ShadowPair(*row) for row in rows]


def _read(rows_of, config: StoreConfig, span: TimeRange) -> list[tuple]:
    """`rows_of(config, span)`, with a database failure said as a StoreError."""
    try:
        return rows_of(config, span)
    except Exception as exc:
        reason = classify(exc)
        if reason is None:
            raise
        raise StoreError(reason, f"{config.describe()}: {exc}".strip()) from exc


def read_predictions(
    config: StoreConfig, span: TimeRange | None = None
) -> list[LabelledPrediction]:
    """The predictions in `span` (oldest first) with their true labels, whenever the
    feedback came. Raises StoreError when the store cannot be reached."""
    rows = _read(_rows, config, span or TimeRange())
    n = len(PredictionRecord.COLUMNS)
    return [LabelledPrediction(PredictionRecord.from_row(row[:n]), row[n]) for row in rows]
