"""A real MLflow registry (SQLite) holding two promoted tiny bundles, for the lifecycle
scripts' tests.

Each version is registered by the promotion gate's own code (stages/registry.register:
signature, input example, tags, alias), as `python -m stages.promote` does on acceptance:
first the weaker one-epoch twin, then the tiny bundle, so `champion` ends on v2.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf

from stages import promotion, registry
from tests.helpers import tiny_bundle


@dataclass(frozen=True)
class Promoted:
    """One registered version: its registry version, bundle folder and bundle version."""

    version: str
    directory: Path
    bundle_version: str


def build_twins(root: Path) -> tuple[Path, Path]:
    """The tiny bundle (eight epochs) and its weaker one-epoch twin: two bundle versions."""
    strong = tiny_bundle.build_tiny_bundle(root / "strong")
    saved = tiny_bundle.EPOCHS
    tiny_bundle.EPOCHS = 1
    try:
        weak = tiny_bundle.build_tiny_bundle(root / "weak")
    finally:
        tiny_bundle.EPOCHS = saved
    return weak, strong


def promote_bundle(directory: Path, photos: promotion.Photos, reason: str) -> Promoted:
    """Score, register and alias one bundle with stages/registry, leave models/registry.json
    beside it (the folder that holds it plays models/)."""
    timing = OmegaConf.create({"batch_size": 32, "photos": 32})
    scored = promotion.score_bundle("challenger", directory, photos, timing)
    tags = {"bundle_version": scored.manifest.version, "data_version": "tiny-sample"}
    version = registry.register(scored, photos.images, tags, "lifecycle-test")
    registry.record(scored, version, reason).write(directory)
    return Promoted(version, directory, scored.manifest.version)


def two_promoted_versions(root: Path) -> tuple[Promoted, Promoted]:
    """An SQLite registry at root/mlflow.db with v1 (weak) then v2 (strong, the champion).

    MLflow writes run artifacts under the working directory: the caller runs this with
    root as the working directory and MLFLOW_TRACKING_URI pointing at root/mlflow.db."""
    assert Path.cwd() == root and os.environ["MLFLOW_TRACKING_URI"].endswith("mlflow.db")
    images, labels = tiny_bundle.labelled_photos(tiny_bundle.SIZE)
    photos = promotion.Photos(images, labels, [f"photo {i}" for i in range(len(labels))])
    weak, strong = build_twins(root)
    first = promote_bundle(weak, photos, "first champion")
    second = promote_bundle(strong, photos, "significantly more accurate")
    assert (first.version, second.version) == ("1", "2")
    return first, second
