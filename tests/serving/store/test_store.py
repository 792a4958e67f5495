"""The prediction and feedback store against real SQLite files and a real PostgreSQL server.

Every behaviour is checked on both databases: the schema, one true label per prediction,
feedback for a prediction not yet flushed, two replicas sharing one store, the bounds
(queue full, store down, store full) and that nothing acknowledged is lost.
"""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from pathlib import Path

import pytest

from serving.store import (
    LabelConflict,
    PredictionRecord,
    ShadowRecord,
    Store,
    StoreConfig,
    StoreError,
    UnknownPrediction,
    read_shadow,
)
from serving.store.retention import prune
from serving.store.schema import MIGRATIONS
from tests.helpers.postgres import PostgresServer, new_database

_ids = itertools.count()


@pytest.fixture(params=["sqlite", "postgresql"])
def config(request: pytest.FixtureRequest, tmp_path: Path) -> StoreConfig:
    """Small limits so bounds show quickly; one fresh store per test on each database."""
    url = ""
    if request.param == "postgresql":
        url = new_database(request.getfixturevalue("postgres"))
    return StoreConfig(
        database_url=url,
        path=tmp_path / "store.sqlite3",
        batch_size=8,
        flush_ms=50,
        queue_max=100,
        retry_s=1.0,
        timeout_s=2.0,
        feedback_wait_s=5.0,
        window=50,
        window_ttl_s=0.01,
    )


def _prediction(label: str = "cat", **fields: object) -> PredictionRecord:
    values = {
        "request_id": f"req-{next(_ids)}-{uuid.uuid4().hex[:6]}",
        "ts": time.time(),
        "label": label,
        "confidence": 0.8,
        "probabilities": {"cat": 0.8, "dog": 0.2} if label == "cat" else {"cat": 0.2, "dog": 0.8},
        "model_version": "v-test",
        "latency_ms": 12.5,
        "brightness": 0.4,
        **fields,
    }
    return PredictionRecord(**values)  # type: ignore[arg-type]


def _open(config: StoreConfig, **changes: object) -> Store:
    store = Store(StoreConfig(**{**config.__dict__, **changes}))
    store.open()
    return store


def _lost(store: Store, reason: str) -> float:
    return store.metrics.lost.labels(reason=reason)._value.get()


