"""What the service records of each prediction: the store's row, feedback, the gauges."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from contracts import drift
from serving.store import Store, StoreConfig
from tests.helpers.service import PHOTOS, feedback_for, upload


def _reader(tmp_path: Path) -> Store:
    """A second handle on the app's store, as another replica or the report would open it."""
    store = Store(StoreConfig(path=tmp_path / "store.sqlite3"))
    store.ensure_schema()
    return store


def test_the_store_keeps_what_monitoring_needs(fresh_app_client, tmp_path: Path) -> None:
    app_client = fresh_app_client()
    response = app_client.post(
        "/predict",
        files={"file": ("x.jpg", PHOTOS[0].read_bytes(), "image/jpeg")},
        headers={"X-Request-ID": "client-abc-1"},
    )
    answer = response.json()
    assert answer["request_id"] != "client-abc-1"  # the server makes the id
    # Feedback waits for a prediction still queued, so after it the row is committed.
    assert (
        app_client.post(
            "/feedback",
            json={
                "request_id": answer["request_id"],
                "feedback_token": answer["feedback_token"],
                "label": "cat",
            },
        ).status_code
        == 200
    )
    reader = _reader(tmp_path)
    try:
        row = reader.prediction(answer["request_id"])
    finally:
        reader.close()
    assert row is not None
    assert row.label == answer["label"]
    assert row.probabilities == answer["probabilities"]
    assert row.confidence == answer["confidence"]
    assert row.model_version == answer["model_version"]
    assert row.latency_ms > 0 and row.ts > 0
    assert (row.width, row.height) == Image.open(PHOTOS[0]).size
    assert 0.0 < row.brightness < 1.0
    assert row.sha256 == hashlib.sha256(PHOTOS[0].read_bytes()).hexdigest()
    assert row.correlation_id == "client-abc-1"  # the client's id, kept for correlation


def test_feedback_edge_cases(fresh_app_client, tmp_path: Path) -> None:
    app_client = fresh_app_client()
    answers = [upload(app_client, p.read_bytes()).json() for p in PHOTOS[:4]]
    first = answers[0]
    post = app_client.post
    body = feedback_for(first, first["label"])
    ok = post("/feedback", json=body)
    assert ok.status_code == 200, ok.text
    assert ok.json()["stored"] is True and ok.json()["correct"] is True
    again = post("/feedback", json=body)
    assert again.status_code == 200 and again.json()["stored"] is False
    flipped = "cat" if first["label"] == "dog" else "dog"
    conflict = post(
        "/feedback",
        json={
            "request_id": first["request_id"],
            "feedback_token": first["feedback_token"],
            "label": flipped,
        },
    )
    assert (conflict.status_code, conflict.json()["reason"]) == (409, "label_conflict")
    other = "cat" if answers[-1]["label"] == "dog" else "dog"
    wrong = post(
        "/feedback",
        json={
            "request_id": answers[-1]["request_id"],
            "feedback_token": answers[-1]["feedback_token"],
            "label": other,
        },
    )
    assert wrong.status_code == 200 and wrong.json()["correct"] is False
    unknown = post(
        "/feedback", json={"request_id": "never-seen", "feedback_token": "0" * 64, "label": "cat"}
    )
    assert (unknown.status_code, unknown.json()["reason"]) == (404, "unknown_request_id")
    bad_label = post(
        "/feedback",
        json={
            "request_id": first["request_id"],
            "feedback_token": first["feedback_token"],
            "label": "horse",
        },
    )
    assert (bad_label.status_code, bad_label.json()["reason"]) == (422, "unknown_label")
    missing = post("/feedback", json={"label": "cat"})
    assert (missing.status_code, missing.json()["reason"]) == (422, "missing_field")
    metrics = app_client.get("/metrics").text
    assert "model_live_accuracy 0.5" in metrics  # one right, one wrong; the repeat once
    stored_first_label = 1 + (other == first["label"])  # the right one, and maybe the wrong one
    assert f'feedback_total{{label="{first["label"]}"}} {stored_first_label:.1f}' in metrics
    assert "prediction_store_lost_total" in metrics and "prediction_store_up 1.0" in metrics


