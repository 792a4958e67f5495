"""Every request is bounded before work starts: the triggers of issue 9, each a regression test.

A client can get a 4xx, or a 503 with Retry-After when the server is busy, never a 5xx.
"""

from __future__ import annotations

import base64
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from serving.routes.uploads import printable_filename
from tests.helpers.service import PHOTOS, encode, model_name, upload

BOMB_SIDE = 6320  # just under the 40 M pixel limit


@pytest.fixture(scope="module")
def png_bombs() -> dict[str, bytes]:
    """Small real PNG files that decode to hundreds of MB (16-bit grey and RGBA)."""
    gray16 = Image.new("I;16", (BOMB_SIDE, BOMB_SIDE), 1000)
    rgba = Image.new("RGBA", (BOMB_SIDE, BOMB_SIDE), (200, 120, 40, 128))
    return {"16-bit grey": encode(gray16, "PNG"), "RGBA": encode(rgba, "PNG")}


@pytest.fixture(scope="module")
def slow_jpeg() -> bytes:
    """A 12 MP JPEG: decoding it in full (draft mode off) takes tens of milliseconds."""
    photo = Image.open(PHOTOS[0]).convert("RGB").resize((4000, 3000))
    return encode(photo, "JPEG", quality=85)


def v2(client: TestClient, bundle_dir: Path, body: bytes | dict):
    url = f"/v2/models/{model_name(bundle_dir)}/infer"
    if isinstance(body, dict):
        return client.post(url, json=body)
    return client.post(url, content=body, headers={"content-type": "application/json"})


def raw_fp32(size: int, data: str) -> bytes:
    """An FP32 request for one image whose data is written as raw JSON text."""
    shape = f"[1,3,{size},{size}]"
    return f'{{"inputs":[{{"name":"image","datatype":"FP32","shape":{shape},"data":[{data}]}}]}}'.encode()


def fp32_input(shape: list, data: object) -> dict:
    return {"inputs": [{"name": "image", "datatype": "FP32", "shape": shape, "data": data}]}


def test_v2_tensors_that_once_gave_500_are_refused(client: TestClient, bundle_dir: Path) -> None:
    size = client.get("/model-info").json()["input"]["size"]
    values = size * size * 3
    huge = "1" * 400
    bodies = {
        "shape product wraps to 0": (fp32_input([18014398509481984, 3, size, size], []), 413),
        "400-digit dimension": (
            f'{{"inputs":[{{"name":"image","datatype":"FP32","shape":[1,3,{size},{huge}],'
            '"data":[]}]}'.encode(), 400),
        "negative count": (fp32_input([-1, 3, size, size], []), 400),
        "400-digit value": (raw_fp32(size, "0," * (values - 1) + huge), 400),
        "NaN": (raw_fp32(size, "0," * (values - 1) + "NaN"), 400),
        "strings": (fp32_input([1, 3, size, size], ["0.5"] * values), 400),
        # The typed schema (numbers or strings, one flat list) refuses these before any work.
        "booleans": (fp32_input([1, 3, size, size], [True] * values), 422),
        "nested lists": (fp32_input([1, 3, size, size], [[0.5] * size] * (3 * size)), 422),
        "short data": (fp32_input([1, 3, size, size], [0.5] * 10), 400),
        "unhashable output name": ({**fp32_input([1, 3, size, size], [0.5] * values),
                                    "outputs": [{"name": [1]}]}, 422),
        "unknown output name": ({**fp32_input([1, 3, size, size], [0.5] * values),
                                 "outputs": [{"name": "logits"}]}, 400),
        "two inputs": ({"inputs": fp32_input([1, 3, size, size], [0.5] * values)["inputs"] * 2},
                       422),
    }  # fmt: skip
    before = client.get("/stats").json()["predictions"]
    for case, (body, status) in bodies.items():
        response = v2(client, bundle_dir, body)
        assert response.status_code == status, f"{case}: {response.text[:300]}"
        assert response.json()["reason"], case
    assert client.get("/stats").json()["predictions"] == before  # nothing was served
    assert client.get("/v2/health/ready").status_code == 200


