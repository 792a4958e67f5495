"""MLflow conventions: where runs go, what they are called, how stages share one run."""

from __future__ import annotations

import json
import os
from pathlib import Path

import mlflow

from stages.params import repo_root

EXPERIMENT = "cats-dogs"
RUN_FILE = Path("models/checkpoints/mlflow_run.json")  # an output of train, read by later stages


def tracking_uri() -> str:
    """MLFLOW_TRACKING_URI, else SQLite in the real repository (also for queued experiments)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{repo_root() / 'mlflow.db'}"


def run_name() -> str | None:
    """The DVC experiment name when DVC runs one."""
    return os.environ.get("DVC_EXP_NAME") or None


def start_new_run() -> str:
    """Create the pipeline run (train does this) and return its id."""
    mlflow.set_tracking_uri(tracking_uri())
    experiment = mlflow.set_experiment(EXPERIMENT)
    client = mlflow.MlflowClient()
    run = client.create_run(experiment.experiment_id, run_name=run_name())
    RUN_FILE.parent.mkdir(parents=True, exist_ok=True)
    RUN_FILE.write_text(json.dumps({"run_id": run.info.run_id, "tracking_uri": tracking_uri()}))
    return run.info.run_id


def resume_run() -> mlflow.ActiveRun:
    """Reopen the run that train created, so evaluate and export log to it."""
    if not RUN_FILE.exists():
        raise SystemExit(f"{RUN_FILE} is missing: run the train stage first (dvc repro).")
    run_id = json.loads(RUN_FILE.read_text())["run_id"]
    mlflow.set_tracking_uri(tracking_uri())
    return mlflow.start_run(run_id=run_id)
