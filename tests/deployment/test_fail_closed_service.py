"""The service fails closed: without API_KEY it refuses to start, unless AUTH_DISABLED=true
says so on purpose, and then it logs a WARNING at start-up.

Each test starts the real `python -m serving` (or the app's lifespan, as plain `uvicorn
serving.app:app` runs it) over the tiny real bundle on 127.0.0.1.
"""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from serving.app import create_app
from serving.auth_policy import AUTH_OFF, NO_KEY, SWITCH_IGNORED, AuthNotConfigured
from tests.helpers.servers import ROOT, free_port, serving
from tests.helpers.service import settings_for


def service_env(bundle: Path, work: Path, **settings: str) -> dict[str, str]:
    """The environment of a production start: no API key, no switch, unless given."""
    env = {k: v for k, v in os.environ.items() if k not in ("API_KEY", "AUTH_DISABLED")}
    env.update(MODEL_DIR=str(bundle), DATABASE_URL="", STORE_PATH=str(work / "store.sqlite3"))
    env.update(HOST="127.0.0.1", PORT=str(free_port()), **settings)
    return env


@pytest.mark.parametrize("key", [None, ""], ids=["unset", "empty"])
def test_service_without_a_key_refuses_to_start_saying_why(
    tiny_bundle_dir: Path, tmp_path: Path, key: str | None
) -> None:
    env = service_env(tiny_bundle_dir, tmp_path, **({} if key is None else {"API_KEY": key}))
    result = subprocess.run(
        [sys.executable, "-m", "serving"], env=env, cwd=ROOT, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"Refusing to start: {NO_KEY}" in result.stderr
    assert '"level": "critical"' in result.stdout and "AUTH_DISABLED=true" in result.stdout
    assert "Uvicorn running" not in result.stdout  # it never listened


def test_the_switch_starts_it_open_and_logs_a_warning(tiny_bundle_dir: Path, tmp_path) -> None:
    with serving(tiny_bundle_dir, tmp_path, AUTH_DISABLED="true", API_KEY="") as server:
        with urllib.request.urlopen(server.url + "/model-info", timeout=5) as response:
            assert response.status == 200  # no key needed: auth is off, as it says
        warnings = [line for line in server.log_lines() if line.get("logger") == "serving.auth"]
    assert [(w["level"], w["message"]) for w in warnings] == [("warning", AUTH_OFF)]


def test_a_key_wins_over_the_switch(tiny_bundle_dir: Path, tmp_path: Path) -> None:
    with serving(tiny_bundle_dir, tmp_path, AUTH_DISABLED="true", API_KEY="k-123") as server:
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(server.url + "/model-info", timeout=5)
        assert refused.value.code == 401
        request = urllib.request.Request(server.url + "/model-info", headers={"X-API-Key": "k-123"})
        with urllib.request.urlopen(request, timeout=5) as response:
            assert response.status == 200
        messages = [line["message"] for line in server.log_lines()]
    assert SWITCH_IGNORED in messages and AUTH_OFF not in messages


def test_the_app_lifespan_refuses_too(tiny_bundle_dir: Path, tmp_path: Path) -> None:
    """`uvicorn serving.app:app` skips `python -m serving`: the lifespan checks the same."""
    settings = settings_for(tiny_bundle_dir, tmp_path, auth_disabled=False)
    with (
        pytest.raises(AuthNotConfigured, match="API_KEY is not set"),
        TestClient(create_app(settings)),
    ):
        pass
    keyed = settings_for(tiny_bundle_dir, tmp_path, api_key="k-123")
    with TestClient(create_app(keyed)) as client:
        assert client.get("/model-info").status_code == 401


def test_named_client_keys_alone_satisfy_the_check() -> None:
    """API_KEYS (name:key pairs) without API_KEY is authentication too: the start is allowed,
    and nothing warns that auth is off."""
    from serving.auth_policy import auth_refusal
    from serving.settings import Settings

    named = Settings.hermetic(api_keys="alice:k-alice,bob:k-bob")
    assert auth_refusal(named) is None
    assert auth_refusal(Settings.hermetic()) == NO_KEY
