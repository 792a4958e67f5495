"""Service settings, read once from environment variables.

Every knob has a safe default so `uvicorn serving.app:app` works with no configuration;
docs/serving.md lists each variable.
"""

from __future__ import annotations

import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from serving.imaging import ALLOWED_FORMATS

DEFAULT_LOG_DIR = Path(tempfile.gettempdir()) / "cats-dogs-serving"


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


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    return int(raw) if raw else default


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    return float(raw) if raw else default


def _env_str(name: str, default: str) -> str:
    return os.environ.get(name, default).strip()


def _env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name, "").strip().lower()
    return default if not raw else raw in ("1", "true", "yes", "on")


@dataclass(frozen=True)
class Settings:
    """All runtime settings of the service (see docs/serving.md for each variable)."""

    model_dir: Path = Path("models/export")
    host: str = "0.0.0.0"
    port: int = 8000
    log_level: str = "info"
    api_key: str = ""
    max_bytes: int = 10 * 1024 * 1024
    max_pixels: int = 40_000_000
    min_side: int = 16
    allowed_formats: frozenset[str] = ALLOWED_FORMATS
    max_request_bytes: int = 64 * 1024 * 1024
    max_batch_files: int = 32
    inference_threads: int = field(default_factory=available_cpus)
    decode_threads: int = field(default_factory=available_cpus)
    batch_max_size: int = 4
    batch_max_wait_ms: float = 0.0
    queue_max: int = 256
    request_timeout_s: float = 10.0
    retry_after_s: int = 1
    draft_decode: bool = True
    prediction_log: str = str(DEFAULT_LOG_DIR / "predictions.jsonl")
    feedback_log: str = str(DEFAULT_LOG_DIR / "feedback.jsonl")
    log_max_bytes: int = 50 * 1024 * 1024
    log_backups: int = 5
    recent_window: int = 1000
    recent_ids: int = 10_000
    explain_grid: int = 7
    shutdown_grace_s: float = 20.0

    @classmethod
    def from_env(cls, **overrides: object) -> Settings:
        """Build settings from the environment; keyword overrides win (used by tests)."""
        formats = _env_str("ALLOWED_FORMATS", "")
        values: dict[str, object] = {
            "model_dir": Path(_env_str("MODEL_DIR", "models/export")),
            "host": _env_str("HOST", "0.0.0.0"),
            "port": _env_int("PORT", 8000),
            "log_level": _env_str("LOG_LEVEL", "info").lower(),
            "api_key": _env_str("API_KEY", ""),
            "max_bytes": _env_int("MAX_IMAGE_BYTES", cls.max_bytes),
            "max_pixels": _env_int("MAX_IMAGE_PIXELS", cls.max_pixels),
            "min_side": _env_int("MIN_IMAGE_SIDE", cls.min_side),
            "allowed_formats": (
                frozenset(f.strip().upper() for f in formats.split(",") if f.strip())
                if formats
                else ALLOWED_FORMATS
            ),
            "max_request_bytes": _env_int("MAX_REQUEST_BYTES", cls.max_request_bytes),
            "max_batch_files": _env_int("MAX_BATCH_FILES", cls.max_batch_files),
            "inference_threads": _env_int("INFERENCE_THREADS", available_cpus()),
            "decode_threads": _env_int("DECODE_THREADS", available_cpus()),
            "batch_max_size": _env_int("BATCH_MAX_SIZE", cls.batch_max_size),
            "batch_max_wait_ms": _env_float("BATCH_MAX_WAIT_MS", cls.batch_max_wait_ms),
            "queue_max": _env_int("QUEUE_MAX", cls.queue_max),
            "request_timeout_s": _env_float("REQUEST_TIMEOUT_S", cls.request_timeout_s),
            "retry_after_s": _env_int("RETRY_AFTER_S", cls.retry_after_s),
            "draft_decode": _env_bool("DRAFT_DECODE", cls.draft_decode),
            "prediction_log": _env_str("PREDICTION_LOG", cls.prediction_log),
            "feedback_log": _env_str("FEEDBACK_LOG", cls.feedback_log),
            "log_max_bytes": _env_int("LOG_MAX_BYTES", cls.log_max_bytes),
            "log_backups": _env_int("LOG_BACKUPS", cls.log_backups),
            "recent_window": _env_int("RECENT_WINDOW", cls.recent_window),
            "recent_ids": _env_int("RECENT_IDS", cls.recent_ids),
            "explain_grid": _env_int("EXPLAIN_GRID", cls.explain_grid),
            "shutdown_grace_s": _env_float("SHUTDOWN_GRACE_S", cls.shutdown_grace_s),
        }
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]

    @property
    def single_image_body_limit(self) -> int:
        """Body cap for one-image routes: the image, base64's 4/3 growth, and form overhead."""
        return self.max_bytes * 4 // 3 + 64 * 1024
