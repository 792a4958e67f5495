"""The service's settings: one model, read from the environment, documented in one table."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from contracts import drift
from contracts.imaging import DEFAULT_LIMITS
from serving.settings import Settings, env_name, markdown_table
from serving.store import StoreConfig
from tests.helpers.service import ROOT

ENV_NAMES = {env_name(name, field) for name, field in Settings.model_fields.items()}


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {
        "MODEL_DIR": "/srv/bundle", "PORT": "9001", "API_KEY": "k", "MAX_IMAGE_BYTES": "1000",
        "ALLOWED_FORMATS": "jpeg, png", "INFERENCE_THREADS": "3", "BATCH_MAX_SIZE": "1",
        "BATCH_MAX_WAIT_MS": "2.5", "QUEUE_MAX": "7", "REQUEST_TIMEOUT_S": "1.5",
        "STORE_PATH": "/srv/store.db", "DATABASE_URL": "", "RECENT_WINDOW": "50",
        "STORE_FLUSH_MS": "20", "DRIFT_MIN_SAMPLES": "30", "DRAFT_DECODE": "false",
        "LOG_LEVEL": "WARNING",
    }  # fmt: skip
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    s = Settings.from_env()
    assert (s.model_dir, s.port, s.api_key, s.max_bytes) == (Path("/srv/bundle"), 9001, "k", 1000)
    assert s.allowed_formats == frozenset({"JPEG", "PNG"})
    assert s.image_limits.formats == frozenset({"JPEG", "PNG"})
    assert s.image_limits.max_bytes == 1000
    assert (s.inference_threads, s.batch_max_size, s.batch_max_wait_ms) == (3, 1, 2.5)
    assert (s.queue_max, s.request_timeout_s) == (7, 1.5)
    assert s.draft_decode is False and s.log_level == "warning"
    assert s.drift_min_samples == 30
    store = StoreConfig.of(s)
    assert (store.dialect, store.path, store.window, store.flush_ms) == (
        "sqlite", Path("/srv/store.db"), 50, 20.0
    )  # fmt: skip
    # The offline report opens the same store from the same variables; its flags win.
    assert StoreConfig.from_env() == store
    assert StoreConfig.from_env(path=Path("/other.db")).path == Path("/other.db")


def test_an_empty_variable_is_unset_and_a_bad_one_is_named(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PORT", "")
    monkeypatch.setenv("API_KEY", "")
    assert (Settings().port, Settings().api_key) == (8000, "")
    for name, value in [
        ("PORT", "abc"),
        ("MAX_IMAGE_BYTES", "0"),
        ("STORE_BATCH_SIZE", "0"),
        ("STORE_FLUSH_MS", "-1"),
        ("DATABASE_URL", "mysql://u:p@h/db"),
        ("LOG_LEVEL", "loud"),
    ]:
        with monkeypatch.context() as env:
            env.setenv(name, value)
            with pytest.raises(ValidationError, match=name):
                Settings()


def test_hermetic_settings_ignore_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("API_KEY", "from-the-environment")
    monkeypatch.setenv("QUEUE_MAX", "3")
    assert Settings().api_key == "from-the-environment"
    hermetic = Settings.hermetic(queue_max=5)
    assert (hermetic.api_key, hermetic.queue_max) == ("", 5)
    assert isinstance(hermetic, Settings)


def test_each_limit_has_one_default_the_image_contracts_and_the_cores() -> None:
    defaults = Settings.hermetic()
    assert defaults.image_limits == DEFAULT_LIMITS
    assert DEFAULT_LIMITS.max_decoded_bytes == 64 * 2**20
    assert defaults.drift_min_samples == drift.MIN_SAMPLES == 100
    assert StoreConfig() == StoreConfig.of(defaults)


def test_the_documented_table_is_the_models() -> None:
    """docs/serving.md holds `python -m serving.settings`'s table, row for row."""
    doc = (ROOT / "docs" / "serving.md").read_text(encoding="utf-8")
    table = markdown_table()
    assert table in doc, "docs/serving.md is stale: paste `python -m serving.settings`"
    documented = set(re.findall(r"^\| `([A-Z0-9_]+)` \|", table, flags=re.MULTILINE))
    assert documented == ENV_NAMES and len(ENV_NAMES) == len(Settings.model_fields)


def _deployed_variables() -> dict[str, str | None]:
    """Variables the Dockerfile, Compose and Kubernetes give the API, with literal values."""
    found: dict[str, str | None] = {}
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    for name, value in compose["services"]["api"]["environment"].items():
        found[name] = None if "${" in str(value) else str(value)
    base = ROOT / "deployment" / "kubernetes" / "base"
    for generator in yaml.safe_load((base / "kustomization.yaml").read_text())[
        "configMapGenerator"
    ]:
        for literal in generator.get("literals", []):
            name, _, value = literal.partition("=")
            found[name] = value
    for doc in yaml.safe_load_all((base / "deployment.yaml").read_text()):
        for container in (
            (doc or {}).get("spec", {}).get("template", {}).get("spec", {}).get("containers", [])
        ):
            found.update({e["name"]: e.get("value") for e in container.get("env", [])})
    dockerfile = (ROOT / "Dockerfile").read_text().split("FROM ")[-1]
    for name, value in re.findall(r"(?m)^\s*(?:ENV\s+)?([A-Z_]+)=(\S+?)\s*\\?$", dockerfile):
        if not name.startswith(("PYTHON", "PATH")):
            found[name] = value
    return found


def test_every_variable_the_deployment_sets_is_a_setting_and_parses(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    deployed = _deployed_variables()
    assert {"MODEL_DIR", "INFERENCE_WORKERS", "DATABASE_URL", "SHUTDOWN_GRACE_S"} <= set(deployed)
    assert set(deployed) <= ENV_NAMES, set(deployed) - ENV_NAMES
    for name, value in deployed.items():
        if value is not None:
            monkeypatch.setenv(name, value)
    settings = Settings()
    assert (settings.inference_workers, settings.inference_threads) == (2, 1)
    assert settings.model_dir == Path("/app/models/export")


def test_the_report_reads_drift_min_samples_when_its_arguments_are_parsed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from monitoring.cli import parse_args

    store = ["report", "--store", str(tmp_path / "store.sqlite3")]
    assert parse_args(store).min_samples == drift.MIN_SAMPLES
    monkeypatch.setenv("DRIFT_MIN_SAMPLES", "30")
    assert parse_args(store).min_samples == 30
    assert parse_args([*store, "--min-samples", "7"]).min_samples == 7
