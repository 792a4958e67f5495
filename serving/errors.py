"""One error shape for every failure: `{"error": message, "reason": code, "request_id"}`.

Clients branch on `reason` (stable, machine-readable); people read `error`. Image
reasons come from serving.imaging; the HTTP status for each is decided here only.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from serving.imaging import ImageError

# reason -> HTTP status for everything the image contract can refuse.
IMAGE_REASON_STATUS: dict[str, int] = {
    "empty": 400,
    "not_an_image": 400,
    "corrupt": 400,
    "too_large": 413,
    "too_many_pixels": 413,
    "unsupported_format": 415,
    "too_small": 422,
}

# Reasons that count as a rejected input (metric `rejected_inputs_total`).
INPUT_REASONS = frozenset(
    {
        *IMAGE_REASON_STATUS,
        "bad_base64",
        "body_too_large",
        "invalid_request",
        "missing_field",
        "too_many_files",
        "unsupported_media_type",
        "invalid_tensor",
    }
)


class BodyTooLarge(StarletteHTTPException):
    """A streamed body grew past its cap (an HTTPException so FastAPI's parser re-raises it)."""

    reason = "body_too_large"

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"The request body exceeds {limit} bytes.")


class ApiError(Exception):
    """An error answer with its status and reason."""

    def __init__(
        self, status: int, reason: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message
        self.headers = headers or {}

    @classmethod
    def from_image_error(cls, exc: ImageError) -> ApiError:
        return cls(IMAGE_REASON_STATUS.get(exc.reason, 400), exc.reason, exc.message)


def error_response(
    request: Request | None,
    status: int,
    reason: str,
    message: str,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """Build the JSON error and note its reason for the access log and metrics."""
    request_id = None
    if request is not None:
        request.state.error_reason = reason
        request_id = getattr(request.state, "request_id", None)
    body = {"error": message, "reason": reason, "request_id": request_id}
    return JSONResponse(body, status_code=status, headers=headers)


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

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(request, exc.status, exc.reason, exc.message, exc.headers)

    @app.exception_handler(ImageError)
    async def _image_error(request: Request, exc: ImageError) -> JSONResponse:
        err = ApiError.from_image_error(exc)
        return error_response(request, err.status, err.reason, err.message)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        reason, message = _describe_validation(exc)
        return error_response(request, 422, reason, message)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        reason = getattr(exc, "reason", None) or {404: "not_found", 405: "method_not_allowed"}.get(
            exc.status_code, "http_error"
        )
        return error_response(
            request, exc.status_code, reason, str(exc.detail), getattr(exc, "headers", None)
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        logging.getLogger("serving").exception("Unhandled error on %s", request.url.path)
        return error_response(request, 500, "internal_error", "An unexpected error occurred.")
