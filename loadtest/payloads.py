"""The benchmark's requests, pre-built as raw HTTP/1.1 bytes.

Pre-built so the clients take as little of the shared CPU as possible. `triggers()` builds one request for each input that once crashed or exhausted
the service (issue 9): huge V2 shapes, 400-digit integers, bad output names, 16-bit and
RGBA PNG bombs, transparent PNGs, uploads cut off mid-body, surrogate file names,
feedback for an unknown id.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from contracts import imaging

BOUNDARY = "benchmarkboundary7d3f"


@dataclass(frozen=True)
class Action:
    """One request: its bytes, whether it is a good photo, and whether to hang up midway."""

    payload: bytes
    kind: str  # "good" or the trigger's name
    disconnect: bool = False  # hang up after part of the body
    answer_before_body: bool = False  # the server answers from the headers alone


def http_request(
    path: str,
    body: bytes,
    content_type: str,
    port: int,
    length: int | None = None,
    extra_headers: str = "",
) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body) if length is None else length}\r\n{extra_headers}\r\n"
    )
    return head.encode() + body


def multipart(field_name: str, filename: bytes, data: bytes, ctype: str = "image/jpeg") -> bytes:
    return (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{field_name}"; filename="'.encode()
        + filename
        + f'"\r\nContent-Type: {ctype}\r\n\r\n'.encode()
        + data
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )


def good_photos(photos: list[Path], port: int) -> list[Action]:
    """One multipart /predict upload per photo (the course's client)."""
    ctype = f"multipart/form-data; boundary={BOUNDARY}"
    return [
        Action(
            http_request(
                "/predict", multipart("file", p.name.encode(), p.read_bytes()), ctype, port
            ),
            "good",
        )
        for p in photos
    ]


def png(img: Image.Image) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, "PNG")
    return buffer.getvalue()


def triggers(
    photo: Path, port: int, model: str = "cats-dogs-classifier", size: int = 224
) -> list[Action]:
    """Every input of issue 9 that once gave a 5xx or exhausted the service."""
    v2 = f"/v2/models/{model}/infer"
    js = "application/json"
    values = 3 * size * size

    def fp32(shape: str, data: str, extra: str = "") -> bytes:
        return f'{{"inputs":[{{"name":"image","datatype":"FP32","shape":{shape},"data":[{data}]}}]{extra}}}'.encode()

    one = f"[1,3,{size},{size}]"
    photo_bytes = photo.read_bytes()
    side = 6320
    bombs = {
        "png_16bit_bomb": png(Image.new("I;16", (side, side), 1000)),
        "png_rgba_bomb": png(Image.new("RGBA", (side, side), (200, 120, 40, 128))),
        "png_rgba_photo": png(Image.open(photo).convert("RGBA")),
    }
    mp = f"multipart/form-data; boundary={BOUNDARY}"
    actions = [
        Action(http_request(v2, fp32(f"[18014398509481984,3,{size},{size}]", ""), js, port), "v2_huge_shape"),
        Action(http_request(v2, fp32(f"[1,3,{size},{'9' * 400}]", ""), js, port), "v2_400_digit_dim"),
        Action(http_request(v2, fp32(one, "0," * (values - 1) + "1" * 400), js, port), "v2_400_digit_value"),
        Action(http_request(v2, fp32(one, "0.5," * (values - 1) + "0.5", ',"outputs":[{"name":[1]}]'), js, port), "v2_bad_output_name"),
        Action(http_request(v2, fp32(one, "0," * (values - 1) + "NaN"), js, port), "v2_nan"),
        Action(http_request(v2, b"", js, port, length=27_000_000), "v2_60_images_27MB", answer_before_body=True),
        *[Action(http_request("/predict", multipart("file", b"x.png", data, "image/png"), mp, port), name)
          for name, data in bombs.items()],
        Action(http_request("/predict", photo_bytes, "image/jpeg", port, length=2 * len(photo_bytes)), "disconnect_midway", disconnect=True),
        Action(http_request("/predict/batch", multipart("files", b"a\xed\xa0\x80.jpg", photo_bytes), mp, port), "surrogate_filename"),
        Action(http_request("/feedback", json.dumps({"request_id": "no-such-id", "feedback_token": "0" * 64, "label": "cat"}).encode(), js, port), "feedback_unknown_id"),
    ]  # fmt: skip
    return actions


def fp32_tensors(
    port: int, images: int = 10, model: str = "cats-dogs-classifier", size: int = 224
) -> Action:
    """A valid V2 FP32 request of `images` random images (about 1.3 MB of JSON each)."""
    values = np.random.default_rng(0).random(images * 3 * size * size)
    data = ",".join(f"{v:.6f}" for v in values)
    shape = f"[{images},3,{size},{size}]"
    body = f'{{"inputs":[{{"name":"image","datatype":"FP32","shape":{shape},"data":[{data}]}}]}}'
    return Action(
        http_request(f"/v2/models/{model}/infer", body.encode(), "application/json", port),
        "fp32_tensor",
    )


def v2_photos(
    photos: list[Path], port: int, size: int, batch: int, binary: bool,
    model: str = "cats-dogs-classifier",
) -> list[Action]:  # fmt: skip
    """V2 FP32 requests of `batch` photos each, decoded by the client (the image contract,
    as the service decodes uploads), sent as binary tensor data or as a JSON list of
    numbers (Triton's client's two forms); `probabilities` comes back the same way."""
    pixels = [imaging.load(p.read_bytes(), size) for p in photos]
    actions = []
    for start in range(0, len(pixels) - batch + 1, batch):
        tensor = imaging.to_batch(pixels[start : start + batch])
        spec: dict = {"name": "image", "datatype": "FP32", "shape": list(tensor.shape)}
        output = {"name": "probabilities", "parameters": {"binary_data": binary}}
        if binary:
            spec["parameters"] = {"binary_data_size": tensor.nbytes}
        else:
            spec["data"] = tensor.ravel().tolist()
        header = json.dumps({"inputs": [spec], "outputs": [output]}).encode()
        body, extra = header, ""
        if binary:
            body, extra = (
                header + tensor.tobytes(),
                f"Inference-Header-Content-Length: {len(header)}\r\n",
            )
        ctype = "application/octet-stream" if binary else "application/json"
        path = f"/v2/models/{model}/infer"
        actions.append(Action(http_request(path, body, ctype, port, extra_headers=extra), "good"))
    return actions
