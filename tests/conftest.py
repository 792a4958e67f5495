"""Shared fixtures: the real sample photographs and a real pipeline run on a few hundred of them.

The `pipeline_repo` fixture copies the project into a temporary folder, puts a small
sample of the shared photographs in data/raw and runs `dvc exp run` there with small
settings: the same four stages a user runs, so `bundle_dir` is a bundle made by the
project's own export code from a briefly fine-tuned model.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CATSDOGS_SHARED", ROOT.parent / "shared")).resolve()
SAMPLE_PER_CLASS = 200

# Small settings, as Hydra overrides: seconds per stage on two CPU cores, still a useful model.
SMALL_OVERRIDES = [
    "prepare.image_size=128",
    "prepare.split.train=0.6",
    "prepare.split.val=0.2",
    "prepare.split.test=0.2",
    "data.batch_size=32",
    "trainer.max_epochs=3",
    "evaluate.gallery_size=8",
    "export.compare_photos=32",
]
EXPERIMENT_NAME = "small-sample"


def venv_env() -> dict[str, str]:
    """Environment for subprocesses: this interpreter's bin first, no inherited DVC state."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DVC_", "MLFLOW_"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED / "data" / "cats_dogs").is_dir():
        pytest.fail(f"The shared sample photographs are missing: {SHARED / 'data'}")
    return SHARED / "data"


@pytest.fixture(scope="session")
def fullres_photos(shared_data: Path) -> list[tuple[Path, str]]:
    """The full-size uploads (cat.N.jpg, dog.N.jpg) with their true labels."""
    return [(p, p.name.split(".")[0]) for p in sorted((shared_data / "fullres").glob("*.jpg"))]


def project_files() -> list[str]:
    """Tracked and not-ignored files: what a clone of the project holds."""
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\n")
    return [f for f in out if f and (ROOT / f).is_file()]


def copy_project(dest: Path) -> None:
    for name in project_files():
        generated = name.startswith(("data/", "models/", "metrics/", "plots/"))
        if (generated and name != "data/.gitignore") or name == "dvc.lock":
            continue
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, target)


def run(cmd: list[str], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    result = subprocess.run(
        cmd, cwd=cwd, env=venv_env(), capture_output=True, text=True, timeout=timeout
    )
    if result.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
        )
    return result


@pytest.fixture(scope="session")
def pipeline_repo(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    """A copy of the project after a real `dvc exp run` on 2 x 200 shared photos.

    `dvc exp run -S` composes conf/ with the overrides into params.yaml (Hydra), then
    reproduces all four stages, exactly as a user's experiment does.
    """
    repo = tmp_path_factory.mktemp("pipeline") / "repo"
    copy_project(repo)
    for label in ("cat", "dog"):
        target = repo / "data" / "raw" / label
        target.mkdir(parents=True)
        for photo in sorted((shared_data / "cats_dogs" / label).glob("*.jpg"))[:SAMPLE_PER_CLASS]:
            shutil.copy2(photo, target / photo.name)
    run(["git", "init", "-q"], repo)
    run(["git", "add", "-A"], repo)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "test copy"], repo)
    overrides = [arg for override in SMALL_OVERRIDES for arg in ("-S", override)]
    experiment = ["dvc", "exp", "run", "--name", EXPERIMENT_NAME, *overrides]
    repo.joinpath("pipeline.log").write_text(run(experiment, repo, timeout=900).stdout)
    return repo


@pytest.fixture(scope="session")
def bundle_dir(pipeline_repo: Path) -> Path:
    """A real model bundle (model.onnx + model.json) exported by the pipeline."""
    return pipeline_repo / "models" / "export"
