"""prepare on a dirty folder: every bad file counted, every good one kept, splits stable."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from stages.params import Paths
from stages.prepare import PrepareConfig, prepare, split_of
from tests.helpers.images import broken, encode, variants
from tests.helpers.photos import sample_photos

RATIOS = {"train": 0.6, "val": 0.2, "test": 0.2}


def photos(label: str, count: int, skip: int = 0) -> list[Path]:
    return sample_photos(label, count, skip)


@pytest.fixture()
def dirty_raw(tmp_path: Path) -> Path:
    """PetImages-style `Cat/`, plain `dog/`, Kaggle flat names, and every kind of bad file."""
    raw = tmp_path / "raw"
    cats, dogs = raw / "Cat", raw / "dog"
    cats.mkdir(parents=True)
    dogs.mkdir()
    for p in photos("cat", 6):
        shutil.copy(p, cats / p.name)
    for p in photos("dog", 6):
        shutil.copy(p, dogs / p.name)
    source = photos("cat", 1, skip=20)[0]
    good = variants(source)
    (cats / "gray.jpg").write_bytes(good["grayscale"])
    (cats / "cmyk.jpg").write_bytes(good["cmyk"])
    (cats / "alpha.png").write_bytes(good["rgba_png"])
    (cats / "palette.png").write_bytes(good["palette_png"])
    (cats / "png_named.jpg").write_bytes(encode(Image.open(source), "PNG"))
    bad = broken(photos("dog", 1, skip=20)[0])
    for kind in ("empty", "text", "truncated", "tiny", "ico"):
        (dogs / f"bad_{kind}.jpg").write_bytes(bad[kind][0])
    # The same bytes twice under one label (one is kept) and under both labels (both dropped).
    shutil.copy(cats / photos("cat", 1)[0].name, cats / "copy_of_first.jpg")
    conflict = photos("dog", 1, skip=30)[0]
    shutil.copy(conflict, dogs / "conflict.jpg")
    shutil.copy(conflict, cats / "conflict.jpg")
    # Kaggle's flat layout, an unknown class and an OS droppings file.
    shutil.copy(photos("dog", 1, skip=40)[0], raw / "dog.40.jpg")
    (raw / "bird").mkdir()
    shutil.copy(photos("cat", 1, skip=50)[0], raw / "bird" / "tweety.jpg")
    (cats / ".DS_Store").write_bytes(b"\x00\x01")
    return raw


def run_prepare(raw: Path, out: Path, seed: int = 7) -> dict:
    return prepare(paths_for(raw, out), PrepareConfig(["cat", "dog"], 64, RATIOS, 32), seed)


def paths_for(raw: Path, prepared: Path) -> Paths:
    return Paths(raw, prepared, *(prepared.parent / n for n in ("ckpt", "export", "m", "p")))


def test_dirty_folder_counts_every_skip_and_keeps_every_good_photo(
    dirty_raw: Path, tmp_path: Path
) -> None:
    metrics = run_prepare(dirty_raw, tmp_path / "prepared")
    assert metrics["skipped_by_reason"] == {
        "empty": 1,
        "not_an_image": 1,
        "corrupt": 1,
        "too_small": 1,
        "unsupported_format": 1,
        "duplicate": 1,
        "conflicting_labels": 2,
        "unknown_label": 1,
    }
    # 6 cats + 5 convertible cat variants + 6 dogs + 1 flat-named dog.
    assert metrics["kept"] == 18
    assert metrics["files"] == metrics["kept"] + metrics["skipped"]
    assert metrics["converted_from_mode"] == {"CMYK": 1, "L": 1, "P": 1, "RGBA": 1}
    assert metrics["format_mismatch"] == 1

    manifest = pd.read_csv(tmp_path / "prepared" / "manifest.csv")
    assert len(manifest) == 18
    assert manifest["md5"].is_unique
    assert set(manifest["label"]) == {"cat", "dog"}
    assert "dog.40.jpg" in set(manifest["file"])
    for split in RATIOS:
        images = np.load(tmp_path / "prepared" / f"{split}_images.npy")
        labels = np.load(tmp_path / "prepared" / f"{split}_labels.npy")
        rows = manifest[manifest["split"] == split].sort_values("index")
        assert images.shape == (len(rows), 64, 64, 3) and images.dtype == np.uint8
        assert labels.tolist() == [["cat", "dog"].index(x) for x in rows["label"]]
        assert sum(metrics["split"][split][c] for c in ("cat", "dog")) == len(rows)
    meta = json.loads((tmp_path / "prepared" / "meta.json").read_text())
    assert meta["classes"] == ["cat", "dog"] and meta["image_size"] == 64


def test_split_is_deterministic_and_stable_when_photos_are_added(
    tmp_path: Path,
) -> None:
    raw = tmp_path / "raw"
    for label in ("cat", "dog"):
        (raw / label).mkdir(parents=True)
        for p in photos(label, 30):
            shutil.copy(p, raw / label / p.name)
    run_prepare(raw, tmp_path / "a")
    run_prepare(raw, tmp_path / "b")
    first = pd.read_csv(tmp_path / "a" / "manifest.csv")
    assert first.equals(pd.read_csv(tmp_path / "b" / "manifest.csv"))

    for label in ("cat", "dog"):
        for p in photos(label, 30, skip=30):
            shutil.copy(p, raw / label / p.name)
    run_prepare(raw, tmp_path / "c")
    grown = pd.read_csv(tmp_path / "c" / "manifest.csv")
    before = first.set_index("md5")["split"]
    after = grown.set_index("md5")["split"]
    assert len(grown) == 120
    assert (after.loc[before.index] == before).all(), "adding photos moved existing ones"

    run_prepare(raw, tmp_path / "d", seed=8)
    other_seed = pd.read_csv(tmp_path / "d" / "manifest.csv")
    assert not other_seed.set_index("md5")["split"].equals(after), "the seed must matter"


def test_split_ratios_hold_per_class() -> None:
    """Hash-based splitting is stratified: each class gets the ratios up to sampling noise."""
    for label in ("cat", "dog"):
        hashes = [hashlib.md5(f"{label}{i}".encode()).hexdigest() for i in range(5000)]
        splits = pd.Series([split_of(h, 42, RATIOS) for h in hashes]).value_counts(normalize=True)
        for name, ratio in RATIOS.items():
            assert abs(splits[name] - ratio) < 0.02, (label, name, splits[name])


def test_bad_ratios_are_refused(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="summing to 1"):
        PrepareConfig(["cat"], 64, {"train": 0.9, "val": 0.2, "test": 0.1})


def test_missing_raw_folder_says_how_to_get_it(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="dvc pull"):
        run_prepare(tmp_path / "nowhere", tmp_path / "out")