def _wait_until(condition, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def test_schema_is_created_once_and_reopening_keeps_the_data(config: StoreConfig) -> None:
    store = _open(config)
    record = _prediction(ood_score=12.5, ood_flag=True)
    assert store.record(record)
    store.close()  # writes what is queued
    again = _open(config)
    try:
        # idempotent: nothing to apply, the version stays the last migration's
        assert again.db.migrate() == len(MIGRATIONS)
        stored = again.prediction(record.request_id)
        assert stored is not None
        assert stored.label == "cat" and stored.probabilities == record.probabilities
        assert stored.replica  # which replica answered is kept
        assert (stored.ood_score, stored.ood_flag) == (12.5, True)
    finally:
        again.close()


def test_one_true_label_per_prediction(config: StoreConfig) -> None:
    store = _open(config)
    try:
        record = _prediction("dog")
        store.record(record)
        first = store.add_feedback(record.request_id, "cat")
        assert first.stored and not first.correct and first.predicted_label == "dog"
        repeat = store.add_feedback(record.request_id, "cat")
        assert not repeat.stored and repeat.label == "cat"  # idempotent
        with pytest.raises(LabelConflict) as conflict:
            store.add_feedback(record.request_id, "dog")
        assert conflict.value.existing == "cat"
        with pytest.raises(UnknownPrediction):
            store.add_feedback("never-predicted", "cat")
        window = store.window()
        assert (window.labelled, window.correct) == (1, 0)  # counted once, as first stored
    finally:
        store.close()


def test_feedback_for_a_prediction_not_yet_flushed_waits_for_it(config: StoreConfig) -> None:
    # A flush interval of a minute: only the feedback's own flush request writes it.
    store = _open(config, flush_ms=60_000, batch_size=1000)
    try:
        record = _prediction()
        store.record(record)
        assert store.writer.pending(record.request_id) is not None
        started = time.monotonic()
        outcome = store.add_feedback(record.request_id, "cat")
        assert outcome.stored and outcome.correct
        assert time.monotonic() - started < 5
    finally:
        store.close()


def test_two_replicas_share_predictions_feedback_and_the_window(config: StoreConfig) -> None:
    one, two = _open(config), _open(config)
    try:
        cats = [_prediction("cat") for _ in range(6)]
        dogs = [_prediction("dog") for _ in range(4)]
        for r in cats:
            one.record(r)
        for r in dogs:
            two.record(r)
        _wait_until(lambda: one.writer.queued == 0 and two.writer.queued == 0)
        # Feedback reaches the other replica than the prediction did.
        assert two.add_feedback(cats[0].request_id, "cat").stored
        assert one.add_feedback(dogs[0].request_id, "cat").stored
        with pytest.raises(LabelConflict):
            one.add_feedback(cats[0].request_id, "dog")
        for store in (one, two):
            window = store.window()
            assert sorted(window.labels) == ["cat"] * 6 + ["dog"] * 4
            assert (window.labelled, window.correct) == (2, 1)
    finally:
        one.close()
        two.close()


def test_ood_score_and_flag_are_stored_and_the_window_carries_the_flags(
    config: StoreConfig,
) -> None:
    store = _open(config)
    try:
        flagged = _prediction("cat", ood_score=12.5, ood_flag=True)
        passed = _prediction("dog", ood_score=1.25, ood_flag=False)
        unscored = _prediction("cat")  # a bundle without an OOD reference
        for r in (flagged, passed, unscored):
            store.record(r)
        _wait_until(lambda: store.writer.queued == 0)
        back = store.prediction(flagged.request_id)
        assert back is not None and (back.ood_score, back.ood_flag) == (12.5, True)
        back = store.prediction(unscored.request_id)
        assert back is not None and (back.ood_score, back.ood_flag) == (None, None)
        assert sorted(store.window().ood_flags, key=str) == [False, None, True]
    finally:
        store.close()


def test_feedback_finds_a_prediction_another_replica_has_not_flushed_yet(
    config: StoreConfig,
) -> None:
    """Feedback asked of replica two for a prediction still in replica one's queue: two
    misses it, looks again, and finds it once one has written its queue."""
    # One never flushes on its own during the test: only the step below writes its queue.
    one, two = _open(config, flush_ms=60_000, batch_size=1000), _open(config)
    misses: list[str] = []
    look_up = two._store_label

    def one_writes_after_the_first_miss(request_id: str, label: str):
        try:
            return look_up(request_id, label)
        except UnknownPrediction:
            misses.append(request_id)
            if len(misses) == 1:
                assert one.writer.wait_written(request_id, 5.0)  # one flushes its queue now
            raise

    two._store_label = one_writes_after_the_first_miss  # type: ignore[method-assign]
    try:
        record = _prediction("dog")
        one.record(record)  # answered by one, still in its queue
        assert one.writer.pending(record.request_id) is not None
        outcome = two.add_feedback(record.request_id, "dog")  # asked of the other
        assert misses == [record.request_id]  # asked while unwritten, found on a second look
        assert outcome.stored and outcome.predicted_label == "dog"
    finally:
        one.close()
        two.close()


def test_concurrent_different_labels_store_exactly_one(config: StoreConfig) -> None:
    one, two = _open(config), _open(config)
    try:
        record = _prediction()
        one.record(record)
        one.writer.wait_written(record.request_id, 5)
        results: list[object] = []

        def send(store: Store, label: str) -> None:
            try:
                results.append(store.add_feedback(record.request_id, label))
            except LabelConflict as exc:
                results.append(exc)

        threads = [
            threading.Thread(target=send, args=(s, lab))
            for s, lab in ((one, "cat"), (two, "dog"), (two, "cat"), (one, "dog"))
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        stored = [r for r in results if not isinstance(r, LabelConflict) and r.stored]
        assert len(stored) == 1
        winner = stored[0].label
        for r in results:
            if isinstance(r, LabelConflict):
                assert r.existing == winner
            else:
                assert r.label == winner
    finally:
        one.close()
        two.close()


def test_a_full_queue_drops_predictions_and_counts_them(config: StoreConfig) -> None:
    store = _open(config, queue_max=5, flush_ms=60_000, batch_size=1000)
    try:
        accepted = [store.record(_prediction()) for _ in range(8)]
        assert accepted == [True] * 5 + [False] * 3
        assert _lost(store, "queue_full") == 3
    finally:
        store.close()
    assert store.metrics.written._value.get() == 5


def test_sqlite_store_full_loses_predictions_counted_and_refuses_feedback(
    tmp_path: Path,
) -> None:
    """A size-capped SQLite store (STORE_MAX_MB) fails as a full disk does (SQLITE_FULL)."""
    # Batches of 2: a failed batch leaves less free space than the feedback rows below need.
    config = StoreConfig(path=tmp_path / "small.sqlite3", max_mb=0.2, batch_size=2,
                         flush_ms=20, retry_s=0.3)  # fmt: skip
    store = _open(config)
    try:
        small = [_prediction() for _ in range(100)]
        for r in small:
            store.record(r)
        _wait_until(lambda: store.writer.queued == 0)
        assert _lost(store, "full") == 0
        for _ in range(300):  # about 600 kB of rows into a 200 kB store
            store.record(_prediction(sha256="x" * 2000))
        _wait_until(lambda: store.writer.queued == 0)
        assert _lost(store, "full") > 0  # answered, not stored, counted
        assert not store.writer.available
        stored, refused = [], None
        for r in small:  # feedback rows fill the last free space, then are refused
            try:
                store.add_feedback(r.request_id, "cat")
            except StoreError as exc:
                assert exc.reason == "full"
                refused = r
                break
            stored.append(r)
        assert refused is not None, "a full store took every feedback"
    finally:
        store.close()
    # Uncapped again: every acknowledged feedback is there, the refused one left no trace.
    again = _open(config, max_mb=0)
    try:
        assert all(again.add_feedback(r.request_id, "cat").stored is False for r in stored)
        assert again.add_feedback(refused.request_id, "dog").stored is True
    finally:
        again.close()


def test_postgres_down_then_back_loses_only_what_it_counted(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    url = new_database(postgres)
    store = _open(
        StoreConfig(database_url=url, batch_size=8, flush_ms=20, retry_s=0.5, timeout_s=2)
    )
    try:
        before = [_prediction() for _ in range(10)]
        for r in before:
            store.record(r)
        _wait_until(lambda: store.writer.queued == 0)
        acknowledged = store.add_feedback(before[0].request_id, "cat")
        assert acknowledged.stored

        postgres.stop()
        during = [_prediction() for _ in range(10)]
        for r in during:
            assert store.record(r)  # the request path never blocks or fails
        _wait_until(lambda: store.writer.queued == 0)
        assert _lost(store, "unavailable") == 10
        assert not store.writer.available
        with pytest.raises(StoreError) as refused:
            store.add_feedback(before[1].request_id, "cat")
        assert refused.value.reason == "unavailable"

        postgres.start()
        after = _prediction()
        store.record(after)
        assert store.add_feedback(after.request_id, "cat").stored  # reconnected by itself
        assert store.writer.available
        # Acknowledged before the outage: intact. Refused during it: nothing stored half.
        assert store.add_feedback(before[0].request_id, "cat").stored is False
        assert store.add_feedback(before[1].request_id, "cat").stored is True
        assert all(store.prediction(r.request_id) for r in before)
        assert not any(store.prediction(r.request_id) for r in during)
    finally:
        if postgres.process is None or postgres.process.poll() is not None:
            postgres.start()  # the module's other tests need it running
        store.close()


def test_a_store_down_at_start_is_used_once_it_comes_up(postgres: PostgresServer) -> None:
    url = new_database(postgres)
    postgres.stop()
    try:
        store = _open(StoreConfig(database_url=url, flush_ms=20, retry_s=0.3, timeout_s=2))
        assert not store.writer.available  # said at start, and the service still starts
        lost = _prediction()
        store.record(lost)
        _wait_until(lambda: store.writer.queued == 0)
        assert _lost(store, "unavailable") == 1
    finally:
        postgres.start()
    try:
        kept = _prediction()
        store.record(kept)  # the schema is created on the first write that reaches it
        assert store.add_feedback(kept.request_id, "cat").stored
        with pytest.raises(UnknownPrediction):
            store.add_feedback(lost.request_id, "cat")
    finally:
        store.close()


def test_challenger_answers_are_stored_beside_the_served_ones_and_read_back(
    config: StoreConfig,
) -> None:
    store = _open(config)
    try:
        served = _prediction("cat")
        store.record(served)
        shadow = ShadowRecord(served.request_id, "c0ffee", "dog", 0.7, {"cat": 0.3, "dog": 0.7},
                              served.ts)  # fmt: skip
        store.record_shadow([shadow])
        store.record_shadow([shadow])  # a repeat is stored once
        store.add_feedback(served.request_id, "dog")
        window = store.window()
    finally:
        store.close()
    (pair,) = read_shadow(config)
    assert (pair.request_id, pair.served_label, pair.challenger_label) == (
        served.request_id, "cat", "dog",
    )  # fmt: skip
    assert (pair.challenger_version, pair.true_label) == ("c0ffee", "dog")
    assert window.labels == ["cat"]  # the challenger's answer stays out of the live window


def test_one_client_fills_at_most_its_share_of_the_window_and_retention_prunes(
    config: StoreConfig,
) -> None:
    """A flood of one key's predictions: the window keeps that key's newest quarter and
    every other prediction; retention then keeps the newest STORE_MAX_ROWS, feedback
    included, on both databases."""
    store = _open(config, window=20, client_share=0.25, max_rows=30, window_ttl_s=0)
    try:
        start = time.time() - 100
        flood = [_prediction("dog", client="mallory", ts=start + i) for i in range(40)]
        honest = [_prediction("cat", client="alice", ts=start + 50 + i) for i in range(4)]
        for record in flood + honest:
            assert store.record(record)
        outcome = store.add_feedback(honest[-1].request_id, "cat")  # waits for the writes
        assert outcome.stored
        window = store.window()
        assert window.labels == ["dog"] * 5 + ["cat"] * 4  # mallory's newest 5 of 20
        assert window.by_client == {"alice": (1, 1)}
        assert prune(store.db, store.config) == 14  # 44 rows, the newest 30 kept
        assert store.prediction(flood[13].request_id) is None
        assert store.prediction(flood[14].request_id) is not None
        assert store.add_feedback(honest[-1].request_id, "cat").stored is False  # kept
    finally:
        store.close()