def test_drift_gauges_are_fed_by_the_drift_report(
    fresh_app_client, monkeypatch: pytest.MonkeyPatch
) -> None:
    app_client = fresh_app_client()
    answers = [upload(app_client, p.read_bytes()).json() for p in PHOTOS[:5]]
    # The last feedback waits for its prediction, so the store holds all five now.
    app_client.post("/feedback", json=feedback_for(answers[-1], "cat"))
    seen: dict = {}

    def drift_report(reference, labels, confidences, brightness, classes, min_samples):
        seen.update(reference=reference, labels=labels, confidences=confidences, classes=classes)
        seen.update(min_samples=min_samples)
        shares = labels.count(classes[0]) / len(labels)
        return {
            "class_share": shares,
            "confidence": float(np.mean(confidences)),
            "brightness": 0.25,
        }

    monkeypatch.setattr(drift, "drift_report", drift_report)
    text = app_client.get("/metrics").text
    assert seen["labels"][-5:] == [a["label"] for a in answers]
    assert seen["min_samples"] == drift.MIN_SAMPLES  # the DRIFT_MIN_SAMPLES setting's default
    assert seen["confidences"][-5:] == pytest.approx([a["confidence"] for a in answers], abs=1e-6)
    assert "confidence_histogram" in seen["reference"]
    expected_share = seen["labels"].count(seen["classes"][0]) / len(seen["labels"])
    assert f'model_drift_psi{{feature="class_share"}} {expected_share}' in text
    assert 'model_drift_psi{feature="brightness"} 0.25' in text

    def fewer_features(reference, labels, confidences, brightness, classes, min_samples):
        return {"confidence": 0.5}

    monkeypatch.setattr(drift, "drift_report", fewer_features)
    text = app_client.get("/metrics").text
    assert 'model_drift_psi{feature="confidence"} 0.5' in text
    assert 'feature="brightness"' not in text  # a feature left out is not a stale gauge


@pytest.mark.parametrize(("min_samples", "gauged"), [(4, True), (5, False)])
def test_drift_gauges_wait_for_the_drift_min_samples_setting(
    fresh_app_client, min_samples: int, gauged: bool
) -> None:
    """Four predictions in the window: a figure with DRIFT_MIN_SAMPLES=4, none with 5."""
    app_client = fresh_app_client(drift_min_samples=min_samples)
    answers = [upload(app_client, p.read_bytes()).json() for p in PHOTOS[:4]]
    app_client.post("/feedback", json=feedback_for(answers[-1], "cat"))
    text = app_client.get("/metrics").text
    assert ('model_drift_psi{feature="confidence"}' in text) is gauged


def _gauge(text: str, name: str) -> float:
    (value,) = re.findall(rf"^{name} (\S+)$", text, re.M)
    return float(value)


@pytest.mark.parametrize(("min_samples", "gauged"), [(4, True), (5, False)])
def test_estimated_accuracy_gauge_is_the_mean_confidence_of_the_window(
    fresh_app_client, min_samples: int, gauged: bool
) -> None:
    """The estimate is the mean confidence of the four answers (labels play no part), with
    a Poisson-binomial lower bound; NaN below DRIFT_MIN_SAMPLES, like the flagged share."""
    app_client = fresh_app_client(drift_min_samples=min_samples)
    answers = [upload(app_client, p.read_bytes()).json() for p in PHOTOS[:4]]
    # The last feedback waits for its prediction, so the store holds all four now.
    app_client.post("/feedback", json=feedback_for(answers[-1], "dog"))
    text = app_client.get("/metrics").text
    confidences = np.array([a["confidence"] for a in answers])
    estimate, lower = (
        _gauge(text, "model_estimated_accuracy"),
        _gauge(text, "model_estimated_accuracy_lower"),
    )
    if gauged:
        assert estimate == pytest.approx(confidences.mean(), abs=1e-6)
        half = 1.959963984540054 * np.sqrt(np.sum(confidences * (1 - confidences))) / 4
        assert lower == pytest.approx(max(0.0, confidences.mean() - half), abs=1e-6)
    else:
        assert np.isnan(estimate) and np.isnan(lower)
    share = _gauge(text, "model_ood_flagged_share")  # the tiny bundle flags some photos
    if gauged:
        assert share == pytest.approx(np.mean([a["ood_flag"] for a in answers]))
    else:
        assert np.isnan(share)
