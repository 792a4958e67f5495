"""The store's public read interface, against real SQLite files and a real PostgreSQL.

What monitoring relies on: a time range and a model version select the predictions, each
comes with its true label, and reading never creates or changes anything, even a store
no service has written yet.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest

from serving.store import (
    PredictionRecord,
    Store,
    StoreConfig,
    StoreError,
    TimeRange,
    read_predictions,
)
from tests.helpers.postgres import PostgresServer, new_database

T0 = datetime(2026, 11, 26, 10, 0, tzinfo=UTC).timestamp()


@pytest.fixture(params=["sqlite", "postgresql"])
def config(request: pytest.FixtureRequest, tmp_path: Path) -> StoreConfig:
    url = new_database(request.getfixturevalue("postgres")) if request.param != "sqlite" else ""
    return StoreConfig(database_url=url, path=tmp_path / "store.sqlite3", flush_ms=10)


def _record(rid: str, minute: int, label: str, version: str = "v1") -> PredictionRecord:
    return PredictionRecord(
        request_id=rid,
        ts=T0 + 60 * minute,
        label=label,
        confidence=0.9,
        probabilities={label: 0.9},
        model_version=version,
        latency_ms=12.5,
        width=400,
        height=300,
        brightness=0.4,
        replica="replica-a",
    )


def _fill(config: StoreConfig) -> None:
    """r1 (minute 0, labelled dog), r2 (minute 1, no label), r3 (minute 2, model v2,
    labelled dog), written through the service's own store."""
    store = Store(config)
    store.open()
    try:
        for record in (
            _record("r1", 0, "cat"),
            _record("r2", 1, "dog"),
            _record("r3", 2, "dog", "v2"),
        ):
            assert store.record(record)
        assert store.add_feedback("r1", "dog").stored
        assert store.add_feedback("r3", "dog").stored
    finally:
        store.close()


def _at(minute: int) -> datetime:
    return datetime.fromtimestamp(T0 + 60 * minute, UTC)


def test_reads_the_predictions_in_a_range_with_their_true_labels(config: StoreConfig) -> None:
    _fill(config)
    everything = read_predictions(config)
    assert [(p.record.request_id, p.true_label) for p in everything] == [
        ("r1", "dog"), ("r2", None), ("r3", "dog"),
    ]  # fmt: skip
    assert everything[0].record == _record("r1", 0, "cat")  # every field comes back
    # since is inclusive, until exclusive
    middle = read_predictions(config, TimeRange(since=_at(1), until=_at(2)))
    assert [p.record.request_id for p in middle] == ["r2"]
    v2 = read_predictions(config, TimeRange(model_version="v2"))
    assert [(p.record.request_id, p.true_label) for p in v2] == [("r3", "dog")]


def test_reading_a_store_never_written_creates_nothing(config: StoreConfig) -> None:
    assert read_predictions(config) == []
    if config.dialect == "sqlite":
        assert list(config.path.parent.iterdir()) == []  # no file, no folder, no journal
        config.path.touch()  # an empty file: a database with no tables
        assert read_predictions(config) == []
        assert config.path.stat().st_size == 0  # no schema was written into it
        return
    with psycopg.connect(config.database_url) as conn:
        tables = conn.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
        ).fetchone()
    assert tables == (0,)


def test_reading_leaves_the_sqlite_store_unchanged(tmp_path: Path) -> None:
    config = StoreConfig(path=tmp_path / "store.sqlite3", flush_ms=10)
    _fill(config)
    before = hashlib.sha256(config.path.read_bytes()).hexdigest()
    config.path.chmod(0o444)  # a read-only file still reads (for a non-root user too)
    assert len(read_predictions(config)) == 3
    assert hashlib.sha256(config.path.read_bytes()).hexdigest() == before


def test_the_postgres_reader_cannot_write(postgres: PostgresServer) -> None:
    """The reader's session is read-only: a write through it fails instead of landing."""
    from serving.store.reader import _postgres

    config = StoreConfig(database_url=new_database(postgres), flush_ms=10)

    _fill(config)
    with _postgres(config) as conn, pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        conn.execute("DELETE FROM feedback")
    assert len(read_predictions(config)) == 3


def test_an_unreachable_store_is_a_store_error(postgres: PostgresServer) -> None:
    url = new_database(postgres).rsplit("@", 1)[0] + "@127.0.0.1:1/none"
    with pytest.raises(StoreError) as refused:
        read_predictions(StoreConfig(database_url=url, timeout_s=1.0))
    assert refused.value.reason == "unavailable"
    assert "store-pass" not in str(refused.value)  # the password stays out of messages
