"""CPU seconds per stage of the request path, from per-thread CPU clocks.

The benchmark splits a request's CPU cost into decode, inference and recording from
these counters (`stage_cpu_seconds_total` on /metrics) and calls the rest of the
process's CPU "HTTP, JSON and the rest". Each stage runs in threads of its own, so
`time.thread_time()` around its work is exact and cheap; ONNX Runtime's own pool
threads (native, no Python code) are counted whole from /proc.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")
STAGES = ("decode", "inference", "recording")
_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def native_threads() -> set[int]:
    """The kernel thread ids of this process (empty where there is no /proc)."""
    try:
        return {int(t) for t in os.listdir("/proc/self/task")}
    except OSError:
        return set()


def thread_cpu_s(tid: int) -> float:
    """User + system CPU seconds of one thread of this process (0 once it is gone)."""
    try:
        fields = Path(f"/proc/self/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICKS


class StageCpu:
    """Thread-safe CPU seconds per stage; `totals()` adds the adopted native threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seconds = dict.fromkeys(STAGES, 0.0)
        self._adopted: dict[str, set[int]] = {stage: set() for stage in STAGES}

    def add(self, stage: str, seconds: float) -> None:
        with self._lock:
            self._seconds[stage] = self._seconds.get(stage, 0.0) + seconds

    @contextmanager
    def measure(self, stage: str) -> Iterator[None]:
        """Count the calling thread's CPU time inside the block to `stage`."""
        began = time.thread_time()
        try:
            yield
        finally:
            self.add(stage, time.thread_time() - began)

    def timed(self, stage: str, func: Callable[..., T]) -> Callable[..., T]:
        """`func`, counting the CPU time of each call to `stage` (for executor jobs)."""

        def run(*args: object) -> T:
            with self.measure(stage):
                return func(*args)

        return run

    def adopt(self, stage: str, tids: set[int]) -> None:
        """Native threads whose whole CPU time belongs to `stage` (ONNX Runtime's pool)."""
        with self._lock:
            self._adopted.setdefault(stage, set()).update(tids)

    def totals(self) -> dict[str, float]:
        with self._lock:
            seconds = dict(self._seconds)
            adopted = {stage: set(tids) for stage, tids in self._adopted.items()}
        for stage, tids in adopted.items():
            seconds[stage] = seconds.get(stage, 0.0) + sum(thread_cpu_s(t) for t in tids)
        return seconds
