"""Fail-closed authentication: the service refuses to start without a key (`API_KEY` or
`API_KEYS`) unless
`AUTH_DISABLED=true` says, on purpose, that it runs without one.

A deployment that forgot its key secret must not serve an open API: an empty key used to
mean "auth off" silently. Both ways to start the service check this: `python -m serving`
before uvicorn starts (exit status 2, the message on stderr and as a JSON log line), and
the app's lifespan (`uvicorn serving.app:app`: startup fails, uvicorn exits).
"""

from __future__ import annotations

import logging

from serving.settings import Settings

NO_KEY = (
    "API_KEY is not set: the service refuses to start without authentication. Set API_KEY "
    "or API_KEYS=name:key,... (clients send a key as X-API-Key or Authorization: Bearer), "
    "or set AUTH_DISABLED=true to "
    "run without authentication on purpose (local use only)."
)
AUTH_OFF = (
    "Authentication is OFF (AUTH_DISABLED=true and no API key): anyone who reaches this "
    "port may call every endpoint. Never run a shared or production deployment like this."
)
SWITCH_IGNORED = "AUTH_DISABLED=true is ignored: a key is set, so authentication is on."


class AuthNotConfigured(RuntimeError):
    """No API key and no deliberate switch: the start is refused."""


def auth_refusal(settings: Settings) -> str | None:
    """Why these settings may not start the service, or None when they may."""
    return NO_KEY if not settings.clients and not settings.auth_disabled else None


def check_auth(settings: Settings, log: logging.Logger) -> None:
    """Raise AuthNotConfigured when the service would run open by accident; log a WARNING
    whenever authentication is off (or the switch is set but overruled by a key)."""
    refusal = auth_refusal(settings)
    if refusal:
        raise AuthNotConfigured(refusal)
    if settings.clients and settings.auth_disabled:
        log.warning(SWITCH_IGNORED)
    elif not settings.clients:
        log.warning(AUTH_OFF)
