"""Who is calling, and how much each caller may ask: API keys by client name, rate limits.

Several keys may be configured (`API_KEY`, `API_KEYS`): the key a request presents names
its client, which is recorded with each prediction and keys its rate limit. Without keys
the client is the peer address (after uvicorn's trusted `X-Forwarded-For`). Rate limits
use the `limits` library: counts in this process (`memory://`) or in a shared Redis; with
several replicas and no shared storage, each replica counts alone (see docs/security.md).
"""

from __future__ import annotations

import hmac
import math
import time

from limits import parse_many, storage, strategies
from starlette.types import Scope

from serving.settings import Settings


def header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return None


def presented_key(scope: Scope) -> bytes | None:
    """The key sent as `X-API-Key` or `Authorization: Bearer`, if any."""
    given = header(scope, b"x-api-key")
    if given is None:
        scheme, _, token = (header(scope, b"authorization") or "").partition(" ")
        given = token.strip() if scheme.lower() == "bearer" else None
    return given.encode("latin-1") if given is not None else None


class Clients:
    """The configured keys (compared in constant time) and the per-client rate limiter."""

    def __init__(self, settings: Settings) -> None:
        self.keys = [(name, key.encode()) for name, key in settings.clients.items()]
        rate = settings.rate_limit.strip()
        self.limits = parse_many(rate) if rate.lower() not in ("", "off") else []
        backend = storage.storage_from_string(settings.rate_limit_storage)
        self.limiter = strategies.MovingWindowRateLimiter(backend)

    @property
    def auth_required(self) -> bool:
        return bool(self.keys)

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.keys]

    def identify(self, scope: Scope) -> str | None:
        """The client name of the presented key; None when none matches.

        Every key is compared, so the time taken does not tell which one came close.
        """
        given = presented_key(scope)
        if given is None:
            return None
        found = None
        for name, key in self.keys:
            if hmac.compare_digest(given, key):
                found = name
        return found

    @staticmethod
    def anonymous(scope: Scope) -> str:
        """A caller without keys configured: its address."""
        client = scope.get("client")
        return f"addr:{client[0]}" if client else "addr:unknown"

    def wait_s(self, client: str) -> int | None:
        """Seconds until `client` may call again when over a limit; None when within them.

        Counts this request as a hit on every limit it passes.
        """
        for item in self.limits:
            if not self.limiter.hit(item, client):
                reset = self.limiter.get_window_stats(item, client).reset_time
                return max(1, math.ceil(reset - time.time()))
        return None
