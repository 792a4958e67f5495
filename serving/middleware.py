"""One pure-ASGI layer for what every request needs: id, API key, body cap, log, metrics.

Pure ASGI (not BaseHTTPMiddleware) because it is on the hot path: it adds no task or
stream copy per request. It refuses oversized bodies from Content-Length before reading
them, and counts streamed bytes for bodies without one.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import time
import uuid
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving.errors import INPUT_REASONS, ApiError, BodyTooLarge
from serving.service import Service
from serving.settings import Settings

access_log = logging.getLogger("serving.access")

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")

# Reachable without the API key: probes, metrics, and the static page and API docs
# (they hold no data; the page sends the key the user types with its API calls).
OPEN_PATHS = frozenset(
    {
        "/health",
        "/health/live",
        "/health/ready",
        "/metrics",
        "/v2/health/live",
        "/v2/health/ready",
        "/",
        "/docs",
        "/docs/oauth2-redirect",
        "/redoc",
        "/openapi.json",
        "/favicon.ico",
    }
)
LARGE_BODY_PREFIXES = ("/predict/batch", "/v2/")


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return None


def needs_key(path: str) -> bool:
    return path not in OPEN_PATHS and not path.startswith("/static/")


def body_limit(settings: Settings, path: str) -> int:
    """Several-image routes get MAX_REQUEST_BYTES; one-image routes a single image's cap."""
    if path.startswith(LARGE_BODY_PREFIXES):
        return settings.max_request_bytes
    return settings.single_image_body_limit


def key_matches(scope: Scope, expected: str) -> bool:
    given = _header(scope, b"x-api-key")
    if given is None:
        auth = _header(scope, b"authorization") or ""
        scheme, _, token = auth.partition(" ")
        given = token.strip() if scheme.lower() == "bearer" else None
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


class RequestContextMiddleware:
    """Request id, API key, body limit, the JSON access line and the HTTP metrics."""

    def __init__(self, app: ASGIApp, service: Service) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        settings = self.service.settings
        metrics = self.service.metrics
        given_id = _header(scope, b"x-request-id")
        request_id = given_id if given_id and _REQUEST_ID.match(given_id) else uuid.uuid4().hex
        state: dict[str, Any] = scope.setdefault("state", {})
        state["request_id"] = request_id
        state["started"] = started
        path: str = scope["path"]
        status_holder = {"status": 500}
        rid_header = (b"x-request-id", request_id.encode())

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
                message["headers"] = [*message.get("headers", []), rid_header]
            await send(message)

        metrics.in_flight.inc()
        try:
            refusal = self._refusal(scope, path)
            if refusal is not None:
                await self._send_error(send_with_id, refusal, request_id, state)
                return
            await self.app(scope, self._capped(receive, body_limit(settings, path)), send_with_id)
        finally:
            metrics.in_flight.dec()
            self._account(scope, state, status_holder["status"], started)

    def _refusal(self, scope: Scope, path: str) -> ApiError | None:
        settings = self.service.settings
        if settings.api_key and needs_key(path) and not key_matches(scope, settings.api_key):
            return ApiError(
                401,
                "unauthorized",
                "A valid API key is required (header X-API-Key or Authorization: Bearer).",
                headers={"WWW-Authenticate": "Bearer"},
            )
        length = _header(scope, b"content-length")
        limit = body_limit(settings, path)
        if length and length.isdigit() and int(length) > limit:
            return ApiError(
                413, "body_too_large", f"The request body has {length} bytes; the limit is {limit}."
            )
        return None

    @staticmethod
    def _capped(receive: Receive, limit: int) -> Receive:
        received = 0

        async def capped_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        return capped_receive

    @staticmethod
    async def _send_error(
        send: Send, error: ApiError, request_id: str, state: dict[str, Any]
    ) -> None:
        state["error_reason"] = error.reason
        body = json.dumps(
            {"error": error.message, "reason": error.reason, "request_id": request_id}
        ).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            *[(k.lower().encode(), v.encode()) for k, v in error.headers.items()],
        ]
        await send({"type": "http.response.start", "status": error.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    def _account(self, scope: Scope, state: dict[str, Any], status: int, started: float) -> None:
        elapsed = time.perf_counter() - started
        route = scope.get("route")
        template = getattr(route, "path", None) or "<unmatched>"
        method = scope.get("method", "")
        metrics = self.service.metrics
        metrics.requests.labels(route=template, method=method, status=str(status)).inc()
        metrics.request_duration.labels(route=template).observe(elapsed)
        reason = state.get("error_reason")
        if reason in INPUT_REASONS:
            metrics.rejected.labels(reason=reason).inc()
        fields: dict[str, Any] = {
            "event": "request",
            "request_id": state.get("request_id"),
            "method": method,
            "route": template,
            "status": status,
            "latency_ms": round(elapsed * 1000.0, 3),
        }
        for key in ("label", "confidence", "image", "images", "error_reason"):
            if key in state:
                fields[key] = state[key]
        if access_log.isEnabledFor(logging.INFO):
            access_log.info("%s %s %d", method, template, status, extra={"fields": fields})
