"""The Open Inference Protocol V2 routes against the real bundle."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from contracts import imaging
from tests.helpers.service import PHOTOS, upload


def test_v2_metadata_and_health(client: TestClient, bundle_dir: Path) -> None:
    manifest = json.loads((bundle_dir / "model.json").read_text())
    name = manifest["name"]
    assert client.get("/v2").json()["name"]
    assert client.get("/v2/health/live").status_code == 200
    assert client.get("/v2/health/ready").json() == {"ready": True}
    meta = client.get(f"/v2/models/{name}").json()
    assert meta["name"] == name and manifest["version"] in meta["versions"]
    size = manifest["input"]["size"]
    assert {"name": "image", "datatype": "FP32", "shape": [-1, 3, size, size]} in meta["inputs"]
    assert client.get(f"/v2/models/{name}/ready").status_code == 200
    missing = client.get("/v2/models/no-such-model")
    assert missing.status_code == 404 and "error" in missing.json()


def test_v2_infer_fp32_and_bytes_agree_with_predict(client: TestClient, bundle_dir: Path) -> None:
    manifest = json.loads((bundle_dir / "model.json").read_text())
    name, size = manifest["name"], manifest["input"]["size"]
    photos = PHOTOS[5:7]
    expected = [upload(client, p.read_bytes()).json() for p in photos]
    tensor = imaging.to_batch([imaging.load(p.read_bytes(), size) for p in photos])
    fp32 = client.post(
        f"/v2/models/{name}/infer",
        json={
            "id": "req-1",
            "inputs": [
                {"name": "image", "datatype": "FP32", "shape": list(tensor.shape),
                 "data": tensor.reshape(-1).tolist()}
            ],
        },
    )  # fmt: skip
    as_bytes = client.post(
        f"/v2/models/{name}/infer",
        json={
            "inputs": [
                {"name": "image", "datatype": "BYTES", "shape": [2],
                 "data": [base64.b64encode(p.read_bytes()).decode() for p in photos]}
            ],
        },
    )  # fmt: skip
    assert fp32.status_code == 200, fp32.text
    assert as_bytes.status_code == 200, as_bytes.text
    assert fp32.json()["id"] == "req-1"
    for answer in (fp32.json(), as_bytes.json()):
        outputs = {o["name"]: o for o in answer["outputs"]}
        probs = np.array(outputs["probabilities"]["data"]).reshape(
            outputs["probabilities"]["shape"]
        )
        assert probs.shape == (2, len(manifest["classes"]))
        assert outputs["label"]["data"] == [e["label"] for e in expected]
        for row, e in zip(probs, expected, strict=True):
            # FP32 skips draft decoding, so allow the draft-vs-full difference.
            assert row[0] == pytest.approx(e["probabilities"][manifest["classes"][0]], abs=0.1)


@pytest.mark.parametrize(
    ("tensor", "status"),
    [
        ({"name": "image", "datatype": "FP32", "shape": [1, 3, 8, 8], "data": [0.0] * 192}, 400),
        ({"name": "image", "datatype": "INT8", "shape": [1], "data": [1]}, 400),
        ({"name": "image", "datatype": "BYTES", "shape": [1], "data": ["***"]}, 400),
        ({"name": "image", "datatype": "BYTES", "shape": [1], "data": ["aGVsbG8="]}, 400),
    ],
)
def test_v2_infer_errors_are_json(
    client: TestClient, bundle_dir: Path, tensor: dict, status: int
) -> None:
    name = json.loads((bundle_dir / "model.json").read_text())["name"]
    response = client.post(f"/v2/models/{name}/infer", json={"inputs": [tensor]})
    assert response.status_code == status
    assert isinstance(response.json()["error"], str)
    assert client.get("/v2/health/ready").status_code == 200