def test_v2_fp32_images_share_the_batcher_and_the_image_limit(
    fresh_app_client, bundle_dir: Path
) -> None:
    app_client = fresh_app_client(max_batch_files=3, batch_max_size=2)
    size = app_client.get("/model-info").json()["input"]["size"]
    rng = np.random.default_rng(0)
    tensor = rng.random((3, 3, size, size), dtype=np.float32)
    ok = v2(app_client, bundle_dir, fp32_input(list(tensor.shape), tensor.ravel().tolist()))
    assert ok.status_code == 200, ok.text[:300]
    assert ok.json()["outputs"][0]["shape"] == [3, 2]
    metrics = app_client.get("/metrics").text
    # 3 images through the micro-batcher in chunks of at most 2 (plus the warm-up).
    assert "inference_batch_size_count 3.0" in metrics
    four = np.zeros((4, 3, size, size), dtype=np.float32)
    refused = v2(app_client, bundle_dir, fp32_input(list(four.shape), four.ravel().tolist()))
    assert (refused.status_code, refused.json()["reason"]) == (413, "too_many_files")


def test_v2_body_over_the_cap_is_refused_before_parsing(fresh_app_client, bundle_dir) -> None:
    app_client = fresh_app_client(max_request_bytes=1024 * 1024)
    body = json.dumps(fp32_input([8, 3, 224, 224], [0.5] * (8 * 3 * 224 * 224))).encode()
    response = v2(app_client, bundle_dir, body)
    assert (response.status_code, response.json()["reason"]) == (413, "body_too_large")


@pytest.mark.parametrize("kind", ["16-bit grey", "RGBA"])
def test_png_bombs_are_refused_from_the_header(
    client: TestClient, png_bombs: dict[str, bytes], kind: str
) -> None:
    data = png_bombs[kind]
    assert len(data) < 400_000  # a small upload...
    started = time.perf_counter()
    response = upload(client, data, name="bomb.png", ctype="image/png")
    elapsed = time.perf_counter() - started
    assert response.status_code == 413, response.text  # ...that would decode to >100 MB
    assert response.json()["reason"] == "too_many_bytes_decoded"
    assert "MiB" in response.json()["error"]
    assert elapsed < 1.0, f"refusing took {elapsed:.2f} s: the pixels were decoded"


def test_a_small_transparent_png_is_still_served(client: TestClient) -> None:
    rgba = Image.open(PHOTOS[1]).convert("RGBA")
    assert upload(client, encode(rgba, "PNG"), ctype="image/png").status_code == 200


def concurrent_statuses(app_client: TestClient, data: bytes, count: int) -> list:
    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(lambda _: upload(app_client, data), range(count)))


def test_full_decode_queue_answers_503_with_retry_after(fresh_app_client, slow_jpeg) -> None:
    app_client = fresh_app_client(
        decode_threads=1, decode_queue_max=1, draft_decode=False, retry_after_s=3
    )
    responses = concurrent_statuses(app_client, slow_jpeg, 8)
    statuses = {r.status_code for r in responses}
    assert statuses <= {200, 503} and 200 in statuses and 503 in statuses, statuses
    busy = next(r for r in responses if r.status_code == 503)
    assert busy.json()["reason"] == "decode_queue_full"
    assert busy.headers["retry-after"] == "3"


def test_concurrent_request_cap_answers_503_and_spares_the_probes(
    fresh_app_client, slow_jpeg
) -> None:
    app_client = fresh_app_client(max_concurrent_requests=1, draft_decode=False)
    with ThreadPoolExecutor(9) as pool:
        uploads = [pool.submit(upload, app_client, slow_jpeg) for _ in range(8)]
        probe = pool.submit(app_client.get, "/health/ready")
        responses = [u.result() for u in uploads]
        assert probe.result().status_code == 200
    busy = [r for r in responses if r.status_code == 503]
    assert busy and {r.status_code for r in responses} <= {200, 503}
    assert busy[0].json()["reason"] == "too_many_requests" and busy[0].headers["retry-after"]


