"""Fixtures of the scripts' tests: an S3 API on loopback for the DVC remote tests, and a
real MLflow registry with two promoted versions for the lifecycle scripts."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers.registry import Promoted, two_promoted_versions
from tests.helpers.s3 import moto_s3


@dataclass(frozen=True)
class RegistryWithTwo:
    database: Path
    first: Promoted
    second: Promoted


@pytest.fixture()
def s3_endpoint(tmp_path: Path) -> Iterator[str]:
    """moto's S3 API on a free loopback port, stopped by PID after the test."""
    with moto_s3(tmp_path) as url:
        yield url


@pytest.fixture(scope="session")
def promoted_registry(tmp_path_factory: pytest.TempPathFactory) -> RegistryWithTwo:
    """An SQLite MLflow registry with two promoted tiny bundles (v1, then v2 the champion)."""
    root = tmp_path_factory.mktemp("registry")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        first, second = two_promoted_versions(root)
    return RegistryWithTwo(root / "mlflow.db", first, second)


@pytest.fixture()
def registry_copy(promoted_registry: RegistryWithTwo, tmp_path: Path, monkeypatch) -> str:
    """A copy of that registry for one test (rollback moves the alias), as the tracking URI."""
    database = tmp_path / "mlflow.db"
    shutil.copyfile(promoted_registry.database, database)
    uri = f"sqlite:///{database}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri
