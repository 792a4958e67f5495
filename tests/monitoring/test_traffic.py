"""The traffic simulator's inputs and shifts."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from monitoring import traffic
from tests.helpers.photos import FULLRES_DIR, SAMPLE_DIR

ROOT = Path(__file__).resolve().parents[2]
FULLRES = FULLRES_DIR
CATS_DOGS = SAMPLE_DIR


# ---------------------------------------------------------------- the simulator's inputs


def test_simulator_reads_flat_and_class_folder_layouts(tmp_path: Path) -> None:
    flat = traffic.collect_photos(FULLRES)
    assert len(flat) == 50
    assert {p.label for p in flat} == {"cat", "dog"}
    assert sum(p.label == "cat" for p in flat) == 25

    # Class subfolders, named in any case; non-images and unlabelled flat files are skipped.
    for folder, src in [("Cat", "cat.1.jpg"), ("DOG", "dog.1.jpg")]:
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "a.jpg").write_bytes((FULLRES / src).read_bytes())
        (tmp_path / folder / "notes.txt").write_text("not a photo")
    (tmp_path / "photo.jpg").write_bytes((FULLRES / "cat.2.jpg").read_bytes())
    (tmp_path / "cat.7.jpg").write_bytes((FULLRES / "cat.2.jpg").read_bytes())
    found = sorted((p.label, p.path.name) for p in traffic.collect_photos(tmp_path))
    assert found == [("cat", "a.jpg"), ("cat", "cat.7.jpg"), ("dog", "a.jpg")]

    planned = traffic.plan(flat, count=30, only_class="CAT", seed=0)
    assert len(planned) == 30 and {p.label for p in planned} == {"cat"}
    assert len({p.path for p in planned}) == 25  # cycles after all 25 cats


def _mean_pixels(data: bytes) -> np.ndarray:
    import io

    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img.convert("RGB"), dtype=np.float64)


def test_simulated_shifts_change_the_photo_as_described() -> None:
    data = (FULLRES / "dog.3.jpg").read_bytes()
    original = _mean_pixels(data)
    dark = _mean_pixels(traffic.shift_image(data, grayscale=False, darken=0.35))
    assert dark.mean() == pytest.approx(original.mean() * 0.35, rel=0.05)
    gray = _mean_pixels(traffic.shift_image(data, grayscale=True, darken=None))
    assert np.abs(gray[..., 0] - gray[..., 1]).max() <= 3  # channels equal up to JPEG noise
    assert not math.isclose(np.abs(original[..., 0] - original[..., 2]).mean(), 0, abs_tol=3)


def test_named_shifts_blur_crop_darken_and_drop_colour() -> None:
    data = (FULLRES / "dog.3.jpg").read_bytes()
    original = _mean_pixels(data)
    h, w = original.shape[:2]

    def shifted(name: str) -> np.ndarray:
        return _mean_pixels(traffic.shift_image(data, False, None, (name,)))

    dark = shifted("darken")
    assert dark.mean() == pytest.approx(original.mean() * traffic.DARKEN_FACTOR, rel=0.05)
    gray = shifted("grayscale")
    assert np.abs(gray[..., 0] - gray[..., 1]).max() <= 3
    blur = shifted("blur")
    assert blur.shape == original.shape
    # Blurring removes fine detail: neighbouring pixels differ far less.
    assert np.abs(np.diff(blur, axis=1)).mean() < 0.5 * np.abs(np.diff(original, axis=1)).mean()
    crop = shifted("crop")
    assert crop.shape[:2] == (round(h * traffic.CROP_SHARE), round(w * traffic.CROP_SHARE))
    with pytest.raises(ValueError, match="unknown shift"):
        traffic.shift_image(data, False, None, ("sepia",))


@pytest.mark.parametrize("command", ["simulate", "report"])
def test_every_command_explains_itself(command: str, capsys: pytest.CaptureFixture) -> None:
    """`--help` renders (a bare % in a help text once crashed argparse)."""
    from monitoring import cli

    with pytest.raises(SystemExit) as done:
        cli.main([command, "--help"])
    assert done.value.code == 0 and "usage:" in capsys.readouterr().out
