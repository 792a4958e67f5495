"""Regenerate the tests' committed photographs (tests/data/) from the shared sample data.

The tests must run where ../shared does not exist (a GitHub runner), so a small set of
real photographs is committed under tests/data/. This script is how that set was made:

- tests/data/photos/{cat,dog}/N.jpg: the first PER_CLASS photos of each class from
  ../shared/data/cats_dogs (180x180), downscaled to SIDE px, JPEG quality QUALITY. Enough
  for the end-to-end pipeline test to train a useful model in seconds.
- tests/data/fullres/{cat,dog}.N.jpg: the full-size uploads from ../shared/data/fullres,
  byte for byte (EXIF-free originals, 100 to 500 px a side): what a user would send.

Usage: python scripts/make_test_photos.py --shared ../shared/data
"""

from __future__ import annotations

import argparse
import io
import shutil
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests" / "data"
PER_CLASS = 200
SIDE = 128
QUALITY = 75
BUDGET_BYTES = 3_000_000  # the most the fixture set may weigh in git


def downscale(source: Path) -> bytes:
    """The photo with its shorter side at SIDE px, re-encoded as a baseline JPEG."""
    with Image.open(source) as img:
        img = img.convert("RGB")
        scale = SIDE / min(img.size)
        size = (round(img.width * scale), round(img.height * scale))
        buffer = io.BytesIO()
        img.resize(size, Image.Resampling.LANCZOS).save(
            buffer, "JPEG", quality=QUALITY, optimize=True
        )
    return buffer.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--shared",
        type=Path,
        required=True,
        help="the sample data holding cats_dogs/ and fullres/ (../shared/data on the team's machines)",
    )
    args = parser.parse_args()
    if not (args.shared / "cats_dogs").is_dir():
        raise SystemExit(
            f"No sample photographs in {args.shared} (expected cats_dogs/ and fullres/)"
        )
    for folder in ("photos", "fullres"):
        shutil.rmtree(OUT / folder, ignore_errors=True)
    for label in ("cat", "dog"):
        target = OUT / "photos" / label
        target.mkdir(parents=True)
        sources = sorted((args.shared / "cats_dogs" / label).glob("*.jpg"))[:PER_CLASS]
        for source in sources:
            (target / source.name).write_bytes(downscale(source))
    (OUT / "fullres").mkdir()
    for source in sorted((args.shared / "fullres").glob("*.jpg")):
        shutil.copy2(source, OUT / "fullres" / source.name)
    total = sum(p.stat().st_size for p in OUT.rglob("*.jpg"))
    print(f"{OUT}: {sum(1 for _ in OUT.rglob('*.jpg'))} photos, {total / 1e6:.2f} MB")
    if total > BUDGET_BYTES:
        raise SystemExit(f"over the {BUDGET_BYTES / 1e6:.0f} MB budget: lower PER_CLASS or SIDE")


if __name__ == "__main__":
    main()
