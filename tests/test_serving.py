"""The prediction service in-process (FastAPI TestClient) against the real exported bundle.

Real full-size photos committed in tests/data/fullres with labels from their file names; every bad
input is generated here with Pillow. Servers in separate processes are in
test_serving_process.py.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import shutil
import struct
import subprocess
import sys
import types
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from serving import imaging
from serving.app import create_app
from serving.batching import MicroBatcher
from serving.model import Model
from serving.settings import Settings
from tests.helpers.photos import FULLRES_DIR

ROOT = Path(__file__).resolve().parents[1]
FULLRES = FULLRES_DIR
PHOTOS = sorted(FULLRES.glob("*.jpg"))

METRIC_NAMES = [
    "http_requests_total",
    "http_request_duration_seconds",
    "inference_duration_seconds",
    "inference_batch_size",
    "http_requests_in_flight",
    "predictions_total",
    "prediction_confidence",
    "rejected_inputs_total",
    "model_info",
    "model_live_accuracy",
    "feedback_total",
]


def true_label(path: Path) -> str:
    return path.name.split(".")[0]


def settings_for(bundle_dir: Path, logs: Path, **overrides: object) -> Settings:
    """Hermetic settings (not from the environment) with logs in a temporary folder."""
    base = Settings(
        model_dir=bundle_dir,
        prediction_log=str(logs / "predictions.jsonl"),
        feedback_log=str(logs / "feedback.jsonl"),
        inference_threads=2,
        decode_threads=2,
    )
    return replace(base, **overrides)


@pytest.fixture(scope="module")
def client(bundle_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    logs = tmp_path_factory.mktemp("serving-logs")
    with TestClient(create_app(settings_for(bundle_dir, logs))) as test_client:
        yield test_client


@pytest.fixture
def fresh_app_client(bundle_dir: Path, tmp_path: Path):
    """Factory for a client over an app with its own settings (closed after the test)."""
    clients: list[TestClient] = []

    def make(**overrides: object) -> TestClient:
        app = create_app(settings_for(bundle_dir, tmp_path, **overrides))
        test_client = TestClient(app)
        test_client.__enter__()
        clients.append(test_client)
        return test_client

    yield make
    for test_client in clients:
        test_client.__exit__(None, None, None)


def upload(client: TestClient, data: bytes, name: str = "photo.jpg", ctype: str = "image/jpeg"):
    return client.post("/predict", files={"file": (name, data, ctype)})


def encode(img: Image.Image, fmt: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format=fmt, **params)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def correct_answers(client: TestClient) -> list[tuple[Path, dict]]:
    """Sampled photos the bundle labels correctly, with their answers, surest first."""
    answers = [(p, upload(client, p.read_bytes()).json()) for p in PHOTOS[:: len(PHOTOS) // 12]]
    correct = [(p, a) for p, a in answers if a["label"] == true_label(p)]
    assert correct, "the bundle labels none of the sampled photos correctly"
    return sorted(correct, key=lambda item: -item[1]["confidence"])


@pytest.fixture(scope="module")
def confident_photo(correct_answers: list[tuple[Path, dict]]) -> tuple[Path, dict]:
    return correct_answers[0]


@pytest.fixture(scope="module")
def uncertain_photo(correct_answers: list[tuple[Path, dict]]) -> tuple[Path, dict]:
    """The least sure correct answer: occluding parts of it visibly moves the prediction."""
    return correct_answers[-1]


# -- predictions on real photos -----------------------------------------------------------


def test_photos_exist() -> None:
    assert len(PHOTOS) >= 20, f"expected the committed full-size photos in {FULLRES}"


def test_predict_labels_most_real_photos_correctly(client: TestClient) -> None:
    correct = 0
    for path in PHOTOS:
        response = upload(client, path.read_bytes(), name=path.name)
        assert response.status_code == 200, response.text
        answer = response.json()
        assert set(answer) == {
            "label",
            "probabilities",
            "confidence",
            "model_version",
            "request_id",
            "inference_ms",
        }
        assert set(answer["probabilities"]) == {"cat", "dog"}
        assert sum(answer["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
        assert answer["confidence"] == max(answer["probabilities"].values())
        assert answer["label"] == max(answer["probabilities"], key=answer["probabilities"].get)
        assert response.headers["x-request-id"] == answer["request_id"]
        correct += answer["label"] == true_label(path)
    assert correct / len(PHOTOS) >= 0.8, f"only {correct}/{len(PHOTOS)} photos labelled right"


def test_raw_body_and_base64_give_the_same_answer_as_multipart(client: TestClient) -> None:
    data = PHOTOS[0].read_bytes()
    multipart = upload(client, data).json()
    raw = client.post("/predict", content=data, headers={"content-type": "image/jpeg"}).json()
    b64 = base64.b64encode(data).decode()
    plain = client.post("/predict-image", json={"image": b64}).json()
    data_url = client.post("/predict-image", json={"image": f"data:image/jpeg;base64,{b64}"})
    assert data_url.status_code == 200
    for other in (raw, plain, data_url.json()):
        assert other["label"] == multipart["label"]
        assert other["probabilities"] == multipart["probabilities"]


def test_batch_returns_one_result_per_photo_and_isolates_bad_ones(client: TestClient) -> None:
    photos = PHOTOS[:6]
    files = [("files", (p.name, p.read_bytes(), "image/jpeg")) for p in photos]
    files.insert(2, ("files", ("notes.txt", b"not a photo at all", "text/plain")))
    files.insert(4, ("files", ("empty.jpg", b"", "image/jpeg")))
    response = client.post("/predict/batch", files=files)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["count"] == len(files) == len(body["results"])
    bad = {r["index"]: r for r in body["results"] if not r["ok"]}
    assert {i: (r["reason"], r["status"]) for i, r in bad.items()} == {
        2: ("not_an_image", 400),
        4: ("empty", 400),
    }
    good = [r for r in body["results"] if r["ok"]]
    assert [r["filename"] for r in good] == [p.name for p in photos]
    singles = [upload(client, p.read_bytes()).json() for p in photos]
    for result, single in zip(good, singles, strict=True):
        assert result["label"] == single["label"]
        for cls, p in single["probabilities"].items():
            assert result["probabilities"][cls] == pytest.approx(p, abs=1e-4)
    assert len({r["request_id"] for r in good}) == len(good)


def test_batch_limit(fresh_app_client) -> None:
    small = fresh_app_client(max_batch_files=3)
    data = PHOTOS[0].read_bytes()
    files = [("files", (f"{i}.jpg", data, "image/jpeg")) for i in range(4)]
    response = small.post("/predict/batch", files=files)
    assert response.status_code == 413
    assert response.json()["reason"] == "too_many_files"
    assert small.post("/predict/batch", files=files[:3]).status_code == 200
    missing = small.post("/predict/batch", files={"other": ("a.jpg", data, "image/jpeg")})
    assert (missing.status_code, missing.json()["reason"]) == (422, "missing_field")


def test_served_pixels_are_the_evaluation_pixels(client: TestClient, bundle_dir: Path) -> None:
    """The service prepares photos exactly as evaluation does (serving.imaging.load)."""
    model = Model(bundle_dir, threads=2)
    photos = PHOTOS[:10]
    expected = model.predict(
        imaging.to_batch([imaging.load(p.read_bytes(), model.size) for p in photos])
    )
    for path, row in zip(photos, expected, strict=True):
        served = upload(client, path.read_bytes()).json()["probabilities"]
        for cls, p in zip(model.classes, row, strict=True):
            assert served[cls] == pytest.approx(float(p), abs=2e-6), path.name


def test_draft_decoding_matches_full_decoding(bundle_dir: Path) -> None:
    """JPEG draft mode (decoding at 1/2, 1/4...) gives nearly the full-decode pixels."""
    model = Model(bundle_dir, threads=2)
    size = model.size
    full, draft, shrunk = [], [], 0
    for path in PHOTOS:
        data = path.read_bytes()
        full.append(np.asarray(imaging.fit(imaging.decode(data), size)))
        small = imaging.decode(data, draft_size=size)
        shrunk += small.size != Image.open(io.BytesIO(data)).size
        draft.append(np.asarray(imaging.fit(small, size)))
    assert shrunk >= len(PHOTOS) // 2, "draft mode should have decoded most photos smaller"
    pixel_error = [
        np.abs(a.astype(int) - b.astype(int)).mean() for a, b in zip(full, draft, strict=True)
    ]
    assert max(pixel_error) < 10 and float(np.mean(pixel_error)) < 3
    p_full = model.predict(imaging.to_batch(full))
    p_draft = model.predict(imaging.to_batch(draft))
    # Uncertain photos move most; on average the probabilities barely change.
    assert float(np.abs(p_full - p_draft).mean()) < 0.02
    assert float(np.abs(p_full - p_draft).max()) < 0.25
    assert (p_full.argmax(1) == p_draft.argmax(1)).mean() >= 0.9


# -- valid but unusual images -------------------------------------------------------------


def variants_of(photo: Path) -> dict[str, tuple[bytes, str, str]]:
    """name -> (bytes, filename, content type): every mode and format the contract accepts."""
    rgb = Image.open(photo).convert("RGB")
    rgba = rgb.convert("RGBA")
    rgba.putalpha(255)
    gray16 = Image.fromarray(np.asarray(rgb.convert("L"), dtype=np.uint16) * 257)
    assert gray16.mode.startswith("I;16")
    # Stored rotated 90° counter-clockwise with EXIF orientation 6 ("rotate 90° CW to view").
    exif = Image.Exif()
    exif[0x0112] = 6
    rotated = encode(rgb.transpose(Image.Transpose.ROTATE_90), "JPEG", quality=95, exif=exif)
    return {
        "grayscale": (encode(rgb.convert("L"), "JPEG", quality=95), "g.jpg", "image/jpeg"),
        "cmyk": (encode(rgb.convert("CMYK"), "JPEG", quality=95), "c.jpg", "image/jpeg"),
        "rgba": (encode(rgba, "PNG"), "a.png", "image/png"),
        "palette": (encode(rgb.quantize(256), "PNG"), "p.png", "image/png"),
        "16-bit": (encode(gray16, "PNG"), "16.png", "image/png"),
        "webp": (encode(rgb, "WEBP", quality=95), "w.webp", "image/webp"),
        "bmp": (encode(rgb, "BMP"), "b.bmp", "image/bmp"),
        "png-named-jpg": (encode(rgb, "PNG"), "really-a-png.jpg", "image/jpeg"),
        "exif-rotated": (rotated, "r.jpg", "image/jpeg"),
    }


def test_unusual_but_valid_images_are_predicted_correctly(
    client: TestClient, confident_photo: tuple[Path, dict]
) -> None:
    photo, original = confident_photo
    for name, (data, filename, ctype) in variants_of(photo).items():
        response = upload(client, data, name=filename, ctype=ctype)
        assert response.status_code == 200, f"{name}: {response.text}"
        answer = response.json()
        assert answer["label"] == true_label(photo), f"{name}: {answer}"
        if name in ("rgba", "bmp", "png-named-jpg", "webp", "exif-rotated"):
            # Same colour pixels (up to lossy re-encoding): nearly the same probabilities.
            p, q = answer["probabilities"], original["probabilities"]
            assert abs(p["cat"] - q["cat"]) < 0.1, f"{name}: {p} vs {q}"


def test_exif_rotation_is_applied(client: TestClient, confident_photo: tuple[Path, dict]) -> None:
    photo, _ = confident_photo
    rgb = Image.open(photo).convert("RGB")
    rotated = rgb.transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    with_tag = upload(client, encode(rotated, "PNG", exif=exif), ctype="image/png").json()
    upright = upload(client, encode(rgb, "PNG"), ctype="image/png").json()
    sideways = upload(client, encode(rotated, "PNG"), ctype="image/png").json()
    assert with_tag["probabilities"] == upright["probabilities"]
    assert with_tag["probabilities"] != sideways["probabilities"]


# -- bad input: a clear status and reason, and the server keeps serving --------------------


def png_bomb(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height pixels (a decompression bomb)."""
    data = bytearray(encode(Image.new("L", (16, 16)), "PNG"))
    ihdr = bytearray(data[16:29])
    ihdr[0:8] = struct.pack(">II", width, height)
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + bytes(ihdr)))
    return bytes(data)


