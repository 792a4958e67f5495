"""Where the service's CPU goes: no idle BLAS threads, and per-stage CPU clocks."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

from serving.cpu_stages import StageCpu, native_threads
from tests.helpers.service import ROOT

COUNT_THREADS = (
    "import os, serving, numpy as np\n"
    "np.ones((256, 256)) @ np.ones((256, 256))\n"
    "print(len(os.listdir('/proc/self/task')))\n"
)


def test_the_service_package_keeps_openblas_to_the_calling_thread() -> None:
    """OpenBLAS's spinning workers once cost more CPU than the graph: importing `serving`
    before NumPy (as `python -m serving` does) leaves the process a single thread."""
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    env["PYTHONPATH"] = str(ROOT)
    out = subprocess.run([sys.executable, "-c", COUNT_THREADS], env=env, cwd=ROOT,
                         capture_output=True, text=True, check=True)  # fmt: skip
    assert out.stdout.strip() == "1"


def test_stage_cpu_counts_measured_blocks_and_adopted_native_threads() -> None:
    cpu = StageCpu()
    with cpu.measure("decode"):
        sum(i * i for i in range(200_000))
    assert cpu.totals()["decode"] > 0
    assert cpu.totals()["inference"] == 0.0

    stop = threading.Event()
    ids: set[int] = set()

    def burn() -> None:
        ids.add(threading.get_native_id())
        while not stop.is_set():
            sum(i * i for i in range(10_000))

    before = native_threads()
    worker = threading.Thread(target=burn)
    worker.start()
    try:
        while not ids:
            stop.wait(0.01)
        assert ids <= native_threads() - before
        cpu.adopt("inference", ids)
        first = cpu.totals()["inference"]
        for _ in range(500):  # /proc counts in clock ticks: wait for the next one or two
            if cpu.totals()["inference"] > first:
                break
            stop.wait(0.02)
        assert cpu.totals()["inference"] > first
    finally:
        stop.set()
        worker.join()
    assert cpu.totals()["decode"] > 0 and cpu.totals()["recording"] == 0.0