def test_bodies_in_flight_are_bounded_by_their_memory(fresh_app_client, slow_jpeg) -> None:
    budget = len(slow_jpeg) * 3 // 2  # room for one upload of it, not two
    app_client = fresh_app_client(max_body_memory_bytes=budget, draft_decode=False)
    assert upload(app_client, slow_jpeg).status_code == 200
    responses = concurrent_statuses(app_client, slow_jpeg, 8)
    busy = [r for r in responses if r.status_code == 503]
    assert busy and {r.status_code for r in responses} <= {200, 503}
    assert busy[0].json()["reason"] == "body_memory_full" and busy[0].headers["retry-after"]
    alone = fresh_app_client(max_body_memory_bytes=1)  # a request alone is always let in
    assert upload(alone, slow_jpeg).status_code == 200


def test_lone_surrogates_never_give_a_server_error(client: TestClient, bundle_dir) -> None:
    photo = PHOTOS[0].read_bytes()
    body = (
        b'--b\r\nContent-Disposition: form-data; name="files"; filename="a\xed\xa0\x80.jpg"'
        b"\r\nContent-Type: image/jpeg\r\n\r\n" + photo + b"\r\n--b--\r\n"
    )
    batch = client.post(
        "/predict/batch", content=body, headers={"content-type": "multipart/form-data; boundary=b"}
    )
    assert batch.status_code == 200
    image = base64.b64encode(photo).decode()
    v2_body = '{"id": "\\ud800", "inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "data": ["%s"]}]}'
    assert v2(client, bundle_dir, (v2_body % image).encode()).status_code == 422
    feedback = b'{"request_id": "\\udc80x", "feedback_token": "00", "label": "cat"}'
    response = client.post(
        "/feedback", content=feedback, headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    assert json.dumps(printable_filename("cat\ud800.jpg"), ensure_ascii=False).encode()


def test_the_inference_loop_killed_turns_not_ready_then_recovers(fresh_app_client) -> None:
    app_client = fresh_app_client()
    batcher = app_client.app.state.serving.engine.batcher
    data = PHOTOS[0].read_bytes()

    def die(*_: object) -> None:  # as np.concatenate did: MemoryError outside the try
        raise MemoryError("simulated")

    batcher._take_batch = die  # the next batch kills the loop task itself
    failed = upload(app_client, data)
    assert failed.status_code == 503 and failed.json()["reason"] == "inference_unavailable"
    assert failed.headers["retry-after"]
    ready = app_client.get("/health/ready")
    assert ready.status_code == 503 and "inference loop" in ready.json()["why"]
    assert app_client.get("/health/live").status_code == 200  # one death: restart, not exit
    del batcher._take_batch
    deadline = time.monotonic() + 10
    while app_client.get("/health/ready").status_code != 200:
        assert time.monotonic() < deadline, "the inference loop did not restart"
        time.sleep(0.1)
    assert upload(app_client, data).status_code == 200
    # Killed from outside (cancelled), it restarts too.
    app_client.portal.call(lambda: batcher._task.cancel())
    deadline = time.monotonic() + 10
    while app_client.get("/health/ready").status_code != 200:
        assert time.monotonic() < deadline, "the inference loop did not restart after cancel"
        time.sleep(0.1)
    assert upload(app_client, data).status_code == 200


def test_a_loop_that_keeps_dying_fails_liveness(fresh_app_client) -> None:
    app_client = fresh_app_client()
    batcher = app_client.app.state.serving.engine.batcher
    batcher.restart_delay_s = 0.05

    def die(*_: object) -> None:
        raise MemoryError("simulated")

    batcher._take_batch = die
    deadline = time.monotonic() + 20
    while not batcher.gave_up:
        assert time.monotonic() < deadline, "the batcher never gave up"
        upload(app_client, PHOTOS[0].read_bytes())
        time.sleep(0.06)
    assert app_client.get("/health/live").status_code == 503
    assert app_client.get("/v2/health/live").json() == {"live": False}
    assert app_client.get("/health/ready").status_code == 503


def test_image_contract_budget_counts_mode_and_depth() -> None:
    from contracts.imaging import decoding_cost

    side = (1000, 1000)
    assert decoding_cost(side, "L") < decoding_cost(side, "I;16") < decoding_cost(side, "RGBA")
    assert decoding_cost(side, "RGB") == 4_000_000