def bad_requests() -> dict[str, tuple[dict, int, str]]:
    photo = PHOTOS[0].read_bytes()
    jpeg_of_11mb = photo + b"\0" * (11 * 1024 * 1024)  # a valid JPEG start, over the limit
    ppm = encode(Image.new("RGB", (64, 64), "red"), "PPM")
    tiny = encode(Image.new("RGB", (8, 8), "red"), "PNG")

    def file(data: bytes, ctype: str = "image/jpeg") -> dict:
        return {"url": "/predict", "files": {"file": ("x.jpg", data, ctype)}}

    return {
        "over 10 MB": (file(jpeg_of_11mb), 413, "too_large"),
        "body over the request cap": (file(b"\xff" * (15 * 1024 * 1024)), 413, "body_too_large"),
        "format outside the allow-list": (file(ppm, "image/x-portable-pixmap"), 415,
                                          "unsupported_format"),
        "wrong content type": (
            {"url": "/predict", "content": photo, "headers": {"content-type": "text/plain"}},
            415, "unsupported_media_type",
        ),
        "decompression bomb": (file(png_bomb(30_000, 30_000), "image/png"), 413,
                               "too_many_pixels"),
        "truncated": (file(photo[: len(photo) // 2]), 400, "corrupt"),
        "empty": (file(b""), 400, "empty"),
        "not an image": (file(b"%PDF-1.4 definitely not a photo"), 400, "not_an_image"),
        "too small": (file(tiny, "image/png"), 422, "too_small"),
        "missing field": (
            {"url": "/predict", "files": {"image": ("x.jpg", photo, "image/jpeg")}},
            422, "missing_field",
        ),
        "bad base64": ({"url": "/predict-image", "json": {"image": "not base64 ***"}}, 400,
                       "bad_base64"),
        "base64 of a non-image": (
            {"url": "/predict-image", "json": {"image": base64.b64encode(b"hello").decode()}},
            400, "not_an_image",
        ),
        "non-image data URL": (
            {"url": "/predict-image", "json": {"image": "data:text/plain;base64,aGVsbG8="}},
            415, "unsupported_media_type",
        ),
        "missing JSON field": ({"url": "/predict-image", "json": {"picture": "x"}}, 422,
                               "missing_field"),
        "invalid JSON": (
            {"url": "/predict-image", "content": b"{not json",
             "headers": {"content-type": "application/json"}},
            422, "invalid_request",
        ),
    }  # fmt: skip


@pytest.mark.parametrize("case", list(bad_requests()))
def test_bad_input_gets_a_clear_error_and_the_server_keeps_serving(
    client: TestClient, case: str
) -> None:
    request, status, reason = bad_requests()[case]
    url = request.pop("url")
    response = client.post(url, **request)
    assert response.status_code == status, response.text
    body = response.json()
    assert body["reason"] == reason
    assert isinstance(body["error"], str) and len(body["error"]) > 10
    assert body["request_id"] == response.headers["x-request-id"]
    assert client.get("/health").status_code == 200
    assert upload(client, PHOTOS[1].read_bytes()).status_code == 200


def test_streamed_body_without_length_is_cut_at_the_cap(client: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(16):  # 16 MiB, sent chunked (no Content-Length to check up front)
            yield b"\xff" * (1024 * 1024)

    response = client.post("/predict", content=chunks(), headers={"content-type": "image/jpeg"})
    assert (response.status_code, response.json()["reason"]) == (413, "body_too_large")
    assert upload(client, PHOTOS[1].read_bytes()).status_code == 200


def test_rejected_inputs_are_counted_by_reason(client: TestClient) -> None:
    upload(client, b"")
    metrics = client.get("/metrics").text
    assert 'rejected_inputs_total{reason="empty"}' in metrics


def test_unknown_route_is_json_404_and_not_a_metric_label(client: TestClient) -> None:
    response = client.get("/no/such/page/12345")
    assert response.status_code == 404 and response.json()["reason"] == "not_found"
    metrics = client.get("/metrics").text
    assert "12345" not in metrics
    assert 'route="<unmatched>"' in metrics


# -- explanation --------------------------------------------------------------------------


def test_explain_returns_the_prediction_and_an_occlusion_heatmap(
    client: TestClient, uncertain_photo: tuple[Path, dict]
) -> None:
    photo, original = uncertain_photo
    response = client.post("/explain", files={"file": (photo.name, photo.read_bytes())})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["label"] == original["label"]
    assert body["probabilities"] == original["probabilities"]
    explanation = body["explanation"]
    grid = np.array(explanation["grid"])
    n = explanation["grid_size"]
    assert grid.shape == (n, n) and n >= 2
    assert explanation["target"] == body["label"]
    assert explanation["base_probability"] == pytest.approx(body["confidence"], abs=1e-5)
    # Hiding some region must change the prediction: the grid is not all zero.
    assert np.abs(grid).max() > 1e-3, f"confidence {body['confidence']}: {grid}"
    overlay = Image.open(io.BytesIO(base64.b64decode(explanation["overlay_png_base64"])))
    size = client.get("/model-info").json()["input"]["size"]
    assert overlay.format == "PNG" and overlay.size == (size, size)
    raw = client.post(
        "/explain", content=photo.read_bytes(), headers={"content-type": "image/jpeg"}
    )
    assert raw.json()["explanation"]["grid"] == explanation["grid"]


# -- information endpoints ----------------------------------------------------------------


def test_model_info_comes_from_the_manifest(client: TestClient, bundle_dir: Path) -> None:
    manifest = json.loads((bundle_dir / "model.json").read_text())
    info = client.get("/model-info").json()
    for key in ("name", "version", "classes", "input", "metrics", "data_version",
                "git_revision", "created_at"):  # fmt: skip
        assert info[key] == manifest[key], key
    assert info["metrics"], "real test metrics are expected in the bundle"


def test_health_endpoints_when_ready(client: TestClient, bundle_dir: Path) -> None:
    health = client.get("/health")
    assert health.status_code == 200
    body = health.json()
    assert body["status"] == "ok" and body["model_loaded"] is True
    assert body["model_version"] == json.loads((bundle_dir / "model.json").read_text())["version"]
    assert body["timestamp"].endswith("+00:00")
    assert client.get("/health/live").status_code == 200
    assert client.get("/health/ready").status_code == 200


def test_stats_count_predictions(client: TestClient) -> None:
    before = client.get("/stats").json()
    label = upload(client, PHOTOS[2].read_bytes()).json()["label"]
    after = client.get("/stats").json()
    assert after["predictions"] == before["predictions"] + 1
    assert after["per_class"][label] == before["per_class"][label] + 1
    assert 0.5 <= after["average_confidence"] <= 1.0
    assert after["average_inference_ms"] > 0


def test_metrics_expose_every_documented_name(client: TestClient) -> None:
    upload(client, PHOTOS[3].read_bytes())
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    for name in METRIC_NAMES:
        assert f"# TYPE {name} " in text, name
    assert 'http_requests_total{method="POST",route="/predict",status="200"}' in text
    assert "inference_batch_size_count" in text
    docs = (ROOT / "docs" / "serving.md").read_text()
    for name in [*METRIC_NAMES, "model_drift_psi"]:
        assert f"`{name}" in docs, f"{name} is not listed in docs/serving.md"


def test_openapi_documents_every_endpoint(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    expected = {
        "/health", "/health/live", "/health/ready", "/predict", "/predict-image",
        "/predict/batch", "/explain", "/feedback", "/model-info", "/stats", "/metrics",
        "/v2", "/v2/health/live", "/v2/health/ready", "/v2/models/{name}",
        "/v2/models/{name}/ready", "/v2/models/{name}/infer",
    }  # fmt: skip
    assert expected <= set(paths)
    assert "image/*" in paths["/predict"]["post"]["requestBody"]["content"]
    assert client.get("/docs").status_code == 200


def test_web_page_and_its_files_are_served(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    for asset in ("/static/app.js", "/static/style.css"):
        assert asset in page.text
        assert client.get(asset).status_code == 200
    assert "http://" not in page.text and "https://" not in page.text  # no CDN


def test_request_id_is_taken_from_the_header_or_made(client: TestClient) -> None:
    data = PHOTOS[4].read_bytes()
    given = client.post(
        "/predict", files={"file": ("a.jpg", data)}, headers={"X-Request-ID": "trace-42.a"}
    )
    assert given.headers["x-request-id"] == "trace-42.a" == given.json()["request_id"]
    unsafe_id = "spaces and {braces} " * 5
    unsafe = client.post(
        "/predict", files={"file": ("a.jpg", data)}, headers={"X-Request-ID": unsafe_id}
    )
    assert unsafe.json()["request_id"] != unsafe_id
    assert len(unsafe.headers["x-request-id"]) == 32


# -- Open Inference Protocol V2 -------------------------------------------------------------


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


# -- logs, feedback and drift hooks -------------------------------------------------------


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


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
    import hashlib

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


def test_drift_gauges_are_fed_by_the_drift_report_hook(
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

    module = types.ModuleType("serving.drift")
    module.drift_report = drift_report  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "serving.drift", module)
    text = app_client.get("/metrics").text
    assert seen["labels"][-5:] == [a["label"] for a in answers]
    assert seen["confidences"][-5:] == pytest.approx([a["confidence"] for a in answers], abs=1e-6)
    assert "confidence_histogram" in seen["reference"]
    expected_share = seen["labels"].count(seen["classes"][0]) / len(seen["labels"])
    assert f'model_drift_psi{{feature="class_share"}} {expected_share}' in text
    assert 'model_drift_psi{feature="brightness"} 0.25' in text

    def fewer_features(reference, labels, confidences, brightness, classes):
        return {"confidence": 0.5}

    module.drift_report = fewer_features  # type: ignore[attr-defined]
    text = app_client.get("/metrics").text
    assert 'model_drift_psi{feature="confidence"} 0.5' in text
    assert 'feature="brightness"' not in text  # a feature left out is not a stale gauge


# -- API key ----------------------------------------------------------------------------


def test_api_key_guards_everything_but_health_and_metrics(fresh_app_client) -> None:
    app_client = fresh_app_client(api_key="s3cret-key")
    data = PHOTOS[0].read_bytes()
    refused = upload(app_client, data)
    assert (refused.status_code, refused.json()["reason"]) == (401, "unauthorized")
    for path in ("/model-info", "/stats", "/v2/models/x"):
        assert app_client.get(path).status_code == 401, path
    assert app_client.post("/feedback", json={"request_id": "x", "label": "cat"}).status_code == 401
    wrong = app_client.post(
        "/predict", files={"file": ("a.jpg", data)}, headers={"X-API-Key": "no"}
    )
    assert wrong.status_code == 401
    for headers in ({"X-API-Key": "s3cret-key"}, {"Authorization": "Bearer s3cret-key"}):
        ok = app_client.post("/predict", files={"file": ("a.jpg", data)}, headers=headers)
        assert ok.status_code == 200, headers
    for path in ("/health", "/health/live", "/health/ready", "/metrics", "/v2/health/ready"):
        assert app_client.get(path).status_code == 200, path


# -- readiness, integrity, overload --------------------------------------------------------


def test_not_ready_without_a_bundle(fresh_app_client, tmp_path: Path) -> None:
    empty = tmp_path / "no-bundle"
    empty.mkdir()
    app_client = fresh_app_client(model_dir=empty)
    health = app_client.get("/health")
    assert health.status_code == 503
    assert health.json()["model_loaded"] is False and health.json()["model_version"] is None
    assert app_client.get("/health/live").status_code == 200
    assert app_client.get("/health/ready").status_code == 503
    assert app_client.get("/v2/health/ready").status_code == 503
    refused = upload(app_client, PHOTOS[0].read_bytes())
    assert (refused.status_code, refused.json()["reason"]) == (503, "not_ready")


def test_a_model_file_that_does_not_match_its_hash_is_refused(
    fresh_app_client, bundle_dir: Path, tmp_path: Path
) -> None:
    tampered = tmp_path / "tampered"
    shutil.copytree(bundle_dir, tampered)
    with (tampered / "model.onnx").open("ab") as fh:
        fh.write(b"\0")
    app_client = fresh_app_client(model_dir=tampered)
    health = app_client.get("/health")
    assert health.status_code == 503
    assert "SHA-256" in health.json()["error"]


def test_draining_turns_not_ready_but_still_answers(fresh_app_client) -> None:
    app_client = fresh_app_client()
    app_client.app.state.service.begin_drain()
    assert app_client.get("/health/ready").status_code == 503
    assert app_client.get("/health").json()["status"] == "draining"
    assert upload(app_client, PHOTOS[0].read_bytes()).status_code == 200


def test_full_queue_answers_503_with_retry_after(fresh_app_client) -> None:
    app_client = fresh_app_client(queue_max=4, max_batch_files=8, retry_after_s=2)
    data = PHOTOS[0].read_bytes()
    files = [("files", (f"{i}.jpg", data, "image/jpeg")) for i in range(8)]
    response = app_client.post("/predict/batch", files=files)
    assert response.status_code == 503
    assert response.json()["reason"] == "queue_full"
    assert response.headers["retry-after"] == "2"
    # Many concurrent single uploads: each one is either served or told to retry.
    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(lambda _: upload(app_client, data).status_code, range(24)))
    assert set(statuses) <= {200, 503} and 200 in statuses
    assert upload(app_client, data).status_code == 200


def test_request_deadline_gives_504(fresh_app_client) -> None:
    app_client = fresh_app_client(request_timeout_s=1e-6)
    response = upload(app_client, PHOTOS[0].read_bytes())
    assert (response.status_code, response.json()["reason"]) == (504, "timeout")
    assert app_client.get("/health").status_code == 200


# -- micro-batching -------------------------------------------------------------------------


def test_micro_batcher_groups_concurrent_requests_without_changing_results(
    bundle_dir: Path,
) -> None:
    model = Model(bundle_dir, threads=2)
    images = np.stack([imaging.load(p.read_bytes(), model.size) for p in PHOTOS[:8]])
    alone = model.predict(imaging.to_batch(images))

    async def run(max_size: int) -> tuple[list[np.ndarray], list[int]]:
        sizes: list[int] = []
        batcher = MicroBatcher(model.predict, max_size, 0.0, 64, lambda n, _: sizes.append(n))
        batcher.start()
        results = await asyncio.gather(*(batcher.submit(images[i : i + 1]) for i in range(8)))
        await batcher.stop()
        return [r[0][0] for r in results], sizes

    batched, sizes = asyncio.run(run(max_size=16))
    assert max(sizes) > 1 and sum(sizes) == 8
    np.testing.assert_allclose(np.stack(batched), alone, atol=1e-5)
    single, sizes_off = asyncio.run(run(max_size=1))
    assert sizes_off == [1] * 8
    np.testing.assert_allclose(np.stack(single), alone, atol=1e-5)

    async def one_big_job(max_size: int) -> tuple[np.ndarray, list[int]]:
        sizes: list[int] = []
        batcher = MicroBatcher(model.predict, max_size, 0.0, 64, lambda n, _: sizes.append(n))
        batcher.start()
        probs, _ = await batcher.submit(images)
        await batcher.stop()
        return probs, sizes

    probs, sizes = asyncio.run(one_big_job(max_size=3))  # an explanation-sized job
    assert sizes == [3, 3, 2]  # run in chunks: memory stays bounded by max_size
    np.testing.assert_allclose(probs, alone, atol=1e-5)


def test_serving_imports_no_torch() -> None:
    code = "import serving.app, sys; assert 'torch' not in sys.modules, 'torch was imported'"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {
        "MODEL_DIR": "/srv/bundle", "PORT": "9001", "API_KEY": "k", "MAX_IMAGE_BYTES": "1000",
        "ALLOWED_FORMATS": "jpeg, png", "INFERENCE_THREADS": "3", "BATCH_MAX_SIZE": "1",
        "BATCH_MAX_WAIT_MS": "2.5", "QUEUE_MAX": "7", "REQUEST_TIMEOUT_S": "1.5",
        "PREDICTION_LOG": "", "DRAFT_DECODE": "false", "LOG_LEVEL": "WARNING",
    }  # fmt: skip
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    s = Settings.from_env()
    assert (s.model_dir, s.port, s.api_key, s.max_bytes) == (Path("/srv/bundle"), 9001, "k", 1000)
    assert s.allowed_formats == frozenset({"JPEG", "PNG"})
    assert (s.inference_threads, s.batch_max_size, s.batch_max_wait_ms) == (3, 1, 2.5)
    assert (s.queue_max, s.request_timeout_s, s.prediction_log) == (7, 1.5, "")
    assert s.draft_decode is False and s.log_level == "warning"


def test_inference_threads_setting_reaches_onnx_runtime(bundle_dir: Path) -> None:
    for threads in (1, 2):
        options = Model(bundle_dir, threads=threads).session.get_session_options()
        assert options.intra_op_num_threads == threads
