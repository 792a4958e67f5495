"""Bad input gets a clear status and reason, and the server keeps serving."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers.service import PHOTOS, encode, png_with_size, upload


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
        "decompression bomb": (file(png_with_size(30_000, 30_000), "image/png"), 413,
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


def _rejected(client: TestClient) -> dict[str, float]:
    """`rejected_inputs_total` by reason, as /metrics shows it now."""
    families = text_string_to_metric_families(client.get("/metrics").text)
    (family,) = [f for f in families if f.name == "rejected_inputs"]
    return {s.labels["reason"]: s.value for s in family.samples if s.name.endswith("_total")}


def test_rejected_inputs_are_counted_by_reason(client: TestClient) -> None:
    """Each refused input counts once under its reason; a refusal that is not about the
    input (an unknown route) and a good photo count nowhere."""
    before = _rejected(client)
    assert upload(client, b"").status_code == 400
    assert upload(client, b"\x89PNG not really").status_code == 400
    assert upload(client, b"").status_code == 400
    assert client.get("/no/such/route").status_code == 404
    assert upload(client, PHOTOS[1].read_bytes()).status_code == 200
    after = _rejected(client)
    changed = {r: after[r] - before.get(r, 0.0) for r in after if after[r] != before.get(r, 0.0)}
    assert changed == {"empty": 2.0, "not_an_image": 1.0}


def test_unknown_route_is_json_404_and_not_a_metric_label(client: TestClient) -> None:
    response = client.get("/no/such/page/12345")
    assert response.status_code == 404 and response.json()["reason"] == "not_found"
    metrics = client.get("/metrics").text
    assert "12345" not in metrics
    assert 'route="<unmatched>"' in metrics
