"""The load-test clients against a real HTTP server on 127.0.0.1, and what they send.

The server is the standard library's (it answers POST with 501), started and stopped by
PID with loadtest.processes, so the tally, the process-tree figures and the stop are
checked on a real process without a model.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from email.parser import BytesParser
from pathlib import Path

import pytest

from loadtest.clients import run_clients, summary
from loadtest.payloads import BOUNDARY, good_photos
from loadtest.processes import PeakMemory, free_port, start, stop, tree_cpu_s, tree_rss_mb
from tests.helpers.photos import FULLRES_DIR


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[tuple[subprocess.Popen, int]]:
    port = free_port()
    command = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"]
    process = start(command, f"http://127.0.0.1:{port}/", {}, tmp_path)
    try:
        yield process, port
    finally:
        stop(process)
    assert process.poll() is not None  # stopped by PID, not left behind


def test_a_photo_upload_is_a_whole_multipart_request() -> None:
    photo = FULLRES_DIR / "cat.1.jpg"
    (action,) = good_photos([photo], port=8000)
    head, _, body = action.payload.partition(b"\r\n\r\n")
    assert head.startswith(b"POST /predict HTTP/1.1\r\n")
    assert f"Content-Length: {len(body)}".encode() in head
    message = BytesParser().parsebytes(
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n\r\n".encode() + body
    )
    (part,) = message.get_payload()
    assert part.get_filename() == "cat.1.jpg"
    assert part.get_payload(decode=True) == photo.read_bytes()


def test_clients_tally_every_answer_of_a_real_server(http_server) -> None:
    process, port = http_server
    actions = good_photos(sorted(FULLRES_DIR.glob("*.jpg"))[:3], port)
    cpu_before = tree_cpu_s(process.pid)
    with PeakMemory(process.pid) as memory:
        tally, elapsed = asyncio.run(run_clients(port, [(actions, 2)], duration=1.0))
    answered = tally.statuses["good"]
    assert set(answered) == {501}  # http.server has no POST
    row = summary(tally, elapsed)
    assert row["server_errors"] == answered[501] > 0
    assert row["good_not_200"] == answered[501] and row["good_rps"] == 0
    # http.server (HTTP/1.0) hangs up after each answer: the clients count that and
    # reconnect, so two clients get far more than two answers.
    assert tally.transport_errors > 0 and answered[501] > 10
    assert memory.peak > 1.0 and tree_rss_mb(process.pid) > 1.0
    assert tree_cpu_s(process.pid) > cpu_before


def test_a_server_that_exits_at_start_is_reported(tmp_path: Path) -> None:
    command = [sys.executable, "-c", "raise SystemExit(3)"]
    with pytest.raises(RuntimeError, match="exited with 3"):
        start(command, f"http://127.0.0.1:{free_port()}/", {}, tmp_path)
