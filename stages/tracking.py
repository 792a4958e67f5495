"""MLflow conventions: where runs go, what they are called, how stages share one run."""

from __future__ import annotations

import json
import os
from pathlib import Path

import mlflow

from stages.params import repo_root


def tracking_uri() -> str:
    """MLFLOW_TRACKING_URI, else SQLite in the real repository (also for queued experiments)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{repo_root() / 'mlflow.db'}"


def run_name() -> str | None:
    """The DVC experiment name when DVC runs one."""
    return os.environ.get("DVC_EXP_NAME") or None


def start_new_run(run_file: Path, experiment_name: str) -> str:
    """Create the pipeline run (train does this) in the experiment params.yaml names
    (`tracking.experiment`), note its id in `run_file`, return the id."""
    mlflow.set_tracking_uri(tracking_uri())
    experiment = mlflow.set_experiment(experiment_name)
    client = mlflow.MlflowClient()
    run = client.create_run(experiment.experiment_id, run_name=run_name())
    run_file.parent.mkdir(parents=True, exist_ok=True)
    run_file.write_text(json.dumps({"run_id": run.info.run_id, "tracking_uri": tracking_uri()}))
    return run.info.run_id


def resume_run(run_file: Path) -> mlflow.ActiveRun:
    """Reopen the run that train created (its id is in `run_file`), so later stages log to it."""
    if not run_file.exists():
        raise SystemExit(f"{run_file} is missing: run the train stage first (dvc repro).")
    run_id = json.loads(run_file.read_text())["run_id"]
    mlflow.set_tracking_uri(tracking_uri())
    return mlflow.start_run(run_id=run_id)
