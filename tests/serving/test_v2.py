"""The Open Inference Protocol V2 routes against the real bundle."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from contracts import imaging
from serving.middleware import body_memory
from serving.settings import Settings
from tests.helpers.service import PHOTOS, model_name, upload


def input_size(bundle_dir: Path) -> int:
    return json.loads((bundle_dir / "model.json").read_text())["input"]["size"]


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


def binary_request(header: dict, tail: bytes, length: int | str | None = None) -> dict:
    """httpx arguments for a body in the binary tensor data extension: JSON, then `tail`."""
    head = json.dumps(header).encode()
    size = str(len(head) if length is None else length)
    return {"content": head + tail, "headers": {"Inference-Header-Content-Length": size}}


def fp32_header(shape: list[int], size: int, **parameters: object) -> dict:
    tensor = {"name": "image", "datatype": "FP32", "shape": shape}
    return {"inputs": [{**tensor, "parameters": {"binary_data_size": size, **parameters}}]}


def test_v2_json_body_needs_no_content_type(client: TestClient, bundle_dir: Path) -> None:
    """Triton's client sends its JSON without a Content-Type header."""
    name, size = model_name(bundle_dir), input_size(bundle_dir)
    tensor = imaging.to_batch([imaging.load(PHOTOS[0].read_bytes(), size)])
    body = {"inputs": [{"name": "image", "datatype": "FP32", "shape": list(tensor.shape),
                        "data": tensor.ravel().tolist()}]}  # fmt: skip
    response = client.post(f"/v2/models/{name}/infer", content=json.dumps(body).encode())
    assert response.status_code == 200, response.text
    assert (
        upload(client, PHOTOS[0].read_bytes()).json()["label"]
        in response.json()["outputs"][1]["data"]
    )


def test_v2_binary_input_and_output_round_trip(client: TestClient, bundle_dir: Path) -> None:
    name, size = model_name(bundle_dir), input_size(bundle_dir)
    tensor = imaging.to_batch([imaging.load(p.read_bytes(), size) for p in PHOTOS[:2]])
    header = fp32_header(list(tensor.shape), tensor.nbytes)
    header["outputs"] = [{"name": "probabilities", "parameters": {"binary_data": True}},
                         {"name": "label"}]  # fmt: skip
    response = client.post(f"/v2/models/{name}/infer", **binary_request(header, tensor.tobytes()))
    assert response.status_code == 200, response.text
    json_length = int(response.headers["inference-header-content-length"])
    answer = json.loads(response.content[:json_length])
    probabilities, label = answer["outputs"]
    assert probabilities["parameters"] == {"binary_data_size": 2 * 2 * 4}
    assert "data" not in probabilities and len(label["data"]) == 2
    probs = np.frombuffer(response.content[json_length:], dtype="<f4").reshape(2, 2)
    expected = [upload(client, p.read_bytes()).json()["probabilities"] for p in PHOTOS[:2]]
    classes = json.loads((bundle_dir / "model.json").read_text())["classes"]
    np.testing.assert_allclose(probs, [[e[c] for c in classes] for e in expected], atol=2e-6)


def bad_binary_requests(size: int) -> dict[str, tuple[dict, int, str]]:
    """Binary bodies that break the extension's rules, with the status and reason each gets."""
    one = np.full((1, 3, size, size), 0.5, np.float32)
    nan = one.copy()
    nan[0, 0, 0, 0] = np.nan
    good = fp32_header(list(one.shape), one.nbytes)
    jpeg = PHOTOS[0].read_bytes()
    bytes_header = {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1],
                                "parameters": {"binary_data_size": len(jpeg) + 4}}]}  # fmt: skip
    prefixed = len(jpeg).to_bytes(4, "little") + jpeg
    return {
        "header longer than the body": (binary_request(good, b"", 10**6), 422, "invalid_request"),
        "header length not a number": (binary_request(good, one.tobytes(), "12a"), 422, "invalid_request"),
        "size past the end": (binary_request(good, one.tobytes()[:-4]), 400, "invalid_tensor"),
        "bytes that belong to no input": (binary_request(good, one.tobytes() + b"\0" * 4), 400, "invalid_tensor"),
        "FP32 bytes not 4 per value": (binary_request(fp32_header(list(one.shape), one.nbytes - 2), one.tobytes()[:-2]), 400, "invalid_tensor"),
        "NaN": (binary_request(good, nan.tobytes()), 400, "invalid_tensor"),
        "size given as true": (binary_request(fp32_header([1], True), b"\0"), 400, "invalid_tensor"),
        "data and binary data": (binary_request({"inputs": [{**good["inputs"][0], "data": [0.5]}]}, one.tobytes()), 400, "invalid_tensor"),
        "BYTES with bytes after the last element": (binary_request({"inputs": [{**bytes_header["inputs"][0], "parameters": {"binary_data_size": len(prefixed) + 3}}]}, prefixed + b"\0" * 3), 400, "invalid_tensor"),
        "BYTES length prefix past the end": (binary_request(bytes_header, (len(jpeg) + 9).to_bytes(4, "little") + jpeg), 400, "invalid_tensor"),
        "BYTES shape [1] holding two": (binary_request({"inputs": [{**bytes_header["inputs"][0], "parameters": {"binary_data_size": 2 * len(prefixed)}}]}, prefixed * 2), 400, "invalid_tensor"),
        "classification extension": (binary_request({**good, "outputs": [{"name": "label", "parameters": {"classification": 1}}]}, one.tobytes()), 400, "invalid_tensor"),
        "compressed body": ({**binary_request(good, one.tobytes()), "headers": {"Content-Encoding": "gzip"}}, 415, "unsupported_media_type"),
    }  # fmt: skip


def test_v2_binary_tensor_data_is_held_to_the_json_rules(
    client: TestClient, bundle_dir: Path
) -> None:
    url = f"/v2/models/{model_name(bundle_dir)}/infer"
    before = client.get("/stats").json()["predictions"]
    for case, (request, status, reason) in bad_binary_requests(input_size(bundle_dir)).items():
        response = client.post(url, **request)
        assert (response.status_code, response.json().get("reason")) == (status, reason), (
            f"{case}: {response.text[:300]}"
        )
    assert client.get("/stats").json()["predictions"] == before  # nothing was served
    assert client.get("/v2/health/ready").status_code == 200


def test_v2_bodies_count_against_the_memory_budget_by_format() -> None:
    """JSON numbers become Python floats (4x their bytes), with or without a Content-Type;
    binary tensor data is used as it is (1x)."""
    settings = Settings.hermetic()

    def scope(**headers: str) -> dict:
        pairs = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
        return {"path": "/v2/models/m/infer", "method": "POST", "headers": pairs}

    mib = 2**20
    assert body_memory(scope(**{"content-length": str(mib)}), settings) == 4 * mib
    json_declared = scope(**{"content-length": str(mib), "content-type": "application/json"})
    assert body_memory(json_declared, settings) == 4 * mib
    binary = scope(**{"content-length": str(mib), "inference-header-content-length": "1000"})
    assert body_memory(binary, settings) == 4 * 1000 + mib - 1000
