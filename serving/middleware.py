"""One pure-ASGI layer for what every request needs before any work starts.

Request id, API key, concurrency cap, body cap and body-read deadline, the JSON access
line and the HTTP metrics. Pure ASGI (not BaseHTTPMiddleware) because it is on the hot
path: it adds no task or stream copy per request. Oversized bodies are refused from
Content-Length before they are read, and streamed bytes are counted for bodies without
one.
"""

from __future__ import annotations

import asyncio
import hmac
import itertools
import logging
import re
import secrets
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving.errors import INPUT_REASONS, HttpRefusal, render_error
from serving.prometheus_metrics import ServiceMetrics
from serving.refusals import Refused
from serving.settings import Settings

access_log = logging.getLogger("serving.access")

# A client's X-Request-ID is kept as its correlation id when it looks like an id.
_CORRELATION_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")

# Probes, metrics, the static page and API docs: no API key (they hold no data; the page
# sends the key the user types with its API calls), and no concurrency cap.
OPEN_PATHS = frozenset(
    {
        "/health", "/health/live", "/health/ready", "/metrics", "/v2/health/live",
        "/v2/health/ready", "/", "/docs", "/docs/oauth2-redirect", "/redoc",
        "/openapi.json", "/favicon.ico",
    }
)  # fmt: skip
LARGE_BODY_PREFIXES = ("/predict/batch", "/v2/")


# Request ids: a random 64-bit prefix per process and a counter, 32 hex digits like a
# uuid4 and as unique across replicas, without a getrandom() call per request.
_ID_PREFIX = secrets.token_hex(8)
_ID_COUNTER = itertools.count(1)


def next_request_id() -> str:
    return f"{_ID_PREFIX}{next(_ID_COUNTER):016x}"


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return None


def is_open(path: str) -> bool:
    return path in OPEN_PATHS or path.startswith("/static/")


def body_limit(settings: Settings, path: str) -> int:
    """Several-image routes get MAX_REQUEST_BYTES; one-image routes a single image's cap."""
    if path.startswith(LARGE_BODY_PREFIXES):
        return settings.max_request_bytes
    return settings.single_image_body_limit


def _count(value: str | None) -> int | None:
    return int(value) if value and value.isdigit() and len(value) < 19 else None


def body_memory(scope: Scope, settings: Settings) -> int:
    """Memory a request's body will take once read and parsed, estimated before reading.

    The declared length (the route's cap when the body is chunked), four times over for
    JSON (a V2 tensor's numbers become Python floats). A V2 body is JSON whatever its
    Content-Type (Triton's client sends none), except the binary tensor data after its
    `Inference-Header-Content-Length` bytes of JSON, which is used as it is.
    """
    path: str = scope["path"]
    length = _header(scope, b"content-length")
    limit = body_limit(settings, path)
    declared = _count(length)
    size = min(declared, limit) if declared is not None else limit
    if length == "0" or scope.get("method") in ("GET", "HEAD", "OPTIONS"):
        return 0
    if path.startswith("/v2/"):
        json_part = _count(_header(scope, b"inference-header-content-length"))
        json_part = size if json_part is None else min(json_part, size)
        return json_part * 4 + (size - json_part)
    content_type = (_header(scope, b"content-type") or "").lower()
    return size * 4 if content_type.startswith("application/json") else size


def key_matches(scope: Scope, expected: str) -> bool:
    given = _header(scope, b"x-api-key")
    if given is None:
        auth = _header(scope, b"authorization") or ""
        scheme, _, token = auth.partition(" ")
        given = token.strip() if scheme.lower() == "bearer" else None
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


