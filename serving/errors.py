"""One error shape for every failure: `{"error": message, "reason": code, "request_id"}`.

Clients branch on `reason` (stable, machine-readable); people read `error`. Code anywhere
raises `Refused(reason, ...)` (serving/refusals.py) or the image contract's `ImageError`;
the HTTP status of each reason is decided here only (`STATUS`). A client can cause a 4xx
or a 503/504, never a 5xx: 500 is for the server's own faults.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from contracts.imaging import ImageError
from serving.refusals import Refused

# Reasons a request's own content causes (counted in `rejected_inputs_total`).
INPUT_STATUS: dict[str, int] = {
    # the image contract (contracts/imaging.py)
    "empty": 400,
    "not_an_image": 400,
    "corrupt": 400,
    "too_large": 413,
    "too_many_pixels": 413,
    "too_many_bytes_decoded": 413,
    "unsupported_format": 415,
    "too_small": 422,
    # the request around the image(s)
    "bad_base64": 400,
    "invalid_tensor": 400,
    "body_too_large": 413,
    "too_many_files": 413,
    "unsupported_media_type": 415,
    "invalid_request": 422,
    "missing_field": 422,
    "unknown_label": 422,
}
STATUS: dict[str, int] = {
    **INPUT_STATUS,
    "unauthorized": 401,
    "not_found": 404,
    "unknown_model": 404,
    "unknown_request_id": 404,
    "method_not_allowed": 405,
    "body_timeout": 408,
    "conflict": 409,
    "label_conflict": 409,
    "rate_limited": 429,
    "client_disconnected": 499,  # nobody reads it: the client has gone (nginx's code)
    "not_ready": 503,
    "queue_full": 503,
    "decode_queue_full": 503,
    "too_many_requests": 503,
    "body_memory_full": 503,
    "explain_busy": 503,
    "inference_unavailable": 503,
    "shutting_down": 503,
    "store_unavailable": 503,
    "store_full": 503,
    "timeout": 504,
}
INPUT_REASONS = frozenset(INPUT_STATUS)


def status_of(reason: str) -> int:
    return STATUS.get(reason, 400)


class HttpRefusal(StarletteHTTPException):
    """A refusal raised while FastAPI reads the body (it re-raises HTTPExceptions only)."""

    def __init__(self, reason: str, message: str, retry_after_s: int | None = None) -> None:
        headers = None if retry_after_s is None else {"Retry-After": str(retry_after_s)}
        super().__init__(status_of(reason), message, headers)
        self.reason = reason


@dataclass(frozen=True)
class ErrorReply:
    """One error as it goes on the wire: status, JSON body and headers."""

    status: int
    body: bytes
    headers: dict[str, str]


def render_error(
    reason: str,
    message: str,
    request_id: str | None,
    *,
    status: int | None = None,
    retry_after_s: int | None = None,
    headers: Mapping[str, str] | None = None,
) -> ErrorReply:
    """The one renderer of `{"error", "reason", "request_id"}`, for the app and the middleware.

    The status is the reason's (`STATUS`) unless given; a 503 says when to retry and a 401
    which scheme to use.
    """
    body = json.dumps({"error": message, "reason": reason, "request_id": request_id})
    out = dict(headers or {})
    if retry_after_s is not None:
        out["Retry-After"] = str(retry_after_s)
    if reason == "unauthorized":
        out["WWW-Authenticate"] = "Bearer"
    return ErrorReply(status or status_of(reason), body.encode(), out)


def error_response(
    request: Request | None,
    status: int,
    reason: str,
    message: str,
    headers: Mapping[str, str] | None = None,
    retry_after_s: int | None = None,
) -> Response:
    """The error as a response, its reason noted for the access log and metrics."""
    request_id = None
    if request is not None:
        request.state.error_reason = reason
        request_id = getattr(request.state, "request_id", None)
    reply = render_error(
        reason, message, request_id, status=status, retry_after_s=retry_after_s, headers=headers
    )
    return Response(reply.body, reply.status, reply.headers, media_type="application/json")


def refusal_response(request: Request | None, exc: Refused) -> Response:
    status = status_of(exc.reason)
    return error_response(request, status, exc.reason, exc.message, None, exc.retry_after_s)


def _describe_validation(exc: RequestValidationError) -> tuple[str, str]:
    errors = exc.errors()
    if any(e.get("type") == "missing" for e in errors):
        fields = [".".join(str(p) for p in e.get("loc", ())[1:]) for e in errors]
        return "missing_field", f"A required field is missing: {', '.join(fields)}."
    first = errors[0] if errors else {}
    where = ".".join(str(p) for p in first.get("loc", ()))
    return "invalid_request", f"Invalid request at {where}: {first.get('msg', 'malformed')}."


def install_error_handlers(app: FastAPI) -> None:
    """Route every exception type to the one JSON shape; nothing escapes as a bare 500."""

    @app.exception_handler(Refused)
    async def _refused(request: Request, exc: Refused) -> Response:
        return refusal_response(request, exc)

    @app.exception_handler(ImageError)
    async def _image_error(request: Request, exc: ImageError) -> Response:
        return error_response(request, status_of(exc.reason), exc.reason, exc.message)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        reason, message = _describe_validation(exc)
        return error_response(request, 422, reason, message)

    @app.exception_handler(ClientDisconnect)
    async def _disconnect(request: Request, exc: ClientDisconnect) -> Response:
        return error_response(request, 499, "client_disconnected", "The client went away.")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        reason = getattr(exc, "reason", None) or {404: "not_found", 405: "method_not_allowed"}.get(
            exc.status_code, "invalid_request"
        )
        return error_response(
            request, exc.status_code, reason, str(exc.detail), getattr(exc, "headers", None)
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        logging.getLogger("serving").exception("Unhandled error on %s", request.url.path)
        return error_response(request, 500, "internal_error", "An unexpected error occurred.")
