"""The attack suite's server: `python -m serving` on loopback with two clients' keys.

Each test in this folder replays one attack of issue 20 against it (raw sockets where
the attack lives below HTTP) and asserts the defence; memory is the server PID's RSS.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.helpers.servers import Server, running
from tests.helpers.service import start_server

KEYS = {"alice": "alice-key-0123456789", "mallory": "mallory-key-0123456789"}
ATTACK_ENV = {
    "API_KEYS": ",".join(f"{name}:{key}" for name, key in KEYS.items()),
    "FEEDBACK_SECRET": "attack-suite-secret",
    "HEADER_READ_TIMEOUT_S": "2",
    "FIRST_BYTE_TIMEOUT_S": "1",
    "RATE_LIMIT": "1000/second",
    "STORE_WINDOW_TTL_S": "0",
    "STORE_FLUSH_MS": "20",
    "STORE_FEEDBACK_WAIT_S": "10",
    "INFERENCE_THREADS": "1",
    "INFERENCE_WORKERS": "1",
    "DECODE_THREADS": "1",
}


def headers(name: str) -> dict[str, str]:
    return {"X-API-Key": KEYS[name]}


def rss_mib(pid: int) -> float:
    """Resident memory of a process, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


def connect(server: Server) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    sock.settimeout(10)
    return sock


def closed_by_server(sock: socket.socket) -> bool:
    """True once the server has closed (or reset) the connection."""
    try:
        return sock.recv(65536) == b"" or closed_by_server(sock)
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False


@pytest.fixture(scope="module")
def server(bundle_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    work = tmp_path_factory.mktemp("attacks")
    with running(start_server(bundle_dir, work, **ATTACK_ENV)) as started:
        yield started


@pytest.fixture(scope="module")
def http(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        yield client
