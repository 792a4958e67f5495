"""Shadow scoring and the registry record: what the pod says it serves, and a challenger
scored beside it without touching the served answers."""

from __future__ import annotations

import json
import logging
import re
import shutil
import sqlite3
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from contracts.registry import RegistryRecord
from tests.helpers.servers import running
from tests.helpers.service import PHOTOS, start_server, upload
from tests.helpers.tiny_bundle import build_tiny_bundle


def metric(text: str, name: str, labels: str = "") -> float:
    """One sample's value from Prometheus text (`name{labels} value`)."""
    pattern = rf"^{re.escape(name)}{re.escape('{' + labels + '}') if labels else ''} (\S+)$"
    match = re.search(pattern, text, re.MULTILINE)
    assert match, f"{name}{{{labels}}} not in /metrics"
    return float(match.group(1))


def copy_bundle(bundle_dir: Path, to: Path) -> Path:
    shutil.copytree(bundle_dir, to)
    return to


def record_for(bundle_dir: Path, **changes: str) -> RegistryRecord:
    version = json.loads((bundle_dir / "model.json").read_text())["version"]
    values = {
        "version": "7", "bundle_version": version, "data_version": "d41d8cd98f00",
        "git_revision": "abc1234", "promoted_at": "2025-01-02T03:04:05+00:00",
        "promoted_by": "gate@ci", "reason": "McNemar p=0.01, +1.2 points",
    }  # fmt: skip
    return RegistryRecord(**{**values, **changes})


# -- the registry record ---------------------------------------------------------------


def test_a_bundle_never_promoted_says_so(client: TestClient) -> None:
    info = client.get("/model-info").json()
    assert info["promoted"] is False and info["registry"] is None
    assert info["registry_error"] is None and info["shadow"] is None
    assert 'promoted="false"' in client.get("/metrics").text


def test_model_info_and_the_info_metric_carry_the_registry_record(
    bundle_dir: Path, tmp_path: Path, fresh_app_client
) -> None:
    promoted = copy_bundle(bundle_dir, tmp_path / "promoted")
    record = record_for(promoted)
    record.write(promoted)
    client = fresh_app_client(model_dir=promoted)
    info = client.get("/model-info").json()
    assert info["promoted"] is True
    assert info["registry"] == record.model_dump()
    text = client.get("/metrics").text
    line = next(x for x in text.splitlines() if x.startswith("model_info{"))
    for label, value in (
        ("registry_version", "7"), ("alias", "champion"), ("promoted", "true"),
        ("registry_name", "cats-dogs-classifier"), ("version", record.bundle_version),
    ):  # fmt: skip
        assert f'{label}="{value}"' in line, (label, line)


@pytest.mark.parametrize("names_this_bundle", [True, False])
def test_a_checkouts_record_one_folder_up_counts_only_for_its_bundle(
    names_this_bundle: bool, bundle_dir: Path, tmp_path: Path, fresh_app_client
) -> None:
    """`python -m serving` over models/export reads models/registry.json (where the gate
    writes it) when it names this bundle; another model's record there is not an error."""
    served = copy_bundle(bundle_dir, tmp_path / "export")
    record = (
        record_for(served) if names_this_bundle else record_for(served, bundle_version="b" * 12)
    )
    record.write(tmp_path)
    info = fresh_app_client(model_dir=served).get("/model-info").json()
    assert info["promoted"] is names_this_bundle and info["registry_error"] is None
    assert info["registry"] == (record.model_dump() if names_this_bundle else None)


@pytest.mark.parametrize("fault", ["another bundle", "not json"])
def test_a_registry_record_that_does_not_fit_is_not_trusted(
    fault: str, bundle_dir: Path, tmp_path: Path, fresh_app_client
) -> None:
    promoted = copy_bundle(bundle_dir, tmp_path / "promoted")
    if fault == "another bundle":
        record_for(promoted, bundle_version="0123456789ab").write(promoted)
    else:
        (promoted / "registry.json").write_text("{not json")
    client = fresh_app_client(model_dir=promoted)
    info = client.get("/model-info").json()
    assert info["promoted"] is False and info["registry"] is None
    assert "registry" in info["registry_error"]
    assert client.post("/predict", content=PHOTOS[0].read_bytes(),
                       headers={"content-type": "image/jpeg"}).status_code == 200  # fmt: skip


