"""The committed test photographs (tests/data/, made by scripts/make_test_photos.py).

Tests read these and nothing else: ../shared exists on the team's machines, not on a
GitHub runner.
"""

from __future__ import annotations

from pathlib import Path

DATA = Path(__file__).resolve().parents[1] / "data"
SAMPLE_DIR = DATA / "photos"  # {cat,dog}/N.jpg, downscaled to 128 px: for training and prepare
FULLRES_DIR = DATA / "fullres"  # {cat,dog}.N.jpg at their original size: what users upload
LABELS = ("cat", "dog")


def sample_photos(label: str, count: int | None = None, skip: int = 0) -> list[Path]:
    """Downscaled photos of one class, in a stable order."""
    photos = sorted((SAMPLE_DIR / label).glob("*.jpg"))
    if not photos:
        raise FileNotFoundError(f"no committed photos in {SAMPLE_DIR / label}")
    return photos[skip:] if count is None else photos[skip : skip + count]


def fullres_photos() -> list[tuple[Path, str]]:
    """Full-size uploads with their true labels (from the file name, `cat.N.jpg`)."""
    photos = sorted(FULLRES_DIR.glob("*.jpg"))
    if not photos:
        raise FileNotFoundError(f"no committed full-size photos in {FULLRES_DIR}")
    return [(path, true_label(path)) for path in photos]


def true_label(path: Path) -> str:
    return path.name.split(".")[0]
