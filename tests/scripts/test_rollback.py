"""scripts/rollback.py: back to the previous champion's image and alias, with a record.

A real SQLite registry with two versions promoted by the gate's own code and tagged by
scripts/record_deployment.py, and deployment/kubernetes/rollout.sh against the kubectl
that plays a cluster in tests/deployment (its smoke test runs against fake pods).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest

from contracts.registry import REGISTERED_MODEL, RegistryRecord
from scripts import record_deployment, rollback
from tests.deployment.conftest import copy_deployment, make_secrets
from tests.deployment.test_deployment import FAKE_KUBECTL

OLD = "ghcr.io/someone/cats-dogs:v1"
NEW = "ghcr.io/someone/cats-dogs:v2"


@pytest.fixture()
def deployed(promoted_registry, registry_copy: str, tmp_path: Path) -> Path:
    """v1 then v2 released and recorded; a project root (deployment/ with secrets) in tmp."""
    record_deployment.main([str(promoted_registry.first.directory), OLD, "production"])
    record_deployment.main([str(promoted_registry.second.directory), NEW, "production"])
    root = copy_deployment(tmp_path / "project")
    make_secrets(root, "kubernetes", "production")
    return root


def fake_cluster(tmp_path: Path, monkeypatch, ready_api: bool, served: str) -> Path:
    """A cluster running v2's image (revision 1); a release makes revision 2 with one pod."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "kubectl").write_text(FAKE_KUBECTL)
    (bin_dir / "kubectl").chmod(0o755)
    state = {
        "revision": 1, "image": NEW, "history": {"1": NEW},
        "ready": {"postgres": True, "api": ready_api, "undone": True},
        "undone": False, "undo_fails": False,
        "pods": [{"name": "api-2-a", "revision": "2"}], "served": {"api-2-a": served},
        "calls": [],
    }  # fmt: skip
    cluster = tmp_path / "cluster.json"
    cluster.write_text(json.dumps(state))
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("REAL_KUBECTL", str(Path(sys.executable).parent / "kubectl"))
    monkeypatch.setenv("FAKE_CLUSTER", str(cluster))
    monkeypatch.setenv("FAKE_RELEASE", OLD)  # what the fake applies: the image rollback names
    monkeypatch.setenv("ROLLOUT_TIMEOUT", "1s")
    monkeypatch.delenv("MODEL_VERSION", raising=False)
    return cluster


def champion(uri: str) -> str:
    client = mlflow.MlflowClient(uri)
    return str(client.get_model_version_by_alias(REGISTERED_MODEL, "champion").version)


def no_port_forward_left(tmp_path: Path) -> bool:
    left = subprocess.run(["pgrep", "-f", str(tmp_path / "bin" / "kubectl")], capture_output=True)
    return left.returncode == 1


def test_rollback_releases_the_previous_image_moves_the_alias_and_records_it(
    promoted_registry, registry_copy: str, deployed: Path, tmp_path: Path, monkeypatch, capfd
) -> None:
    first = promoted_registry.first
    # The fake pod serves v1's bundle: the smoke test passes only if rollback expects it.
    cluster = fake_cluster(tmp_path, monkeypatch, ready_api=True, served=first.bundle_version)
    assert champion(registry_copy) == "2"
    assert rollback.main(["production", "--root", str(deployed)]) == 0
    assert no_port_forward_left(tmp_path)
    out = capfd.readouterr().out
    assert "SMOKE TEST PASSED" in out and f"released {OLD}, model {first.bundle_version}" in out
    assert f"rolled back: {REGISTERED_MODEL} v2 -> v1, {OLD}" in out
    state = json.loads(cluster.read_text())
    assert state["image"] == OLD and any(c.startswith("apply") for c in state["calls"])
    assert champion(registry_copy) == "1"
    record = RegistryRecord.read(deployed / "models")
    assert record is not None and (record.version, record.bundle_version) == (
        "1",
        first.bundle_version,
    )
    assert record.reason == f"rollback from v2 to v1 ({OLD})"
    audit = (deployed / "docs" / "promotions.md").read_text().splitlines()
    assert audit[-1].startswith("| ") and f"| rollback | {REGISTERED_MODEL} v1 |" in audit[-1]
    assert f"| {first.bundle_version} | tiny-sample | rollback from v2 to v1 ({OLD}) |" in audit[-1]


def test_a_failed_rollout_leaves_the_alias_where_it_was_and_says_so(
    promoted_registry, registry_copy: str, deployed: Path, tmp_path: Path, monkeypatch, capfd
) -> None:
    served = promoted_registry.first.bundle_version
    cluster = fake_cluster(tmp_path, monkeypatch, ready_api=False, served=served)
    assert rollback.main(["production", "--root", str(deployed)]) == 1
    assert no_port_forward_left(tmp_path)
    err = capfd.readouterr().err
    assert f"the rollout of {OLD} failed (rollout.sh exit 1)" in err
    assert f"champion stays on {REGISTERED_MODEL} v2" in err
    assert json.loads(cluster.read_text())["image"] == NEW  # rollout.sh restored v2's image
    assert champion(registry_copy) == "2"
    assert not (deployed / "models" / "registry.json").exists()
    assert not (deployed / "docs" / "promotions.md").exists()


def test_without_an_earlier_deployed_version_nothing_moves(
    registry_copy: str, tmp_path: Path
) -> None:
    # Nothing was recorded as deployed: there is no image to return to.
    with pytest.raises(SystemExit, match="no deployed version of cats-dogs-classifier before v2"):
        rollback.main(["production", "--root", str(tmp_path)])
    assert champion(registry_copy) == "2"
    assert not (tmp_path / "models").exists()
