"""Logs: JSON lines on stdout for people and log shippers.

Predictions and feedback are kept in the store (serving/store/), not in log files, so
monitoring reads one shared, indexed record. Image bytes and secrets never reach a log.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
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
