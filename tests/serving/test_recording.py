"""What the service records of each prediction: the log, feedback, the drift gauges."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from serving import drift
from tests.serving.support import PHOTOS, read_jsonl, upload


def test_prediction_log_records_what_monitoring_needs(fresh_app_client, tmp_path: Path) -> None:
    app_client = fresh_app_client()
    answer = upload(app_client, PHOTOS[0].read_bytes()).json()
    entries = [
        e for e in read_jsonl(tmp_path / "predictions.jsonl")
        if e["request_id"] == answer["request_id"]
    ]  # fmt: skip
    assert len(entries) == 1
    entry = entries[0]
    assert entry["label"] == answer["label"]
    assert entry["probabilities"] == answer["probabilities"]
    assert entry["confidence"] == answer["confidence"]
    assert entry["model_version"] == answer["model_version"]
    assert entry["latency_ms"] > 0 and entry["time"].endswith("+00:00")
    width, height = Image.open(PHOTOS[0]).size
    image = entry["image"]
    assert (image["width"], image["height"]) == (width, height)
    assert 0.0 < image["brightness"] < 1.0

    assert image["sha256"] == hashlib.sha256(PHOTOS[0].read_bytes()).hexdigest()


def test_prediction_log_rotates_by_size(fresh_app_client, tmp_path: Path) -> None:
    app_client = fresh_app_client(log_max_bytes=1500, log_backups=2)
    for path in PHOTOS[:12]:
        assert upload(app_client, path.read_bytes()).status_code == 200
    log = tmp_path / "predictions.jsonl"
    rotated = [log.with_name(f"{log.name}.{i}") for i in (1, 2)]
    assert all(p.exists() for p in rotated)
    assert not log.with_name(f"{log.name}.3").exists()
    assert all(p.stat().st_size <= 1500 for p in [log, *rotated])


def test_feedback_edge_cases(fresh_app_client, tmp_path: Path) -> None:
    app_client = fresh_app_client(recent_ids=2)
    answers = [upload(app_client, p.read_bytes()).json() for p in PHOTOS[:4]]
    first = answers[0]  # pushed out of the in-memory map: found in the prediction log
    post = app_client.post
    ok = post("/feedback", json={"request_id": first["request_id"], "label": first["label"]})
    assert ok.status_code == 200, ok.text
    assert ok.json()["stored"] is True and ok.json()["correct"] is True
    again = post("/feedback", json={"request_id": first["request_id"], "label": first["label"]})
    assert again.status_code == 200 and again.json()["stored"] is False
    other = "cat" if answers[-1]["label"] == "dog" else "dog"
    wrong = post("/feedback", json={"request_id": answers[-1]["request_id"], "label": other})
    assert wrong.json()["correct"] is False
    unknown = post("/feedback", json={"request_id": "never-seen", "label": "cat"})
    assert (unknown.status_code, unknown.json()["reason"]) == (404, "unknown_request_id")
    bad_label = post("/feedback", json={"request_id": first["request_id"], "label": "horse"})
    assert (bad_label.status_code, bad_label.json()["reason"]) == (422, "unknown_label")
    missing = post("/feedback", json={"label": "cat"})
    assert (missing.status_code, missing.json()["reason"]) == (422, "missing_field")
    stored = read_jsonl(tmp_path / "feedback.jsonl")
    assert [(e["request_id"], e["label"]) for e in stored] == [
        (first["request_id"], first["label"]),
        (answers[-1]["request_id"], other),
    ]
    assert all(e["time"].endswith("+00:00") for e in stored)
    metrics = app_client.get("/metrics").text
    assert "model_live_accuracy 0.5" in metrics
    assert f'feedback_total{{label="{first["label"]}"}}' in metrics


def test_drift_gauges_are_fed_by_the_drift_report(
    fresh_app_client, monkeypatch: pytest.MonkeyPatch
) -> None:
    app_client = fresh_app_client()
    answers = [upload(app_client, p.read_bytes()).json() for p in PHOTOS[:5]]
    seen: dict = {}

    def drift_report(reference, labels, confidences, brightness, classes):
        seen.update(reference=reference, labels=labels, confidences=confidences, classes=classes)
        shares = labels.count(classes[0]) / len(labels)
        return {
            "class_share": shares,
            "confidence": float(np.mean(confidences)),
            "brightness": 0.25,
        }

    monkeypatch.setattr(drift, "drift_report", drift_report)
    text = app_client.get("/metrics").text
    assert seen["labels"][-5:] == [a["label"] for a in answers]
    assert seen["confidences"][-5:] == pytest.approx([a["confidence"] for a in answers], abs=1e-6)
    assert "confidence_histogram" in seen["reference"]
    expected_share = seen["labels"].count(seen["classes"][0]) / len(seen["labels"])
    assert f'model_drift_psi{{feature="class_share"}} {expected_share}' in text
    assert 'model_drift_psi{feature="brightness"} 0.25' in text

    def fewer_features(reference, labels, confidences, brightness, classes):
        return {"confidence": 0.5}

    monkeypatch.setattr(drift, "drift_report", fewer_features)
    text = app_client.get("/metrics").text
    assert 'model_drift_psi{feature="confidence"} 0.5' in text
    assert 'feature="brightness"' not in text  # a feature left out is not a stale gauge
