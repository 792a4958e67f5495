"""The whole loop: a real server, real photos, feedback, report and shifted traffic."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from contracts import drift
from serving.store import StoreConfig, read_predictions
from tests.helpers.photos import FULLRES_DIR, SAMPLE_DIR
from tests.helpers.servers import start_service

ROOT = Path(__file__).resolve().parents[2]
FULLRES = FULLRES_DIR
CATS_DOGS = SAMPLE_DIR


# ---------------------------------------------------------------- end to end

API_KEY = "monitoring-test-key"


@pytest.fixture(scope="module")
def live_service(bundle_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """A real server (tests.helpers: free port, stopped by PID) with its own store and an
    API key.

    RECENT_WINDOW=40 makes the drift gauge describe the last 40 predictions only, so a
    shifted run of 40 requests shows on /metrics by itself; DRIFT_MIN_SAMPLES=30 lets the
    service and the report (run with the same environment) compute PSI on such windows.
    """
    work = tmp_path_factory.mktemp("monitoring")
    env = {
        "MODEL_DIR": str(bundle_dir),
        "STORE_PATH": str(work / "store" / "store.sqlite3"),
        "DATABASE_URL": "",
        "STORE_WINDOW_TTL_S": "0.01",
        "API_KEY": API_KEY,
        "RECENT_WINDOW": "40",
        "DRIFT_MIN_SAMPLES": "30",
    }
    server = start_service(bundle_dir, work, **env)
    try:
        yield {"url": server.url, "work": work, "env": {**os.environ, **env}}
    finally:
        assert server.stop() == 0


def _stored_feedback(service: dict) -> dict[str, str]:
    """Request id -> true label, read from the service's store as the report reads it."""
    config = StoreConfig(path=Path(service["env"]["STORE_PATH"]))
    return {
        p.record.request_id: p.true_label
        for p in read_predictions(config)
        if p.true_label is not None
    }


@pytest.mark.slow
def test_feedback_endpoint_edge_cases(live_service: dict) -> None:
    headers = {"X-API-Key": API_KEY}
    with httpx.Client(base_url=live_service["url"], timeout=30) as client:
        photo = (FULLRES / "dog.5.jpg").read_bytes()
        answer = client.post("/predict", files={"file": ("d.jpg", photo)}, headers=headers)
        assert answer.status_code == 200, answer.text
        rid, token = answer.json()["request_id"], answer.json()["feedback_token"]

        # API key required for feedback as for predictions.
        assert (
            client.post(
                "/feedback", json={"request_id": rid, "feedback_token": token, "label": "dog"}
            ).status_code
            == 401
        )
        unknown_id = client.post(
            "/feedback",
            json={"request_id": "no-such-request", "feedback_token": token, "label": "dog"},
            headers=headers,
        )
        assert unknown_id.status_code == 404
        unknown_label = client.post(
            "/feedback",
            json={"request_id": rid, "feedback_token": token, "label": "fox"},
            headers=headers,
        )
        assert unknown_label.status_code == 422

        before = len(_stored_feedback(live_service))
        for stored in (True, False):  # the same label twice: stored once
            answer = client.post(
                "/feedback",
                json={"request_id": rid, "feedback_token": token, "label": "dog"},
                headers=headers,
            )
            assert answer.status_code == 200 and answer.json()["stored"] is stored, answer.text
        other = client.post(
            "/feedback",
            json={"request_id": rid, "feedback_token": token, "label": "cat"},
            headers=headers,
        )
        assert other.status_code == 409  # one true label per prediction
        truths = _stored_feedback(live_service)
        assert truths[rid] == "dog" and len(truths) == before + 1


