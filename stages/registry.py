"""The MLflow registry holds promoted models only: the gate registers, nothing else does.

On acceptance the challenger's served graph is logged with a signature and an input
example (a real photo, so `mlflow models serve` and `mlflow.pyfunc` validate requests),
registered as a new version of `cats-dogs-classifier` with the tags that identify it, and
the alias `champion` moves onto it. The record (contracts/registry.py) and a line in the
audit trail say who promoted what, when and why.
"""

from __future__ import annotations

import getpass
import os
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import mlflow
import numpy as np
import onnx
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature

from contracts.imaging import to_batch
from contracts.registry import CHAMPION_ALIAS, REGISTERED_MODEL, RegistryRecord
from stages.promotion import ScoredBundle
from stages.tracking import tracking_uri


def who() -> str:
    """The person (or CI actor) promoting: GITHUB_ACTOR, git's user.name, or the login."""
    if os.environ.get("GITHUB_ACTOR"):
        return os.environ["GITHUB_ACTOR"]
    try:
        name = subprocess.run(
            ["git", "config", "user.name"], capture_output=True, text=True, check=False
        ).stdout.strip()
    except OSError:
        name = ""
    return name or getpass.getuser()


def run_for(client: mlflow.MlflowClient, run_id: str, experiment: str) -> str:
    """The challenger's own training run when this tracking store has it, else a new run."""
    if run_id:
        try:
            return client.get_run(run_id).info.run_id
        except MlflowException:
            pass
    return client.create_run(mlflow.set_experiment(experiment).experiment_id).info.run_id


def register(
    challenger: ScoredBundle, example: np.ndarray, tags: dict[str, str], experiment: str
) -> str:
    """Log the served graph with signature and input example, register it, move the alias."""
    mlflow.set_tracking_uri(tracking_uri())
    client = mlflow.MlflowClient()
    manifest = challenger.manifest
    batch = to_batch(example[:1])
    probs = challenger.probs[:1].astype(np.float32)
    run_id = run_for(client, manifest.mlflow_run_id, experiment)
    with mlflow.start_run(run_id=run_id):
        info = mlflow.onnx.log_model(
            onnx.load(str(challenger.directory / manifest.model_file)),
            name="champion_model",
            registered_model_name=REGISTERED_MODEL,
            signature=infer_signature(batch, probs),
            input_example=batch,
            save_as_external_data=False,
        )
        card = challenger.directory / "MODEL_CARD.md"
        if card.is_file():
            mlflow.log_artifact(str(card), "bundle")
    version = str(info.registered_model_version)
    for key, value in tags.items():
        client.set_model_version_tag(REGISTERED_MODEL, version, key, value)
    client.set_registered_model_alias(REGISTERED_MODEL, CHAMPION_ALIAS, version)
    return version


def record(challenger: ScoredBundle, version: str, reason: str) -> RegistryRecord:
    manifest = challenger.manifest
    return RegistryRecord(
        version=version,
        bundle_version=manifest.version,
        data_version=manifest.data_version,
        git_revision=manifest.git_revision,
        run_id=manifest.mlflow_run_id or None,
        promoted_at=datetime.now(UTC).isoformat(timespec="seconds"),
        promoted_by=who(),
        reason=reason,
    )


AUDIT_HEADER = (
    "# Promotions and rollbacks\n\n"
    "Appended by `python -m stages.promote` and `scripts/rollback.py` (docs/lifecycle.md).\n\n"
    "| when (UTC) | who | action | registry version | bundle | data | reason |\n"
    "|---|---|---|---|---|---|---|\n"
)


def append_audit(path: Path, action: str, rec: RegistryRecord) -> None:
    """One row a person can read: who did what to which model, when and why."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(AUDIT_HEADER)
    reason = rec.reason.replace("|", "/").replace("\n", " ")
    with path.open("a") as out:
        out.write(
            f"| {rec.promoted_at} | {rec.promoted_by} | {action} | {rec.name} v{rec.version} "
            f"| {rec.bundle_version} | {rec.data_version} | {reason} |\n"
        )
