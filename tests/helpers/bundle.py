"""The tests' small model bundle, exported into any folder: what `.ci/image.sh` builds into
the image, since CI has no trained bundle.

    python -m tests.helpers.bundle OUT_DIR

Runs the same `dvc exp run` as the `pipeline_repo` fixture (a copy of the project, the
committed 2 x 200 photos, SMALL_OVERRIDES), copies `models/export` to OUT_DIR and prints
one JSON line: the bundle's model version and the full-size photo it labels right most
surely, with its label, for the smoke test. The result is cached under the cats-dogs
cache by a hash of what the pipeline reads, so a second CI run trains nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from tests.conftest import EXPERIMENT_NAME, SMALL_OVERRIDES, copy_project, project_files
from tests.helpers.commands import run
from tests.helpers.photos import LABELS, fullres_photos, sample_photos

ROOT = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("CATSDOGS_CACHE", Path.home() / ".cache" / "cats-dogs"))
# What the pipeline's result depends on; the service code and the docs do not retrain it.
INPUTS = ("stages/", "conf/", "dvc.yaml", "params.yaml", "requirements.txt", "tests/data/photos/")


@dataclass(frozen=True)
class SmokeTarget:
    """What the smoke test of an image holding this bundle must see."""

    model_version: str
    photo: str
    label: str


def inputs_hash() -> str:
    """sha256 over the files the pipeline reads, and the overrides it runs with."""
    digest = hashlib.sha256(json.dumps(SMALL_OVERRIDES).encode())
    for name in sorted(f for f in project_files() if f.startswith(INPUTS)):
        digest.update(name.encode() + b"\0" + (ROOT / name).read_bytes())
    return digest.hexdigest()[:16]


def export_bundle(dest: Path) -> None:
    """Train briefly and export, as the pipeline fixture does, into `dest`."""
    with tempfile.TemporaryDirectory(prefix="ci-bundle-") as tmp:
        repo = Path(tmp) / "repo"
        copy_project(repo)
        for label in LABELS:
            target = repo / "data" / "raw" / label
            target.mkdir(parents=True)
            for photo in sample_photos(label):
                shutil.copy2(photo, target / photo.name)
        run(["git", "init", "-q"], repo)
        run(["git", "add", "-A"], repo)
        run(["git", "-c", "user.name=ci", "-c", "user.email=ci@ci", "commit", "-qm", "ci"], repo)
        overrides = [arg for override in SMALL_OVERRIDES for arg in ("-S", override)]
        run(["dvc", "exp", "run", "--name", EXPERIMENT_NAME, *overrides], repo, timeout=1800)
        shutil.copytree(repo / "models" / "export", dest)


def smoke_target(bundle: Path) -> SmokeTarget:
    """The full-size photo the bundle labels right most surely (a briefly trained model
    misses some): the smoke test checks the deployment, not the model's accuracy."""
    from serving import imaging
    from serving.inference.onnx_model import Model

    model = Model(bundle, threads=1)
    photos = fullres_photos()
    batch = imaging.to_batch([imaging.load(p.read_bytes(), model.size) for p, _ in photos])
    right = [
        (float(row.max()), photo, truth)
        for (photo, truth), row in zip(photos, model.predict(batch), strict=True)
        if model.classes[int(row.argmax())] == truth
    ]
    if not right:
        raise SystemExit(f"the bundle in {bundle} labels none of the full-size photos right")
    _, photo, label = max(right)
    version = json.loads((bundle / "model.json").read_text())["version"]
    return SmokeTarget(version, str(photo.relative_to(ROOT)), label)


def main(out: Path) -> int:
    cached = CACHE / f"ci-bundle-{inputs_hash()}"
    if not (cached / "model.json").is_file():
        print(f"Exporting the test bundle into {cached} (about a minute)", file=sys.stderr)
        shutil.rmtree(cached, ignore_errors=True)
        export_bundle(cached)
    else:
        print(f"Test bundle from the cache: {cached}", file=sys.stderr)
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(cached, out)
    print(json.dumps(asdict(smoke_target(out))))
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(f"usage: python -m tests.helpers.bundle OUT_DIR\n{__doc__}")
    sys.exit(main(Path(sys.argv[1])))
