"""`python -m serving`: uvicorn with the settings from the environment and a drain timeout."""

from __future__ import annotations

import logging
import signal
import sys
from types import FrameType
from typing import Any

import uvicorn

from serving.auth_policy import auth_refusal
from serving.logs import configure_logging
from serving.settings import Settings


def uvicorn_log_config(level: str) -> dict[str, Any]:
    """uvicorn's own lines (start, stop, errors) as JSON too, so stdout is all JSON lines."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": "serving.logs.JsonFormatter"}},
        "handlers": {
            "stdout": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "stream": "ext://sys.stdout",
            }
        },
        "loggers": {
            "uvicorn": {"handlers": ["stdout"], "level": level.upper(), "propagate": False},
            "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
        },
    }


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def refuse_open_start(settings: Settings) -> None:
    """Exit 2 before uvicorn starts when no API key is set and auth is not switched off on
    purpose: the reason as a JSON log line on stdout and as plain text on stderr."""
    refusal = auth_refusal(settings)
    if refusal is None:
        return  # the app's lifespan logs the WARNING when auth is off (check_auth)
    configure_logging(settings.log_level)
    logging.getLogger("serving.auth").critical(refusal)
    print(f"Refusing to start: {refusal}", file=sys.stderr)
    raise SystemExit(2)


def main() -> None:
    settings = Settings.from_env()
    refuse_open_start(settings)
    # uvicorn drains on SIGTERM, then restores this handler and re-raises the signal:
    # exiting 0 here (instead of dying by the signal) marks the shutdown as a clean one.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    uvicorn.run(
        "serving.app:app",
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=False,
        log_config=uvicorn_log_config(settings.log_level),
        timeout_graceful_shutdown=int(settings.shutdown_grace_s),
        proxy_headers=True,
        # h11 with a bounded request head, and a deadline for it (serving/http_protocol.py).
        http="serving.http_protocol:BoundedH11Protocol",
        h11_max_incomplete_event_size=settings.max_header_bytes,
        server_header=False,
        # Several processes share the port; each loads the bundle (memory x workers).
        workers=max(1, settings.workers),
    )


if __name__ == "__main__":
    main()
