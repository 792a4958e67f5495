"""One connection API over SQLite and PostgreSQL, with their failures named the same way.

SQL is written once with `?` placeholders; PostgreSQL's driver wants `%s`, so the text is
translated, never formatted with values. Connections come from a small pool
(`STORE_POOL_SIZE` per process); one that fails is closed, not reused, so the next call
reconnects: a database that comes back is used again without a restart.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import Any

from serving.store.config import StoreConfig
from serving.store.schema import MIGRATIONS


class StoreError(Exception):
    """The store cannot take or give data now: `reason` is 'unavailable' or 'full'."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def classify(exc: BaseException) -> str | None:
    """'full', 'unavailable', or None for an error that is a bug rather than an outage."""
    if isinstance(exc, sqlite3.OperationalError | sqlite3.DatabaseError):
        text = str(exc).lower()
        if isinstance(exc, sqlite3.IntegrityError | sqlite3.ProgrammingError):
            return None
        return "full" if "full" in text else "unavailable"
    try:
        import psycopg
    except ImportError:
        return None
    if isinstance(exc, psycopg.errors.DiskFull | psycopg.errors.OutOfMemory):
        return "full"
    if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
        return "unavailable"
    return None


class Database:
    """A small pool of connections, transactions and the schema of one store."""

    def __init__(self, config: StoreConfig) -> None:
        self.config = config
        self.dialect = config.dialect
        self._idle: list[Any] = []
        self._lock = threading.Lock()
        # Bounded per process, so 8 replicas stay far below PostgreSQL's max_connections.
        self._slots = threading.BoundedSemaphore(config.pool_size)

    def _connect(self) -> Any:
        c = self.config
        if self.dialect == "postgresql":
            import psycopg

            return psycopg.connect(
                c.database_url,
                connect_timeout=max(2, round(c.timeout_s)),
                options=f"-c statement_timeout={round(c.timeout_s * 1000)}",
            )
        c.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(c.path, timeout=c.timeout_s, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")  # a commit is on disk when it returns
        conn.execute("PRAGMA foreign_keys=ON")
        if c.max_mb > 0:
            page = conn.execute("PRAGMA page_size").fetchone()[0]
            conn.execute(f"PRAGMA max_page_count={max(16, int(c.max_mb * 2**20 / page))}")
        return conn

    @contextmanager
    def _lease(self) -> Iterator[Any]:
        """An idle connection or a new one; one an outage broke is closed, not returned."""
        if not self._slots.acquire(timeout=self.config.timeout_s):
            raise StoreError("unavailable", "Every store connection is busy; retry shortly.")
        conn = None
        try:
            with self._lock:
                conn = self._idle.pop() if self._idle else None
            conn = conn or self._connect()
            yield conn
        except BaseException as exc:
            if conn is not None and classify(exc) is not None:
                with suppress(Exception):  # closing a broken connection may fail too
                    conn.close()
                conn = None
            raise
        finally:
            if conn is not None:
                with self._lock:
                    self._idle.append(conn)
            self._slots.release()

    def sql(self, text: str) -> str:
        return text.replace("?", "%s") if self.dialect == "postgresql" else text

    @contextmanager
    def transaction(self) -> Iterator[Cursor]:
        """A cursor inside one transaction: committed on exit, rolled back on error.

        Outages become `StoreError`; the connection is dropped so the next call reconnects.
        """
        try:
            with self._lease() as conn:
                cur = conn.cursor()
                try:
                    yield Cursor(self, cur)
                    conn.commit()
                except BaseException:
                    with suppress(Exception):  # the rollback of a dead connection fails too
                        conn.rollback()
                    raise
                finally:
                    cur.close()
        except StoreError:
            raise
        except Exception as exc:
            reason = classify(exc)
            if reason is None:
                raise
            raise StoreError(reason, f"{self.config.describe()}: {exc}".strip()) from exc

    def migrate(self) -> int:
        """Create or upgrade the schema idempotently; returns the schema version."""
        with self.transaction() as cur:
            if self.dialect == "postgresql":  # two replicas starting at once take turns
                cur.execute("SELECT pg_advisory_xact_lock(7362201)")
            else:
                cur.execute("BEGIN IMMEDIATE")  # DDL would otherwise commit at once
            cur.execute("CREATE TABLE IF NOT EXISTS store_schema (version INTEGER NOT NULL)")
            row = cur.execute("SELECT max(version) FROM store_schema").fetchone()
            current = (row[0] or 0) if row else 0
            for version, statements in enumerate(MIGRATIONS, start=1):
                if version <= current:
                    continue
                for statement in statements:
                    cur.execute(statement)
                cur.execute("INSERT INTO store_schema (version) VALUES (?)", (version,))
        return len(MIGRATIONS)

    def close(self) -> None:
        """Close the idle connections (at shutdown; leased ones close when returned)."""
        with self._lock:
            conns, self._idle = self._idle, []
        for conn in conns:
            with suppress(Exception):  # a connection broken by an outage may refuse to close
                conn.close()


class Cursor:
    """A DB-API cursor that takes `?` placeholders on both databases."""

    def __init__(self, db: Database, raw: Any) -> None:
        self.db = db
        self.raw = raw

    def execute(self, text: str, params: Sequence[Any] = ()) -> Cursor:
        self.raw.execute(self.db.sql(text), tuple(params))
        return self

    def executemany(self, text: str, rows: Sequence[Sequence[Any]]) -> None:
        self.raw.executemany(self.db.sql(text), [tuple(r) for r in rows])

    def fetchone(self) -> tuple | None:
        return self.raw.fetchone()

    def fetchall(self) -> list[tuple]:
        return list(self.raw.fetchall())

    @property
    def rowcount(self) -> int:
        return self.raw.rowcount
