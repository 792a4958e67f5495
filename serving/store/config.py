"""Where predictions and feedback are stored, and the store's limits, from the environment.

Read apart from `serving.settings` so the store can be opened by the service and by the
offline report alike with the same variables (docs/monitoring.md lists them).
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

DEFAULT_STORE_PATH = Path(tempfile.gettempdir()) / "cats-dogs-serving" / "store.sqlite3"


def _env(name: str, default: str) -> str:
    return os.environ.get(name, "").strip() or default


@dataclass(frozen=True)
class StoreConfig:
    """One store for every replica: PostgreSQL when `database_url` is set, else SQLite."""

    database_url: str = ""
    path: Path = DEFAULT_STORE_PATH
    max_mb: float = 0.0  # SQLite size cap (0: none); a full store reports "full"
    batch_size: int = 64
    flush_ms: float = 200.0
    queue_max: int = 10_000
    retry_s: float = 5.0
    timeout_s: float = 3.0
    pool_size: int = 4
    feedback_wait_s: float = 2.0
    window: int = 1000
    window_ttl_s: float = 5.0

    @classmethod
    def from_env(cls, **overrides: object) -> StoreConfig:
        """Build from DATABASE_URL, STORE_* and RECENT_WINDOW; keyword overrides win."""
        values: dict[str, object] = {
            "database_url": _env("DATABASE_URL", ""),
            "path": Path(_env("STORE_PATH", str(DEFAULT_STORE_PATH))),
            "max_mb": float(_env("STORE_MAX_MB", "0")),
            "batch_size": int(_env("STORE_BATCH_SIZE", "64")),
            "flush_ms": float(_env("STORE_FLUSH_MS", "200")),
            "queue_max": int(_env("STORE_QUEUE_MAX", "10000")),
            "retry_s": float(_env("STORE_RETRY_S", "5")),
            "timeout_s": float(_env("STORE_TIMEOUT_S", "3")),
            "pool_size": int(_env("STORE_POOL_SIZE", "4")),
            "feedback_wait_s": float(_env("STORE_FEEDBACK_WAIT_S", "2")),
            "window": int(_env("RECENT_WINDOW", "1000")),
            "window_ttl_s": float(_env("STORE_WINDOW_TTL_S", "5")),
        }
        values.update(overrides)
        config = cls(**values)  # type: ignore[arg-type]
        config.check()
        return config

    def check(self) -> None:
        """Refuse settings that would make the store unbounded or never flush."""
        if self.database_url and not self.database_url.startswith(("postgresql://", "postgres://")):
            raise ValueError("DATABASE_URL must be a postgresql://user:pass@host:port/db URL")
        for name in ("batch_size", "queue_max", "window", "pool_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"store setting {name} must be at least 1")
        for name in ("flush_ms", "retry_s", "timeout_s", "feedback_wait_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"store setting {name} must be positive")

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
