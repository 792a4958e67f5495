"""Headers every answer carries: no sniffing, no framing, no referrer, a strict CSP.

The page loads only its own script, style and the images it makes (`data:`/`blob:`);
the API docs pages (when served) load Swagger UI / ReDoc from their CDN with an inline
starter script, so they get a CSP of their own.
"""

from __future__ import annotations

PAGE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
DOCS_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
    "style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net https://fonts.googleapis.com; "
    "font-src https://fonts.gstatic.com; img-src 'self' data: https://fastapi.tiangolo.com "
    "https://cdn.redoc.ly; worker-src blob:; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'"
)
DOCS_PATHS = ("/docs", "/redoc")

_COMMON = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
]
PAGE_HEADERS = [*_COMMON, (b"content-security-policy", PAGE_CSP.encode())]
DOCS_HEADERS = [*_COMMON, (b"content-security-policy", DOCS_CSP.encode())]


def security_headers(path: str) -> list[tuple[bytes, bytes]]:
    return DOCS_HEADERS if path.startswith(DOCS_PATHS) else PAGE_HEADERS