class RequestContextMiddleware:
    """Request id, API key, concurrency and body limits, the access line and HTTP metrics."""

    def __init__(self, app: ASGIApp, settings: Settings, metrics: ServiceMetrics) -> None:
        self.app = app
        self.settings = settings
        self.metrics = metrics
        self.active = 0  # capped requests being handled now
        self.body_memory = 0  # estimated bytes their bodies take once read and parsed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = next_request_id()
        given = _header(scope, b"x-request-id")
        correlation_id = given if given and _CORRELATION_ID.match(given) else None
        state: dict[str, Any] = scope.setdefault("state", {})
        state.update(request_id=request_id, correlation_id=correlation_id, started=started)
        path: str = scope["path"]
        status_holder = {"status": 500}
        id_headers = [(b"x-request-id", request_id.encode())]
        if correlation_id:
            id_headers.append((b"x-correlation-id", correlation_id.encode()))

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
                message["headers"] = [*message.get("headers", []), *id_headers]
            await send(message)

        capped = not is_open(path)
        memory = body_memory(scope, self.settings) if capped else 0
        self.metrics.in_flight.inc()
        self.active += capped
        self.body_memory += memory
        try:
            refusal = self._refusal(scope, path, capped) or self._over_memory(memory)
            if refusal is not None:
                await self._send_error(send_with_id, refusal, request_id, state)
                return
            limited = self._limited(receive, body_limit(self.settings, path), started)
            await self.app(scope, limited, send_with_id)
        finally:
            self.active -= capped
            self.body_memory -= memory
            self.metrics.in_flight.dec()
            self._account(scope, state, status_holder["status"], started)

    def _over_memory(self, memory: int) -> Refused | None:
        """Refuse a body that would take the bodies in flight past their memory budget
        (a request alone is always let in: its own cap bounds it)."""
        budget = self.settings.max_body_memory_bytes
        if memory and self.body_memory > budget and self.body_memory > memory:
            return Refused(
                "body_memory_full",
                f"Request bodies in flight would take more than {budget // 2**20} MiB; "
                "retry shortly.",
                self.settings.retry_after_s,
            )
        return None

    def _refusal(self, scope: Scope, path: str, capped: bool) -> Refused | None:
        settings = self.settings
        if settings.api_key and not is_open(path) and not key_matches(scope, settings.api_key):
            return Refused(
                "unauthorized",
                "A valid API key is required (header X-API-Key or Authorization: Bearer).",
            )
        if capped and self.active > settings.max_concurrent_requests:
            return Refused(
                "too_many_requests",
                f"The server is handling {settings.max_concurrent_requests} requests; "
                "retry shortly.",
                settings.retry_after_s,
            )
        length = _header(scope, b"content-length")
        limit = body_limit(settings, path)
        if length and length.isdigit() and (len(length) > 18 or int(length) > limit):
            return Refused(
                "body_too_large", f"The request body has {length} bytes; the limit is {limit}."
            )
        return None

    def _limited(self, receive: Receive, limit: int, started: float) -> Receive:
        """`receive` that stops a body past its cap or past the body-read deadline."""
        received, body_done = 0, False
        deadline = started + self.settings.body_read_timeout_s
        loop_offset = asyncio.get_running_loop().time() - time.perf_counter()

        async def limited_receive() -> Message:
            nonlocal received, body_done
            if body_done:  # later receives wait for a disconnect: no deadline for those
                return await receive()
            try:
                async with asyncio.timeout_at(deadline + loop_offset):
                    message = await receive()
            except TimeoutError:
                raise HttpRefusal(
                    "body_timeout",
                    f"The request body did not arrive within {self.settings.body_read_timeout_s:g} s.",
                ) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                body_done = not message.get("more_body", False)
                if received > limit:
                    raise HttpRefusal("body_too_large", f"The request body exceeds {limit} bytes.")
            return message

        return limited_receive

    @staticmethod
    async def _send_error(
        send: Send, error: Refused, request_id: str, state: dict[str, Any]
    ) -> None:
        state["error_reason"] = error.reason
        reply = render_error(
            error.reason, error.message, request_id, retry_after_s=error.retry_after_s
        )
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(reply.body)).encode()),
            *((k.lower().encode(), v.encode()) for k, v in reply.headers.items()),
        ]
        await send({"type": "http.response.start", "status": reply.status, "headers": headers})
        await send({"type": "http.response.body", "body": reply.body})

    def _account(self, scope: Scope, state: dict[str, Any], status: int, started: float) -> None:
        elapsed = time.perf_counter() - started
        route = scope.get("route")
        template = getattr(route, "path", None) or "<unmatched>"
        method = scope.get("method", "")
        metrics = self.metrics
        metrics.requests.labels(route=template, method=method, status=str(status)).inc()
        metrics.request_duration.labels(route=template).observe(elapsed)
        reason = state.get("error_reason")
        if reason in INPUT_REASONS:
            metrics.rejected.labels(reason=reason).inc()
        if not access_log.isEnabledFor(logging.INFO):
            return
        fields: dict[str, Any] = {
            "event": "request",
            "request_id": state.get("request_id"),
            "correlation_id": state.get("correlation_id"),
            "method": method,
            "route": template,
            "status": status,
            "latency_ms": round(elapsed * 1000.0, 3),
        }
        for key in ("label", "confidence", "image", "images", "error_reason"):
            if key in state:
                fields[key] = state[key]
        access_log.info("%s %s %d", method, template, status, extra={"fields": fields})
