"""Attack 10: what every answer tells a stranger (banner, framing, docs)."""

from __future__ import annotations

import httpx

from tests.serving.attacks.conftest import headers


def test_answers_carry_security_headers_and_no_server_banner(http: httpx.Client) -> None:
    page = http.get("/")
    api = http.get("/model-info", headers=headers("alice"))
    refused = http.get("/model-info")
    for response in (page, api, refused):
        assert "server" not in response.headers
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["referrer-policy"] == "no-referrer"
        csp = response.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp
    assert (page.status_code, api.status_code, refused.status_code) == (200, 200, 401)


def test_api_docs_are_behind_the_key(http: httpx.Client) -> None:
    for path in ("/docs", "/openapi.json", "/redoc"):
        assert http.get(path).status_code == 401, path
        assert http.get(path, headers=headers("alice")).status_code == 200, path
