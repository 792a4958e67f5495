"""Attack 7: one client floods the service to fill the store and steer the drift window."""

from __future__ import annotations

import sqlite3
import time
from contextlib import closing
from pathlib import Path

import httpx
import pytest

from serving.store import Store, StoreConfig
from tests.helpers.servers import serving
from tests.helpers.service import PHOTOS
from tests.serving.attacks.conftest import ATTACK_ENV, headers

FLOOD_ENV = {
    **ATTACK_ENV,
    "RATE_LIMIT": "5/second",
    "RECENT_WINDOW": "20",
    "WINDOW_CLIENT_SHARE": "0.25",
    "STORE_MAX_ROWS": "40",
    "STORE_PRUNE_INTERVAL_S": "0.3",
}


def _rows(store: Path) -> int:
    with closing(sqlite3.connect(store)) as conn:
        return conn.execute("SELECT count(*) FROM predictions").fetchone()[0]


def _batch(client: httpx.Client, who: str, count: int) -> httpx.Response:
    files = [("files", (f"{i}.jpg", PHOTOS[i].read_bytes())) for i in range(count)]
    return client.post("/predict/batch", files=files, headers=headers(who))


@pytest.mark.slow  # its own server, and waits out two rate-limit windows
def test_one_client_can_neither_flood_nor_fill_the_window(bundle_dir: Path, tmp_path: Path) -> None:
    store = tmp_path / "store.sqlite3"
    env = {**FLOOD_ENV, "STORE_PATH": str(store)}
    with (
        serving(bundle_dir, tmp_path, **env) as server,
        httpx.Client(base_url=server.url, timeout=30) as client,
    ):
        # 30 batches as fast as they go (the review wrote 960 rows in 5 s).
        flood = [_batch(client, "mallory", 8) for _ in range(30)]
        limited = [r for r in flood if r.status_code == 429]
        assert len(limited) >= 15, [r.status_code for r in flood]
        assert {r.status_code for r in flood} == {200, 429}
        assert all(int(r.headers["retry-after"]) >= 1 for r in limited)
        assert limited[0].json()["reason"] == "rate_limited"
        # Another client is not limited by mallory's flood.
        time.sleep(1.1)
        honest = [_batch(client, "alice", 1) for _ in range(5)]
        assert [r.status_code for r in honest] == [200] * 5
        time.sleep(1.1)  # alice is at her 5/second too
        last = honest[-1].json()["results"][0]  # its feedback waits until it is written
        label = {k: last[k] for k in ("request_id", "feedback_token", "label")}
        assert client.post("/feedback", json=label, headers=headers("alice")).status_code == 200
        deadline = time.monotonic() + 20
        while _rows(store) > 40 and time.monotonic() < deadline:
            time.sleep(0.2)
    assert _rows(store) <= 40  # STORE_MAX_ROWS: the newest kept, older ones deleted
    reader = Store(StoreConfig(path=store, window=20, client_share=0.25))
    try:
        window = reader.window()
    finally:
        reader.db.close()
    # mallory's newest 5 (a quarter of 20) and alice's 5: the flood fills half at most.
    assert len(window.labels) == 10, window
