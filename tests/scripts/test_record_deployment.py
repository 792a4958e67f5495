"""scripts/record_deployment.py: CD's record of a release against the registry version.

On a real SQLite registry holding two versions promoted by the gate's own code
(tests/helpers/registry.py).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import mlflow

from contracts.registry import REGISTERED_MODEL
from scripts import record_deployment

SCRIPT = Path(record_deployment.__file__)
IMAGE = "ghcr.io/someone/cats-dogs:v2"


def tags_of(uri: str, version: str) -> dict[str, str]:
    return mlflow.MlflowClient(uri).get_model_version(REGISTERED_MODEL, version).tags


def test_a_release_is_tagged_on_the_version_its_bundle_was_registered_as(
    promoted_registry, registry_copy: str, capsys
) -> None:
    bundle = promoted_registry.second.directory
    assert record_deployment.main([str(bundle), IMAGE, "production"]) == 0
    tags = tags_of(registry_copy, "2")
    assert (tags["deployed_image"], tags["deployed_to"]) == (IMAGE, "production")
    assert tags["deployed_at"].endswith("+00:00")
    assert "deployed_image" not in tags_of(registry_copy, "1")
    assert f"recorded: {REGISTERED_MODEL} v2 runs {IMAGE} in production" in capsys.readouterr().out


def test_without_a_tracking_server_it_prints_a_notice_and_succeeds(
    promoted_registry, registry_copy: str
) -> None:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    bundle = promoted_registry.second.directory
    done = subprocess.run(
        [sys.executable, str(SCRIPT), str(bundle), IMAGE, "kind"],
        capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("::notice::No tracking server (MLFLOW_TRACKING_URI)")
    assert f"serves {REGISTERED_MODEL} v2; not recorded" in done.stdout
    assert "deployed_image" not in tags_of(registry_copy, "2")


def test_a_record_of_another_bundle_tags_nothing(
    promoted_registry, registry_copy: str, tmp_path: Path, capsys
) -> None:
    # models/export holds v1's bundle, models/registry.json names v2's: an unpromoted bundle.
    models = tmp_path / "models"
    shutil.copytree(promoted_registry.first.directory, models / "export")
    (models / "export" / "registry.json").unlink()
    shutil.copy(promoted_registry.second.directory / "registry.json", models)
    assert record_deployment.main([str(models / "export"), IMAGE, "production"]) == 0
    assert "was never promoted" in capsys.readouterr().out
    for version in ("1", "2"):
        assert "deployed_image" not in tags_of(registry_copy, version)
