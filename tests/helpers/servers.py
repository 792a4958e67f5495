"""Real servers in subprocesses on 127.0.0.1: a free port, a health wait, a stop by PID.

Every test that needs a server (the prediction service, the Dockerfile's command,
moto's S3 API, ...) starts it through `start_server` or the `serving` context manager,
so each gets the same guarantees: loopback only, logs kept for the failure message,
SIGTERM first and SIGKILL only when it does not exit.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from loadtest.processes import free_port

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self, tail: int = 4000) -> str:
        """The end of what the server printed, for failure messages."""
        return self.log_path.read_text(errors="replace")[-tail:]

    def log_lines(self) -> list[dict]:
        """Every output line parsed as JSON (`python -m serving` logs JSON only)."""
        return [json.loads(line) for line in self.log_path.read_text().splitlines()]

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM by PID, SIGKILL if it has not exited after `timeout` s; the exit code."""
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                return self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
        return self.process.wait(timeout=10)


def http_status(url: str, timeout: float = 2) -> int | None:
    """The status code of a GET, or None when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return None


def start_server(
    command: list[str],
    port: int,
    log_path: Path,
    *,
    env: dict[str, str] | None = None,
    cwd: Path = ROOT,
    health_path: str = "/health/ready",
    healthy: Callable[[int], bool] = lambda status: status == 200,
    timeout: float = 60,
) -> Server:
    """Start `command` (which listens on `port`, from `free_port()`) and wait for health.

    Raises RuntimeError with the server's output when it exits early or never answers
    `health_path` healthily (and then stops it by PID).
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
    server = Server(process, port, log_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{server.output()}")
        status = http_status(server.url + health_path)
        if status is not None and healthy(status):
            return server
        time.sleep(0.2)
    server.stop()
    raise RuntimeError(f"{health_path} not healthy after {timeout:.0f} s:\n{server.output()}")


@contextmanager
def running(server: Server) -> Iterator[Server]:
    """Stop the server by PID when the block ends, whatever happens in it."""
    try:
        yield server
    finally:
        server.stop()


def start_service(bundle_dir: Path, workdir: Path, **env: str) -> Server:
    """The prediction service (`python -m serving`, as the image runs it) over `bundle_dir`,
    ready to answer; further settings from `env`."""
    port = free_port()
    environment = {
        **os.environ,
        "MODEL_DIR": str(bundle_dir),
        "LOG_LEVEL": "info",
        # Its own SQLite store unless a test names one: never a store left by another run.
        "STORE_PATH": str(workdir / f"store-{port}.sqlite3"),
        "DATABASE_URL": "",
        # Tests start the service without a key on purpose; one that passes API_KEY runs
        # with authentication on (the switch is then ignored and says so).
        "AUTH_DISABLED": "false" if env.get("API_KEY") else "true",
        **env,
        "HOST": "127.0.0.1",
        "PORT": str(port),
    }
    log_path = workdir / f"server-{port}.log"
    return start_server([sys.executable, "-m", "serving"], port, log_path, env=environment)


@contextmanager
def serving(bundle_dir: Path, workdir: Path, **env: str) -> Iterator[Server]:
    """`with serving(bundle, tmp) as server:` a ready service, stopped by PID afterwards."""
    with running(start_service(bundle_dir, workdir, **env)) as server:
        yield server
