"""scripts/image_labels.py: the image's OCI labels name the registry version only when
models/registry.json names this very bundle (on the fast tier's tiny bundle)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from contracts.registry import RegistryRecord
from scripts import image_labels

SCRIPT = Path(image_labels.__file__)


@pytest.fixture()
def models(tiny_bundle_dir: Path, tmp_path: Path) -> Path:
    """A models/ folder holding the tiny bundle as export/."""
    shutil.copytree(tiny_bundle_dir, tmp_path / "models" / "export")
    return tmp_path / "models"


def record(bundle_version: str) -> RegistryRecord:
    return RegistryRecord(
        version="7", bundle_version=bundle_version, data_version="d", git_revision="g",
        promoted_at="2026-01-01T00:00:00+00:00", promoted_by="t", reason="test",
    )  # fmt: skip


def version_of(models: Path) -> str:
    return json.loads((models / "export" / "model.json").read_text())["version"]


def test_a_promoted_bundle_is_labelled_with_its_registry_version(models: Path) -> None:
    record(version_of(models)).write(models)
    done = subprocess.run(
        [sys.executable, str(SCRIPT), str(models / "export"), "--lines"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    labels = dict(line.split("=", 1) for line in done.stdout.splitlines())
    assert labels["org.opencontainers.image.version"] == version_of(models)
    assert labels["io.catsdogs.registry.name"] == "cats-dogs-classifier"
    assert labels["io.catsdogs.registry.version"] == "7"
    assert labels["io.catsdogs.registry.alias"] == "champion"
    manifest = json.loads((models / "export" / "model.json").read_text())
    assert labels["io.catsdogs.data.version"] == manifest["data_version"]


def test_a_bundle_without_a_record_is_unpromoted(models: Path) -> None:
    labels = image_labels.labels(models / "export")
    assert labels["io.catsdogs.registry.version"] == "unpromoted"
    assert labels["io.catsdogs.registry.alias"] == "none"
    assert labels["org.opencontainers.image.version"] == version_of(models)


def test_a_record_of_another_bundle_does_not_label_this_one(models: Path) -> None:
    record("0123456789ab").write(models)  # the previous champion's record, say
    labels = image_labels.labels(models / "export")
    assert labels["io.catsdogs.registry.name"] == "unpromoted"
    assert labels["io.catsdogs.registry.version"] == "unpromoted"
