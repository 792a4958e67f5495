"""Limits that only a real server shows: clients that stall or vanish mid-upload.

`python -m serving` on 127.0.0.1; raw sockets send half a body, then wait or close.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.helpers.servers import Server
from tests.helpers.service import PHOTOS, read_http_response, start_server

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(bundle_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = start_server(bundle_dir, tmp_path_factory.mktemp("limits"), BODY_READ_TIMEOUT_S="1")
    yield running
    running.stop()


def half_upload(server: Server, photo: bytes) -> socket.socket:
    """A raw image/jpeg POST whose Content-Length promises twice what is sent."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    head = (
        f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/jpeg\r\n"
        f"Content-Length: {2 * len(photo)}\r\n\r\n"
    ).encode()
    sock.sendall(head + photo)
    return sock


def log_lines(server: Server) -> list[dict]:
    return [json.loads(line) for line in server.log_path.read_text().splitlines() if line]


def test_a_client_that_vanishes_mid_upload_leaves_no_500(server: Server) -> None:
    photo = PHOTOS[0].read_bytes()
    for _ in range(3):
        half_upload(server, photo).close()
    deadline = time.monotonic() + 10
    while len([x for x in log_lines(server) if x.get("status") == 499]) < 3:
        assert time.monotonic() < deadline, server.log_path.read_text()[-2000:]
        time.sleep(0.1)
    lines = log_lines(server)
    assert not [x for x in lines if x.get("level") == "error" or "exception" in x]
    assert not [x for x in lines if x.get("status", 0) >= 500 and x.get("status") != 499]
    assert httpx.post(f"{server.url}/predict", content=photo,
                      headers={"content-type": "image/jpeg"}).status_code == 200  # fmt: skip


def test_a_body_that_stalls_gets_408(server: Server) -> None:
    sock = half_upload(server, PHOTOS[1].read_bytes())
    started = time.monotonic()
    status, _, body = read_http_response(sock)
    sock.close()
    assert status == 408, body
    assert json.loads(body)["reason"] == "body_timeout"
    assert time.monotonic() - started < 5


def test_a_v2_binary_body_that_stalls_gets_408(server: Server, bundle_dir: Path) -> None:
    """Binary tensor data is read under the same body deadline as any upload."""
    manifest = json.loads((bundle_dir / "model.json").read_text())
    size = manifest["input"]["size"]
    data = bytes(3 * size * size * 4)  # one FP32 image of zeros
    tensor = {"name": "image", "datatype": "FP32", "shape": [1, 3, size, size],
              "parameters": {"binary_data_size": len(data)}}  # fmt: skip
    header = json.dumps({"inputs": [tensor]}).encode()
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    sock.sendall(
        f"POST /v2/models/{manifest['name']}/infer HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Inference-Header-Content-Length: {len(header)}\r\n"
        f"Content-Length: {len(header) + len(data)}\r\n\r\n".encode()
        + header
        + data[: len(data) // 2]
    )
    status, _, body = read_http_response(sock)
    sock.close()
    assert (status, json.loads(body)["reason"]) == (408, "body_timeout"), body
