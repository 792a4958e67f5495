"""TEMPORARY until the shared harness (tests/helpers/servers.py) is merged."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> int:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                return self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
        return self.process.wait(timeout=10)


def start_service(bundle_dir: Path, workdir: Path, **env: str) -> Server:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log_path = workdir / f"server-{port}.log"
    environment = {**os.environ, "MODEL_DIR": str(bundle_dir), "HOST": "127.0.0.1",
                   "PORT": str(port), "STORE_PATH": str(workdir / f"store-{port}.sqlite3"),
                   "DATABASE_URL": "", **env}  # fmt: skip
    with log_path.open("wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "serving"], cwd=ROOT, env=environment,
                                   stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    server = Server(process, port, log_path)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{server.url}/health/ready", timeout=1).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    server.stop()
    raise RuntimeError(log_path.read_text())
