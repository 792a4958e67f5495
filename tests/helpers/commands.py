"""Subprocesses as the user runs them: this venv's tools first, no inherited DVC state."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path


def venv_env() -> dict[str, str]:
    """Environment for subprocesses: this interpreter's bin first, no DVC_/MLFLOW_ leaks."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DVC_", "MLFLOW_"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run(cmd: list[str], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run a command; on failure raise with the tail of its output, so the test says why.

    The command gets its own process group, and a timeout kills the whole group: `dvc exp
    run` starts each stage as a child, which would otherwise outlive it and keep training.
    """
    process = subprocess.Popen(
        cmd,
        cwd=cwd,
        env=venv_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        raise AssertionError(
            f"{' '.join(cmd)} took over {timeout:.0f} s:\n{stdout[-4000:]}\n{stderr[-4000:]}"
        ) from None
    result = subprocess.CompletedProcess(cmd, process.returncode, stdout, stderr)
    if result.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} failed ({result.returncode}):\n"
            f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
        )
    return result