# -- a challenger that does not fit ----------------------------------------------------


@pytest.mark.parametrize(
    ("change", "said"),
    [({"classes": ["dog", "cat"]}, "classes"), ({"size": 96}, "input size")],
)
def test_an_incompatible_challenger_keeps_the_service_not_ready_and_logs_why(
    change: dict, said: str, bundle_dir: Path, tmp_path: Path, fresh_app_client, caplog
) -> None:
    challenger = copy_bundle(bundle_dir, tmp_path / "challenger")
    manifest = json.loads((challenger / "model.json").read_text())
    if "size" in change:
        manifest["input"]["size"] = change["size"]
        manifest["input"]["shape"] = ["N", 3, change["size"], change["size"]]
    else:
        manifest.update(change)
    (challenger / "model.json").write_text(json.dumps(manifest))
    service_log = logging.getLogger("serving")  # JSON to stdout, not propagated
    service_log.addHandler(caplog.handler)
    try:
        client = fresh_app_client(challenger_model_dir=challenger)
        ready = client.get("/health/ready")
    finally:
        service_log.removeHandler(caplog.handler)
    assert ready.status_code == 503
    # /health is unauthenticated: it says only that the bundle did not load; the log says why.
    assert "could not be loaded" in ready.text and said not in ready.text
    logged = " ".join(r.getMessage() + str(r.exc_info) for r in caplog.records)
    assert said in logged and "hallenger" in logged
    assert upload(client, PHOTOS[0].read_bytes()).status_code == 503


# -- shadow scoring on a real server ---------------------------------------------------


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.read().decode()


def post_photo(url: str, photo: Path) -> tuple[int, dict]:
    request = urllib.request.Request(
        url + "/predict", data=photo.read_bytes(), headers={"Content-Type": "image/jpeg"}
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return response.status, json.loads(response.read())


def post_batch(url: str, photos: list[Path]) -> int:
    """POST /predict/batch with `photos` as multipart files; the status."""
    boundary = "shadowtestboundary"
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="{p.name}"\r\n'
        f"Content-Type: image/jpeg\r\n\r\n".encode()
        + p.read_bytes()
        + b"\r\n"
        for p in photos
    ]
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    request = urllib.request.Request(
        url + "/predict/batch", data=body,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=60) as response:
        return response.status


def shadow_rows(store: Path) -> list[tuple]:
    """(request_id, served label, challenger label, challenger version) per shadow row."""
    with sqlite3.connect(store) as conn:
        return conn.execute(
            "SELECT s.request_id, p.label, s.label, s.model_version FROM shadow_predictions s "
            "JOIN predictions p ON p.request_id = s.request_id ORDER BY s.request_id"
        ).fetchall()


def rows_of(store: Path, ids: set[str]) -> list[tuple] | None:
    """The shadow rows of these requests, once every one of them is there."""
    rows = [r for r in shadow_rows(store) if r[0] in ids]
    return rows if len(rows) == len(ids) else None


def wait_for(check, timeout: float = 30.0):
    """Poll `check()` until it returns something truthy (the shadow works in the background)."""
    import time

    deadline = time.monotonic() + timeout
    while not (result := check()) and time.monotonic() < deadline:
        time.sleep(0.1)
    return result


