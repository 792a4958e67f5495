"""A real PostgreSQL server for tests: initdb into a temporary folder, start on a free
loopback port, stop by PID.

The server binaries come from `pg_config --bindir` or /usr/lib/postgresql/*/bin (Debian's
15, Ubuntu's 16). PostgreSQL refuses to run as root, so as root the cluster belongs to the
`postgres` user (or `nobody`) and the processes run as that user.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.helpers.servers import free_port


def postgres_bindir() -> Path | None:
    """The folder holding `initdb` and `postgres`, or None when PostgreSQL is not installed."""
    candidates: list[Path] = []
    if shutil.which("pg_config"):
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True)
        candidates.append(Path(out.stdout.strip()))
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    for folder in candidates:
        if (folder / "initdb").is_file() and (folder / "postgres").is_file():
            return folder
    return None


def _run_as() -> pwd.struct_passwd | None:
    """The unprivileged user the server runs as when the tests run as root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise RuntimeError("running as root and neither a 'postgres' nor a 'nobody' user exists")


@dataclass
class PostgresServer:
    """One cluster in its own folder; `start()` and `stop()` may be called repeatedly."""

    bindir: Path
    port: int = field(default_factory=free_port)
    user: str = "store"
    password: str = "store-pass"
    database: str = "postgres"
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="pg-test-")))
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"postgresql://{self.user}:{self.password}@127.0.0.1:{self.port}/{self.database}"

    @property
    def data(self) -> Path:
        return self.root / "data"

    def _popen_kwargs(self) -> dict:
        owner = _run_as()
        return {"user": owner.pw_uid, "group": owner.pw_gid} if owner else {}

    def init(self) -> None:
        """initdb with password authentication for the test user on loopback."""
        owner = _run_as()
        if owner:
            os.chown(self.root, owner.pw_uid, owner.pw_gid)
        pwfile = self.root / "pwfile"
        pwfile.write_text(self.password + "\n")
        if owner:
            os.chown(pwfile, owner.pw_uid, owner.pw_gid)
        cmd = [str(self.bindir / "initdb"), "-D", str(self.data), "-U", self.user,
               "--pwfile", str(pwfile), "--auth", "scram-sha-256", "-E", "UTF8", "--no-sync"]  # fmt: skip
        done = subprocess.run(cmd, capture_output=True, text=True, **self._popen_kwargs())
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed:\n{done.stdout}\n{done.stderr}")

    def start(self, timeout: float = 30) -> None:
        """Start the server on 127.0.0.1:`port` and wait until it accepts connections."""
        if not self.data.is_dir():
            self.init()
        log = (self.root / "server.log").open("ab")
        self.process = subprocess.Popen(
            [str(self.bindir / "postgres"), "-D", str(self.data), "-p", str(self.port),
             "-h", "127.0.0.1", "-k", str(self.root), "-c", "max_connections=50"],
            stdout=log, stderr=subprocess.STDOUT, **self._popen_kwargs(),
        )  # fmt: skip
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"postgres exited early:\n{self.log_tail()}")
            if self.accepts_connections():
                return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"postgres did not start in {timeout} s:\n{self.log_tail()}")

    def accepts_connections(self) -> bool:
        import psycopg

        try:
            with psycopg.connect(self.url, connect_timeout=2):
                return True
        except psycopg.OperationalError:
            return False

    def stop(self, mode: int = signal.SIGINT, timeout: float = 30) -> None:
        """Stop by PID: SIGINT is PostgreSQL's fast shutdown, SIGQUIT its immediate one."""
        if self.process is None or self.process.poll() is not None:
            return
        os.kill(self.process.pid, mode)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def log_tail(self, n: int = 3000) -> str:
        path = self.root / "server.log"
        return path.read_text(errors="replace")[-n:] if path.exists() else ""

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def new_database(server: PostgresServer) -> str:
    """A fresh, empty database on `server`; its URL."""
    import uuid

    import psycopg

    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server.url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return server.url.rsplit("/", 1)[0] + f"/{name}"


@contextmanager
def running_postgres() -> Iterator[PostgresServer]:
    """A started server, removed afterwards; skips the test where PostgreSQL is absent."""
    bindir = postgres_bindir()
    if bindir is None:
        pytest.skip("no PostgreSQL server binaries found (apt-get install postgresql)")
    server = PostgresServer(bindir)
    server.start()
    try:
        yield server
    finally:
        server.remove()
