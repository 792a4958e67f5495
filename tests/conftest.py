"""Shared fixtures: the real sample photographs and a real pipeline run on a few hundred of them.

The `pipeline_repo` fixture copies the project into a temporary folder, puts a small
sample of the shared photographs in data/raw, shrinks the settings in params.yaml and
runs `dvc repro` there: the same four stages a user runs, so `bundle_dir` is a bundle
made by the project's own export code from a briefly fine-tuned model.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CATSDOGS_SHARED", ROOT.parent / "shared")).resolve()
SAMPLE_PER_CLASS = 200

# Small settings: seconds per stage on two CPU cores, still a useful model.
SMALL_PARAMS = {
    ("prepare", "image_size"): 128,
    ("prepare", "split"): {"train": 0.6, "val": 0.2, "test": 0.2},
    ("data", "batch_size"): 32,
    ("trainer", "max_epochs"): 3,
    ("trainer", "patience"): 2,
    ("evaluate", "gallery_size"): 8,
    ("export", "compare_photos"): 32,
}


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


def shrink_params(path: Path) -> None:
    params = yaml.safe_load(path.read_text())
    for (section, key), value in SMALL_PARAMS.items():
        params[section][key] = value
    path.write_text(yaml.safe_dump(params, sort_keys=False))


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
    """A copy of the project after a real `dvc repro` on 2 x 200 shared photos."""
    repo = tmp_path_factory.mktemp("pipeline") / "repo"
    copy_project(repo)
    for label in ("cat", "dog"):
        target = repo / "data" / "raw" / label
        target.mkdir(parents=True)
        for photo in sorted((shared_data / "cats_dogs" / label).glob("*.jpg"))[:SAMPLE_PER_CLASS]:
            shutil.copy2(photo, target / photo.name)
    shrink_params(repo / "params.yaml")
    run(["git", "init", "-q"], repo)
    run(["git", "add", "-A"], repo)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "test copy"], repo)
    repo.joinpath("pipeline.log").write_text(run(["dvc", "repro"], repo, timeout=900).stdout)
    return repo


@pytest.fixture(scope="session")
def bundle_dir(pipeline_repo: Path) -> Path:
    """A real model bundle (model.onnx + model.json) exported by the pipeline."""
    return pipeline_repo / "models" / "export"