@pytest.fixture(scope="module")
def shadow_server(bundle_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """A real service whose challenger is a copy of its own bundle: they must agree."""
    work = tmp_path_factory.mktemp("shadow")
    challenger = copy_bundle(bundle_dir, work / "challenger")
    store = work / "store.sqlite3"
    server = start_server(
        bundle_dir, work, CHALLENGER_MODEL_DIR=str(challenger), SHADOW_SHARE="1",
        STORE_PATH=str(store), STORE_FLUSH_MS="20",
    )  # fmt: skip
    with running(server):
        yield server, store


def test_the_challenger_scores_served_photos_without_changing_the_answers(
    shadow_server, client: TestClient
) -> None:
    server, store = shadow_server
    photos = PHOTOS[:6]
    answers = [post_photo(server.url, p) for p in photos]
    assert all(status == 200 for status, _ in answers)
    for photo, (_, answer) in zip(photos, answers, strict=True):
        alone = upload(client, photo.read_bytes()).json()  # the same bundle, no shadow
        assert (answer["label"], answer["probabilities"]) == (
            alone["label"],
            alone["probabilities"],
        )
    ids = {a["request_id"] for _, a in answers}
    rows = wait_for(lambda: rows_of(store, ids))
    assert rows, f"shadow rows missing: {shadow_rows(store)}\n{server.output()}"
    assert all(served == shadowed for _, served, shadowed, _ in rows)
    info = json.loads(get(server.url + "/model-info"))
    assert info["shadow"]["version"] == info["version"] and info["shadow"]["share"] == 1.0
    text = get(server.url + "/metrics")
    assert metric(text, "shadow_agreement") == 1.0
    assert metric(text, "shadow_predictions_total", 'outcome="agree"') >= len(ids)
    marks = ",".join("?" * len(ids))
    with sqlite3.connect(store) as conn:  # the challenger stays out of the drift window
        sql = f"SELECT count(*) FROM predictions WHERE request_id IN ({marks})"
        (n,) = conn.execute(sql, sorted(ids)).fetchone()
    assert n == len(ids)


def test_the_shadow_queue_stays_bounded_and_counts_what_it_drops(
    bundle_dir: Path, tmp_path: Path
) -> None:
    challenger = copy_bundle(bundle_dir, tmp_path / "challenger")
    server = start_server(
        bundle_dir, tmp_path, CHALLENGER_MODEL_DIR=str(challenger), SHADOW_QUEUE_MAX="1",
        MAX_BATCH_FILES="16", QUEUE_MAX="1024", DECODE_QUEUE_MAX="1024",
        MAX_BODY_MEMORY_BYTES=str(2**30),  # the service's own limits are not under test here
    )  # fmt: skip
    depths: list[float] = []
    with running(server), ThreadPoolExecutor(16) as pool:
        batches = [pool.submit(post_batch, server.url, PHOTOS[:16]) for _ in range(16)]
        singles = [pool.submit(post_photo, server.url, p) for p in PHOTOS[:32]]
        while not all(f.done() for f in batches + singles):
            depths.append(metric(get(server.url + "/metrics"), "shadow_queue"))
        statuses = [f.result() for f in batches] + [f.result()[0] for f in singles]
        served = 16 * 16 + 32

        def settled() -> str | None:
            text = get(server.url + "/metrics")
            scored = sum(metric(text, "shadow_predictions_total", f'outcome="{o}"')
                         for o in ("agree", "disagree") if f'outcome="{o}"' in text)  # fmt: skip
            dropped = metric(text, "shadow_dropped_total", 'reason="queue_full"')
            return text if scored + dropped == served else None

        text = wait_for(settled)
    assert statuses == [200] * len(statuses)
    assert text, f"scored + dropped never reached {served}:\n{server.output()}"
    assert metric(text, "shadow_dropped_total", 'reason="queue_full"') > 0
    assert max(depths, default=0.0) <= 1.0
    assert 'status="5' not in text


@pytest.mark.slow
def test_agreement_with_a_differently_trained_challenger_matches_the_store(
    bundle_dir: Path, tmp_path: Path
) -> None:
    challenger = build_tiny_bundle(tmp_path / "challenger", seed=1)
    store = tmp_path / "store.sqlite3"
    server = start_server(bundle_dir, tmp_path, CHALLENGER_MODEL_DIR=str(challenger),
                          STORE_PATH=str(store), STORE_FLUSH_MS="20")  # fmt: skip
    with running(server):
        ids = {post_photo(server.url, p)[1]["request_id"] for p in PHOTOS}
        rows = wait_for(lambda: rows_of(store, ids))
        text = get(server.url + "/metrics")
    assert rows and {r[0] for r in rows} == ids
    version = json.loads((challenger / "model.json").read_text())["version"]
    assert {r[3] for r in rows} == {version}
    agree = sum(served == shadowed for _, served, shadowed, _ in rows)
    assert metric(text, "shadow_agreement") == pytest.approx(agree / len(rows))
    assert metric(text, "shadow_predictions_total", 'outcome="agree"') == agree
