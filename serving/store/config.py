"""Where predictions and feedback are stored, and the store's limits: the store's part of
the service's settings (serving/settings.py), as the typed value the store is opened with.

The environment variables, defaults and checks live in `serving.settings.Settings` only;
`StoreConfig` takes its defaults from there, so the service and the offline report open
the same store from the same variables.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from serving.settings import Settings

# StoreConfig field -> the Settings field (and so the environment variable) it comes from.
SETTING_OF: dict[str, str] = {
    "database_url": "database_url",
    "path": "store_path",
    "max_mb": "store_max_mb",
    "batch_size": "store_batch_size",
    "flush_ms": "store_flush_ms",
    "queue_max": "store_queue_max",
    "retry_s": "store_retry_s",
    "timeout_s": "store_timeout_s",
    "pool_size": "store_pool_size",
    "feedback_wait_s": "store_feedback_wait_s",
    "window": "recent_window",
    "client_share": "window_client_share",
    "retention_days": "store_retention_days",
    "max_rows": "store_max_rows",
    "prune_interval_s": "store_prune_interval_s",
    "window_ttl_s": "store_window_ttl_s",
}


def _default(name: str) -> Any:
    return Settings.model_fields[SETTING_OF[name]].get_default(call_default_factory=True)


DEFAULT_STORE_PATH: Path = _default("path")


@dataclass(frozen=True)
class StoreConfig:
    """One store for every replica: PostgreSQL when `database_url` is set, else SQLite."""

    database_url: str = _default("database_url")
    path: Path = DEFAULT_STORE_PATH
    max_mb: float = _default("max_mb")  # SQLite size cap (0: none); a full store reports "full"
    batch_size: int = _default("batch_size")
    flush_ms: float = _default("flush_ms")
    queue_max: int = _default("queue_max")
    retry_s: float = _default("retry_s")
    timeout_s: float = _default("timeout_s")
    pool_size: int = _default("pool_size")
    feedback_wait_s: float = _default("feedback_wait_s")
    window: int = _default("window")
    window_ttl_s: float = _default("window_ttl_s")
    client_share: float = _default("client_share")  # most of the window one client fills
    retention_days: float = _default("retention_days")  # 0: keep for ever
    max_rows: int = _default("max_rows")  # 0: no cap
    prune_interval_s: float = _default("prune_interval_s")

    @classmethod
    def of(cls, settings: Settings) -> StoreConfig:
        """The store's part of the service's settings."""
        return cls(**{name: getattr(settings, setting) for name, setting in SETTING_OF.items()})

    @classmethod
    def from_env(cls, **overrides: object) -> StoreConfig:
        """From DATABASE_URL, STORE_* and RECENT_WINDOW (checked); keyword overrides win."""
        return cls.of(Settings(**{SETTING_OF[name]: value for name, value in overrides.items()}))

    @property
    def dialect(self) -> str:
        return "postgresql" if self.database_url else "sqlite"

    def describe(self) -> str:
        """Where the store is, without the password (for logs and reports)."""
        if not self.database_url:
            return f"sqlite:{self.path}"
        head, sep, tail = self.database_url.rpartition("@")
        if not sep:
            return self.database_url
        scheme, _, userinfo = head.partition("://")
        user = userinfo.split(":", 1)[0]
        return f"{scheme}://{user}@{tail}" if user else f"{scheme}://{tail}"