def _simulate(service: dict, *args: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-m", "monitoring", "simulate",
         "--url", service["url"], "--api-key", API_KEY, "--rate", "0", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr + done.stdout
    return json.loads(done.stdout)


def _report(service: dict, since: str, until: str, name: str) -> dict:
    out = service["work"] / "reports"
    done = subprocess.run(
        [sys.executable, "-m", "monitoring", "report",
         "--since", since, "--until", until,
         "--out", str(out / f"{name}.json"),
         "--history", str(out / "history.jsonl"),
         "--plot", str(out / "history.png")],
        cwd=ROOT, env=service["env"], capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    print(done.stdout)
    return json.loads((out / f"{name}.json").read_text())


def _now() -> str:
    return datetime.now(UTC).isoformat()


@pytest.mark.slow
def test_simulated_traffic_then_report_shows_accuracy_and_drift(live_service: dict) -> None:
    # Normal traffic: each of the 50 full-size photos once, all labelled.
    t0 = _now()
    normal = _simulate(live_service, "--data", str(FULLRES))
    t1 = _now()
    assert normal["answered"] == 50 and normal["feedback_sent"] == 50, normal
    report = _report(live_service, t0, t1, "normal")
    assert report["counts"] == {
        "predictions": 50, "labelled": 50, "unlabelled": 0, "labelled_share": 1.0,
        "feedback_with_unknown_label": 0,
    }  # fmt: skip
    perf = report["performance"]
    # The report's accuracy is exactly what the client saw, and the bundle is a real model.
    assert perf["accuracy"] == pytest.approx(normal["accuracy_seen"])
    assert perf["accuracy"] >= 0.7
    assert perf["support"] == {"cat": 25, "dog": 25}
    assert sum(map(sum, perf["confusion_matrix"]["matrix"])) == 50
    assert report["latency_ms"]["p50"] > 0
    normal_psi = report["drift"]["psi"]
    assert set(normal_psi) == {"class_share", "confidence", "brightness"}
    assert normal_psi["class_share"] < drift.PSI_WARN  # 25 cats and 25 dogs, mostly right

    # Shifted traffic: only cats, darkened to 30 %, from the class-folder photo set.
    # Half of them get a true label.
    shifted = _simulate(
        live_service, "--data", str(CATS_DOGS), "--only-class", "cat", "--darken", "0.3",
        "--count", "40", "--feedback-share", "0.5",
    )  # fmt: skip
    t2 = _now()
    assert shifted["answered"] == 40, shifted
    assert 5 < shifted["feedback_sent"] < 35 and shifted["feedback_errors"] == 0, shifted
    report = _report(live_service, t1, t2, "shifted")
    assert report["sources"]["store"] == f"sqlite:{live_service['env']['STORE_PATH']}"
    assert report["counts"]["labelled"] == shifted["feedback_sent"]
    assert report["counts"]["unlabelled"] == 40 - shifted["feedback_sent"]
    assert report["performance"]["support"]["dog"] == 0
    psi = report["drift"]["psi"]
    assert psi["class_share"] > drift.PSI_ALERT
    assert psi["brightness"] > drift.PSI_ALERT
    assert psi["brightness"] > normal_psi["brightness"]
    assert psi["brightness"] > report["drift"]["noise_p95"]["brightness"]  # real, not noise
    assert {a["feature"] for a in report["alerts"] if "feature" in a} >= {
        "class_share", "brightness"
    }  # fmt: skip
    assert report["status"] == "alert"
    history = (live_service["work"] / "reports" / "history.jsonl").read_text().splitlines()
    assert len(history) == 2

    # The service publishes the same figures: its drift window is the last 40 predictions.
    metrics = httpx.get(f"{live_service['url']}/metrics", headers={"X-API-Key": API_KEY}).text
    gauges = {
        m.group(1): float(m.group(2))
        for m in re.finditer(r'^model_drift_psi\{feature="(\w+)"\} (\S+)$', metrics, re.M)
    }
    assert gauges["class_share"] > drift.PSI_ALERT
    assert gauges["brightness"] > drift.PSI_ALERT
    # Same code, same 40 predictions: the gauge and the report agree (the store keeps the
    # rounded confidence and brightness the answer and the image description give).
    for feature, value in psi.items():
        assert gauges[feature] == pytest.approx(value, rel=0.05, abs=0.01), feature
