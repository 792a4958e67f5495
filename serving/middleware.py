"""One pure-ASGI layer for what every request needs before any work starts.

Request id, API key, concurrency cap, body cap and body-read deadline, the JSON access
line and the HTTP metrics. Pure ASGI (not BaseHTTPMiddleware) because it is on the hot
path: it adds no task or stream copy per request. Oversized bodies are refused from
Content-Length before they are read, and streamed bytes are counted for bodies without
one.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving.clients import Clients, header
from serving.errors import INPUT_REASONS, HttpRefusal, render_error
from serving.prometheus_metrics import ServiceMetrics
from serving.refusals import Refused
from serving.security_headers import security_headers
from serving.settings import Settings
from serving.tokens import new_request_id

access_log = logging.getLogger("serving.access")

# A client's X-Request-ID is kept as its correlation id when it looks like an id.
_CORRELATION_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")

# Probes, metrics and the static page: no API key (they hold no data; the page sends the
# key the user types with its API calls), no concurrency cap and no request id header.
OPEN_PATHS = frozenset(
    {"/health", "/health/live", "/health/ready", "/metrics", "/v2/health/live",
     "/v2/health/ready", "/", "/favicon.ico"}
)  # fmt: skip
DOCS_PATHS = frozenset({"/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})
LARGE_BODY_PREFIXES = ("/predict/batch", "/v2/")
_header = header


def open_paths(settings: Settings) -> frozenset[str]:
    """The paths served without a key: the API docs too when `API_DOCS=open`."""
    return OPEN_PATHS | DOCS_PATHS if settings.api_docs == "open" else OPEN_PATHS


def is_open(path: str, paths: frozenset[str] = OPEN_PATHS) -> bool:
    return path in paths or path.startswith("/static/")


def body_limit(settings: Settings, path: str, scope: Scope | None = None) -> int:
    """Several-image routes get MAX_REQUEST_BYTES, one-image routes a single image's cap;
    a V2 body that is JSON only (no binary tensor data) gets V2_MAX_JSON_BYTES."""
    if path.startswith("/v2/"):
        binary = scope is not None and _header(scope, b"inference-header-content-length")
        limit = settings.max_request_bytes
        return limit if binary else min(limit, settings.v2_max_json_bytes)
    if path.startswith(LARGE_BODY_PREFIXES):
        return settings.max_request_bytes
    return settings.single_image_body_limit


def _count(value: str | None) -> int | None:
    return int(value) if value and value.isdigit() and len(value) < 19 else None


def body_memory(scope: Scope, settings: Settings) -> int:
    """Memory a request's body will take once read and parsed, estimated from its headers.

    The declared length (the route's cap when the body is chunked), four times over for
    JSON (a V2 tensor's numbers become Python floats). A V2 body is JSON whatever its
    Content-Type (Triton's client sends none), except the binary tensor data after its
    `Inference-Header-Content-Length` bytes of JSON, which is used as it is.
    """
    path: str = scope["path"]
    length = _header(scope, b"content-length")
    limit = body_limit(settings, path, scope)
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


def memory_factor(scope: Scope, settings: Settings) -> float:
    """Memory each arriving body byte is charged: `body_memory` per byte of the body."""
    size = body_limit(settings, scope["path"], scope)
    declared = _count(_header(scope, b"content-length"))
    size = min(declared, size) if declared else size
    return body_memory(scope, settings) / size if size else 0.0


def _oversized(scope: Scope, settings: Settings, path: str) -> Refused | None:
    """413 from the declared lengths, before any byte of the body is read."""
    length = _header(scope, b"content-length")
    limit = body_limit(settings, path, scope)
    if length and length.isdigit() and (len(length) > 18 or int(length) > limit):
        return Refused(
            "body_too_large", f"The request body has {length} bytes; the limit is {limit}."
        )
    json_part = _count(_header(scope, b"inference-header-content-length"))
    if path.startswith("/v2/") and json_part and json_part > settings.v2_max_json_bytes:
        return Refused(
            "body_too_large",
            f"The V2 JSON part has {json_part} bytes; the limit is {settings.v2_max_json_bytes}.",
        )
    return None


async def _before(receive: Receive, deadline: float, first: bool, settings: Settings) -> Message:
    """The next body message, or 408 when it has not come by `deadline` (loop time)."""
    try:
        async with asyncio.timeout_at(deadline):
            return await receive()
    except TimeoutError:
        if first:
            wait = f"its first bytes within {settings.first_byte_timeout_s:g} s"
        else:
            wait = f"within {settings.body_read_timeout_s:g} s"
        raise HttpRefusal("body_timeout", f"The request body did not arrive {wait}.") from None


class RequestContextMiddleware:
    """Request id, API key, rate limit, concurrency and body limits, the access line, metrics."""

    def __init__(
        self, app: ASGIApp, settings: Settings, metrics: ServiceMetrics, clients: Clients
    ) -> None:
        self.app = app
        self.settings = settings
        self.metrics = metrics
        self.clients = clients
        self.open_paths = open_paths(settings)
        self.active = 0  # capped requests being handled now
        self.body_memory = 0  # bytes charged for the bodies arrived so far (× 4 for JSON)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = new_request_id()
        given = _header(scope, b"x-request-id")
        correlation_id = given if given and _CORRELATION_ID.match(given) else None
        state: dict[str, Any] = scope.setdefault("state", {})
        state.update(request_id=request_id, correlation_id=correlation_id, started=started)
        path: str = scope["path"]
        status_holder = {"status": 500}
        capped = not is_open(path, self.open_paths)
        # Open routes carry no request id: they must not hand out ids (none are needed).
        extra = list(security_headers(path))
        if capped:
            extra.append((b"x-request-id", request_id.encode()))
            if correlation_id:
                extra.append((b"x-correlation-id", correlation_id.encode()))

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        charged = [0]  # this request's share of self.body_memory
        self.metrics.in_flight.inc()
        self.active += capped
        try:
            refusal = self._refusal(scope, path, capped, state)
            if refusal is not None:
                await self._send_error(send_with_id, refusal, request_id, state)
                return
            limited = self._limited(receive, scope, started, charged) if capped else receive
            await self.app(scope, limited, send_with_id)
        finally:
            self.active -= capped
            self.body_memory -= charged[0]
            self.metrics.in_flight.dec()
            self._account(scope, state, status_holder["status"], started)

    def _identify(self, scope: Scope, state: dict[str, Any]) -> Refused | None:
        """Name the client (its key's name, or None without keys); 401 for a wrong key,
        429 for a client past its rate limit."""
        clients = self.clients
        client = clients.identify(scope) if clients.auth_required else None
        if clients.auth_required and client is None:
            return Refused(
                "unauthorized",
                "A valid API key is required (header X-API-Key or Authorization: Bearer).",
            )
        state["client"] = client
        wait_s = clients.wait_s(client or clients.anonymous(scope))
        if wait_s is not None:
            return Refused(
                "rate_limited",
                f"Too many requests from this client (limit {self.settings.rate_limit}).",
                wait_s,
            )
        return None

    def _refusal(
        self, scope: Scope, path: str, capped: bool, state: dict[str, Any]
    ) -> Refused | None:
        if not capped:
            return None
        settings = self.settings
        refusal = self._identify(scope, state)
        if refusal is not None:
            return refusal
        if self.active > settings.max_concurrent_requests:
            return Refused(
                "too_many_requests",
                f"The server is handling {settings.max_concurrent_requests} requests; "
                "retry shortly.",
                settings.retry_after_s,
            )
        return _oversized(scope, settings, path)

    def _charge(self, nbytes: int, factor: float, charged: list[int]) -> None:
        """Charge arrived body bytes to the budget; refuse when the bodies in flight would
        take more than it (a request alone is always let in: its own cap bounds it)."""
        cost = math.ceil(nbytes * factor)
        charged[0] += cost
        self.body_memory += cost
        budget = self.settings.max_body_memory_bytes
        if cost and self.body_memory > budget and self.body_memory > charged[0]:
            raise HttpRefusal(
                "body_memory_full",
                f"Request bodies in flight would take more than {budget // 2**20} MiB; "
                "retry shortly.",
                self.settings.retry_after_s,
            )

    def _limited(
        self, receive: Receive, scope: Scope, started: float, charged: list[int]
    ) -> Receive:
        """`receive` that charges the body-memory budget as bytes arrive and stops a body
        past its cap, past the first-byte deadline or past the body-read deadline."""
        settings = self.settings
        limit = body_limit(settings, scope["path"], scope)
        factor = memory_factor(scope, settings)
        received, body_done, first = 0, False, True
        loop_offset = asyncio.get_running_loop().time() - time.perf_counter()

        async def limited_receive() -> Message:
            nonlocal received, body_done, first
            if body_done:  # later receives wait for a disconnect: no deadline for those
                return await receive()
            deadline = started + settings.body_read_timeout_s
            if first:
                deadline = min(deadline, started + settings.first_byte_timeout_s)
            message = await _before(receive, deadline + loop_offset, first, settings)
            first = False
            if message["type"] == "http.request":
                chunk = len(message.get("body", b""))
                received += chunk
                body_done = not message.get("more_body", False)
                if received > limit:
                    raise HttpRefusal("body_too_large", f"The request body exceeds {limit} bytes.")
                self._charge(chunk, factor, charged)
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
