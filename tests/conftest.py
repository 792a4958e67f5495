"""Shared fixtures: the committed photographs, a tiny bundle and a real pipeline run.

Two tiers: `tiny_bundle_dir` is a real bundle built in seconds (tests/helpers/tiny_bundle.py)
for the service tests; `pipeline_repo` runs the whole pipeline (minutes). Every test that
uses it, or a PostgreSQL server or an S3 API, is marked `slow` here, so
`pytest -m "not slow"` is the fast tier.

The `pipeline_repo` fixture copies the project into a temporary folder, puts the
committed sample photographs (tests/data/photos, 2 x 200) in data/raw and runs
`dvc exp run` there with small settings: the same four stages a user runs, so
`bundle_dir` is a bundle made by the project's own export code from a briefly
fine-tuned model. Nothing here reads ../shared.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helpers.commands import run
from tests.helpers.photos import LABELS, SAMPLE_DIR, fullres_photos, sample_photos
from tests.helpers.tiny_bundle import build_tiny_bundle

ROOT = Path(__file__).resolve().parents[1]

# Small settings, as Hydra overrides: seconds per stage on two CPU cores, still a useful model.
SMALL_OVERRIDES = [
    "prepare.image_size=128",
    "prepare.split.train=0.6",
    "prepare.split.val=0.2",
    "prepare.split.test=0.2",
    "data.batch_size=32",
    "data.train_size=128",  # the prepared size: the sample is too small to learn from smaller crops
    "trainer.max_epochs=3",
    "evaluate.gallery_size=8",
    "export.compare_photos=32",
    "export.int8.max_accuracy_drop=1.0",  # three epochs on 240 photos: int8 may lose more than the default allows
]
EXPERIMENT_NAME = "small-sample"


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    """tests/data/photos: {cat,dog}/N.jpg, 200 downscaled photos per class."""
    return SAMPLE_DIR


@pytest.fixture(scope="session", name="fullres_photos")
def fullres_photos_fixture() -> list[tuple[Path, str]]:
    """The full-size uploads (cat.N.jpg, dog.N.jpg) with their true labels."""
    return fullres_photos()


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


# Files under data/ that git versions (not pipeline outputs): prepare reads the reviewed
# label fixes and the placeholder hashes.
VERSIONED_DATA = ("data/.gitignore", "data/label_fixes.csv", "data/drop_hashes.csv")


def copy_project(dest: Path) -> None:
    for name in project_files():
        generated = name.startswith(("data/", "models/", "metrics/", "plots/"))
        if (generated and name not in VERSIONED_DATA) or name == "dvc.lock":
            continue
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, target)


@pytest.fixture(scope="session")
def pipeline_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the project after a real `dvc exp run` on the 2 x 200 committed photos.

    `dvc exp run -S` composes conf/ with the overrides into params.yaml (Hydra), then
    reproduces all four stages, exactly as a user's experiment does.
    """
    repo = tmp_path_factory.mktemp("pipeline") / "repo"
    copy_project(repo)
    for label in LABELS:
        target = repo / "data" / "raw" / label
        target.mkdir(parents=True)
        for photo in sample_photos(label):
            shutil.copy2(photo, target / photo.name)
    run(["git", "init", "-q"], repo)
    run(["git", "add", "-A"], repo)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "test copy"], repo)
    overrides = [arg for override in SMALL_OVERRIDES for arg in ("-S", override)]
    experiment = ["dvc", "exp", "run", "--name", EXPERIMENT_NAME, *overrides]
    # About a minute on two idle cores; CATSDOGS_PIPELINE_TIMEOUT gives a busy machine more.
    timeout = float(os.environ.get("CATSDOGS_PIPELINE_TIMEOUT", "900"))
    repo.joinpath("pipeline.log").write_text(run(experiment, repo, timeout=timeout).stdout)
    return repo


@pytest.fixture(scope="session")
def pipeline_bundle_dir(pipeline_repo: Path) -> Path:
    """A real model bundle (model.onnx + model.json) exported by the pipeline."""
    return pipeline_repo / "models" / "export"


@pytest.fixture(scope="session")
def bundle_dir(pipeline_bundle_dir: Path) -> Path:
    """The bundle a test serves: the pipeline's here; tests/serving/ overrides it (tiny)."""
    return pipeline_bundle_dir


@pytest.fixture(scope="session")
def tiny_bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real bundle (small CNN, 64 px, seconds of training) made with export's own code."""
    return build_tiny_bundle(tmp_path_factory.mktemp("tiny-bundle"))


# Fixtures that run the pipeline, start a server outside the process or train and register
# two bundles (about a minute on a busy machine): their tests are slow.
SLOW_FIXTURES = {"pipeline_repo", "postgres", "s3_endpoint", "promoted_registry"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Whatever waits for the pipeline run, a PostgreSQL server or an S3 API is slow: out of
    `pytest -m "not slow"`, the fast tier (modules that drive DVC remotes or a browser mark
    themselves)."""
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        uses = set(getattr(item, "fixturenames", ())) & SLOW_FIXTURES
        if uses or "postgresql" in params.values():
            item.add_marker(pytest.mark.slow)
