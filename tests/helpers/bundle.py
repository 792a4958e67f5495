"""The tests' tiny model bundle, exported into any folder: what `.ci/image.sh` builds into
the image, since CI has no trained bundle.

    python -m tests.helpers.bundle OUT_DIR

Builds the fast tier's tiny bundle (tests/helpers/tiny_bundle.py: the export code on a
small CNN trained for seconds) in OUT_DIR and prints one JSON line: the bundle's model
version and the full-size photo it labels right most surely, with its label, for the
smoke test.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from tests.helpers.photos import fullres_photos
from tests.helpers.tiny_bundle import build_tiny_bundle

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class SmokeTarget:
    """What the smoke test of an image holding this bundle must see."""

    model_version: str
    photo: str
    label: str


def smoke_target(bundle: Path) -> SmokeTarget:
    """The full-size photo the bundle labels right most surely (a briefly trained model
    misses some): the smoke test checks the deployment, not the model's accuracy."""
    from contracts import imaging
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
    print(f"Building the tiny test bundle in {out} (seconds)", file=sys.stderr)
    build_tiny_bundle(out)
    print(json.dumps(asdict(smoke_target(out))))
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(f"usage: python -m tests.helpers.bundle OUT_DIR\n{__doc__}")
    sys.exit(main(Path(sys.argv[1])))
