"""Logs: JSON lines on stdout for people and log shippers, JSON-lines files for monitoring.

The prediction log is the record post-deployment monitoring reads (drift, feedback
joins); it is rotated by size so a busy pod cannot fill its disk. Image bytes and
secrets never reach any log.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from logging.handlers import RotatingFileHandler
from pathlib import Path
from typing import Any


def utc_now() -> str:
    """ISO 8601 time in UTC with milliseconds, e.g. 2026-11-26T09:00:00.123+00:00."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class JsonFormatter(logging.Formatter):
    """One JSON object per record; structured fields come from `extra={"fields": {...}}`."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(level: str) -> None:
    """JSON to stdout for the `serving` loggers; uvicorn's own access log is replaced."""
    logger = logging.getLogger("serving")
    logger.setLevel(level.upper())
    if not any(getattr(h, "_serving_json", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(JsonFormatter())
        handler._serving_json = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    logger.propagate = False
    # Our access line carries route, request id, label...; uvicorn's would duplicate it.
    logging.getLogger("uvicorn.access").disabled = True


class JsonLinesLog:
    """Append-only JSON-lines file rotated by size (`path`, `path.1`, ... `path.N`)."""

    def __init__(self, path: str, max_bytes: int, backups: int, name: str) -> None:
        self.path = Path(path) if path else None
        self._logger = logging.getLogger(f"serving.jsonl.{name}")
        self._logger.propagate = False
        self._logger.setLevel(logging.INFO)
        for handler in list(self._logger.handlers):
            self._logger.removeHandler(handler)
            handler.close()
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            handler = RotatingFileHandler(
                self.path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8"
            )
            handler.setFormatter(logging.Formatter("%(message)s"))
            self._logger.addHandler(handler)
        self.backups = backups

    @property
    def enabled(self) -> bool:
        return self.path is not None

    def write(self, entry: dict[str, Any]) -> None:
        if self.path is not None:
            self._logger.info(json.dumps(entry, separators=(",", ":")))

    def files(self) -> list[Path]:
        """Newest first: the live file, then its rotated copies."""
        if self.path is None:
            return []
        candidates = [self.path] + [
            self.path.with_name(f"{self.path.name}.{i}") for i in range(1, self.backups + 1)
        ]
        return [p for p in candidates if p.is_file()]

    def entries(self) -> Iterator[dict[str, Any]]:
        """Every readable entry, newest file first (for look-ups, not the hot path)."""
        for path in self.files():
            with path.open(encoding="utf-8", errors="replace") as fh:
                for line in fh:
                    try:
                        entry = json.loads(line)
                    except json.JSONDecodeError:
                        continue
                    if isinstance(entry, dict):
                        yield entry

    def close(self) -> None:
        for handler in list(self._logger.handlers):
            self._logger.removeHandler(handler)
            handler.close()
