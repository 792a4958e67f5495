"""Service settings, read once from environment variables.

Every knob has a safe default so `uvicorn serving.app:app` works with no configuration;
docs/serving.md lists each variable. `ENV` maps each setting to its variable.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from contracts.imaging import ALLOWED_FORMATS
from serving.store.config import StoreConfig


def available_cpus() -> int:
    """CPUs this process may really use: the affinity mask capped by a cgroup CPU quota.

    os.cpu_count() reports the host's cores, which oversubscribes a container limited to
    two CPUs and makes ONNX Runtime's threads fight each other.
    """
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cpus = cpus or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if quota != "max":
            cpus = min(cpus, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return cpus


@dataclass(frozen=True)
class Settings:
    """All runtime settings of the service (see docs/serving.md for each variable)."""

    model_dir: Path = Path("models/export")
    host: str = "0.0.0.0"
    port: int = 8000
    log_level: str = "info"
    api_key: str = ""
    # -- what one request may bring
    max_bytes: int = 10 * 1024 * 1024
    max_pixels: int = 40_000_000
    max_decoded_bytes: int = 64 * 1024 * 1024
    min_side: int = 16
    allowed_formats: frozenset[str] = ALLOWED_FORMATS
    max_request_bytes: int = 16 * 1024 * 1024
    max_batch_files: int = 32
    request_timeout_s: float = 10.0
    body_read_timeout_s: float = 10.0
    # -- how much work the process takes on at once
    max_concurrent_requests: int = 64
    max_body_memory_bytes: int = 96 * 1024 * 1024
    decode_queue_max: int = 64
    queue_max: int = 256
    retry_after_s: int = 1
    # -- speed
    workers: int = 1
    inference_threads: int = field(default_factory=available_cpus)
    decode_threads: int = field(default_factory=available_cpus)
    batch_max_size: int = 4
    batch_max_wait_ms: float = 0.0
    draft_decode: bool = True
    # -- records: predictions and feedback go to the shared store (DATABASE_URL, STORE_*)
    store: StoreConfig = field(default_factory=StoreConfig)
    explain_grid: int = 7
    shutdown_grace_s: float = 20.0

    @classmethod
    def from_env(cls, **overrides: object) -> Settings:
        """Build settings from the environment; keyword overrides win (used by tests)."""
        values: dict[str, object] = {"store": StoreConfig.from_env()}
        for f in dataclasses.fields(cls):
            if f.name not in ENV:
                continue  # the store reads its own variables (serving/store/config.py)
            raw = os.environ.get(ENV[f.name])
            # An empty string is meaningful for a string setting (API_KEY= turns auth off).
            if raw is None or (not raw.strip() and not isinstance(getattr(cls, f.name), str)):
                continue
            try:
                values[f.name] = parse(f.name, raw.strip())
            except ValueError as exc:
                raise ValueError(f"{ENV[f.name]}={raw!r} is not a valid value: {exc}") from exc
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]

    @property
    def single_image_body_limit(self) -> int:
        """Body cap for one-image routes: the image, base64's 4/3 growth, and form overhead."""
        return self.max_bytes * 4 // 3 + 64 * 1024


# Setting -> environment variable.
ENV: dict[str, str] = {
    "model_dir": "MODEL_DIR", "host": "HOST", "port": "PORT", "log_level": "LOG_LEVEL",
    "api_key": "API_KEY", "max_bytes": "MAX_IMAGE_BYTES", "max_pixels": "MAX_IMAGE_PIXELS",
    "max_decoded_bytes": "MAX_DECODED_BYTES",
    "min_side": "MIN_IMAGE_SIDE", "allowed_formats": "ALLOWED_FORMATS",
    "max_request_bytes": "MAX_REQUEST_BYTES", "max_batch_files": "MAX_BATCH_FILES",
    "request_timeout_s": "REQUEST_TIMEOUT_S", "body_read_timeout_s": "BODY_READ_TIMEOUT_S",
    "max_concurrent_requests": "MAX_CONCURRENT_REQUESTS",
    "max_body_memory_bytes": "MAX_BODY_MEMORY_BYTES",
    "decode_queue_max": "DECODE_QUEUE_MAX", "queue_max": "QUEUE_MAX",
    "retry_after_s": "RETRY_AFTER_S", "inference_threads": "INFERENCE_THREADS", "workers": "WORKERS",
    "decode_threads": "DECODE_THREADS", "batch_max_size": "BATCH_MAX_SIZE",
    "batch_max_wait_ms": "BATCH_MAX_WAIT_MS", "draft_decode": "DRAFT_DECODE",
    "explain_grid": "EXPLAIN_GRID", "shutdown_grace_s": "SHUTDOWN_GRACE_S",
}  # fmt: skip


def parse(name: str, raw: str) -> object:
    """One variable's text as its setting's type (the type of the setting's default)."""
    default = getattr(Settings, name, None)
    if name in ("inference_threads", "decode_threads"):
        return int(raw)
    if name == "allowed_formats":
        return frozenset(f.strip().upper() for f in raw.split(",") if f.strip())
    if name == "log_level":
        return raw.lower()
    if isinstance(default, bool):
        return raw.lower() in ("1", "true", "yes", "on")
    if isinstance(default, Path):
        return Path(raw)
    if isinstance(default, int | float):
        return type(default)(raw)
    return raw
