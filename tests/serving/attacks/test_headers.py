"""Attack 2: endless, unfinished and trickled request heads, all without a key."""

from __future__ import annotations

import contextlib
import time

from tests.helpers.servers import Server
from tests.helpers.service import read_http_response
from tests.serving.attacks.conftest import closed_by_server, connect, rss_mib

MIB = 2**20


def _send_head_bytes(server: Server, total: int) -> bool:
    """Send `total` bytes of one unfinished header; True when the server cut it short."""
    sock = connect(server)
    line = b"X-Filler: " + b"a" * (64 * 1024 - 12) + b"\r\n"
    with contextlib.closing(sock):
        sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: x\r\n")
        sent = 0
        try:
            while sent < total:
                sock.sendall(line)
                sent += len(line)
        except (BrokenPipeError, ConnectionResetError):
            return True
        return closed_by_server(sock)


def test_a_16_mb_header_is_refused(server: Server) -> None:
    sock = connect(server)
    with contextlib.closing(sock):
        head = b"GET /health/live HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 16 * MIB + b"\r\n\r\n"
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(head)
        try:
            status, _, _ = read_http_response(sock)
        except (ConnectionError, OSError):
            status = None  # closed without an answer: refused as well
    assert status in (400, 431, None)


def test_unfinished_50_mb_headers_take_no_memory(server: Server) -> None:
    """Four connections each sending 50 MB of one unfinished header (the review took RSS
    from 145 to 336 MiB): each is cut off at MAX_HEADER_BYTES, and RSS stays put."""
    before = rss_mib(server.process.pid)
    cut = [_send_head_bytes(server, 50 * MIB) for _ in range(4)]
    after = rss_mib(server.process.pid)
    assert all(cut)
    assert after - before < 20, f"RSS {before:.0f} -> {after:.0f} MiB"


def test_a_trickled_header_is_dropped_at_the_header_deadline(server: Server) -> None:
    """One header line every 0.2 s for up to 20 s: the server (HEADER_READ_TIMEOUT_S=2)
    closes the connection long before the head could end."""
    sock = connect(server)
    with contextlib.closing(sock):
        sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: x\r\n")
        sock.settimeout(0.2)
        dropped = False
        for i in range(100):
            try:
                sock.sendall(f"X-Trickle-{i}: a\r\n".encode())
            except (BrokenPipeError, ConnectionResetError):
                dropped = True
                break
            if closed_by_server(sock):
                dropped = True
                break
            time.sleep(0.01)
    assert dropped, "a trickled request head was still being read after 20 s"
    assert connect_and_get_live(server) == 200  # the server itself is fine


def connect_and_get_live(server: Server) -> int:
    sock = connect(server)
    with contextlib.closing(sock):
        sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        return read_http_response(sock)[0]
