"""Stage 1: raw photographs -> validated, deduplicated, split arrays.

Every photo goes through the image contract (contracts.imaging) once, here, so training
reads ready-made pixels instead of decoding JPEGs every epoch. A bad file is counted
with its reason and skipped; it never stops the stage.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections import Counter
from dataclasses import dataclass
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from PIL import Image
from tqdm import tqdm

from contracts.imaging import ImageError, Limits, load
from stages.params import Paths, load_params

SPLITS = ("train", "val", "test")
IGNORED_NAMES = {".DS_Store", "Thumbs.db", "desktop.ini"}
EXTENSION_FORMATS = {
    ".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".webp": "WEBP",
    ".bmp": "BMP", ".gif": "GIF", ".tif": "TIFF", ".tiff": "TIFF",
}  # fmt: skip


@dataclass
class Photo:
    """The outcome of reading one raw file."""

    path: str
    label: str | None
    md5: str = ""
    pixels: np.ndarray | None = None
    reason: str = ""  # why it was skipped; empty when kept
    width: int = 0
    height: int = 0
    format: str = ""
    mode: str = ""


def label_of(relative: Path, classes: list[str]) -> str | None:
    """Class from the top folder (case-insensitive) or a Kaggle name like cat.123.jpg."""
    if len(relative.parts) > 1:
        candidate = relative.parts[0].lower()
    else:
        candidate = relative.name.split(".")[0].lower()
    return candidate if candidate in classes else None


def discover(raw_dir: Path, classes: list[str]) -> list[tuple[Path, str | None]]:
    """All candidate files under raw_dir with their label (None when unknown), sorted."""
    if not raw_dir.is_dir():
        raise SystemExit(f"{raw_dir} does not exist: run `dvc pull data/raw.dvc` first.")
    files = [
        p
        for p in sorted(raw_dir.rglob("*"))
        if p.is_file() and p.name not in IGNORED_NAMES and not p.name.startswith("._")
    ]
    return [(p, label_of(p.relative_to(raw_dir), classes)) for p in files]


def read_photo(job: tuple[Path, str | None, int, Limits]) -> Photo:
    path, label, size, limits = job
    photo = Photo(path=str(path), label=label)
    if label is None:
        photo.reason = "unknown_label"
        return photo
    data = path.read_bytes()
    photo.md5 = hashlib.md5(data).hexdigest()
    try:
        photo.pixels = load(data, size, limits)
        with Image.open(io.BytesIO(data)) as img:
            photo.width, photo.height = img.size
            photo.format, photo.mode = img.format or "", img.mode
    except ImageError as err:
        photo.reason = err.reason
    return photo


def split_of(md5: str, seed: int, ratios: dict[str, float]) -> str:
    """A photo's split depends only on its content and the seed, never on its neighbours.

    Each class is split independently by this hash, so the splits are stratified
    (up to sampling noise) and adding photos never moves existing ones.
    """
    u = int(hashlib.sha256(f"{seed}:{md5}".encode()).hexdigest()[:12], 16) / 16**12
    edge = 0.0
    for name in SPLITS:
        edge += ratios[name]
        if u < edge:
            return name
    return SPLITS[-1]


def extension_matches(photo: Photo) -> bool:
    """False for a photo whose extension lies about its format (a PNG named .jpg)."""
    expected = EXTENSION_FORMATS.get(Path(photo.path).suffix.lower())
    return (
        expected is None
        or photo.format == expected
        or (expected, photo.format)
        == (
            "JPEG",
            "MPO",
        )
    )


def deduplicate(photos: list[Photo]) -> tuple[list[Photo], Counter]:
    """Keep one copy of byte-identical photos; drop every copy if their labels disagree."""
    skipped: Counter = Counter()
    by_hash: dict[str, list[Photo]] = {}
    for photo in photos:
        by_hash.setdefault(photo.md5, []).append(photo)
    kept = []
    for copies in by_hash.values():
        if len({p.label for p in copies}) > 1:
            skipped["conflicting_labels"] += len(copies)
            continue
        kept.append(copies[0])
        if len(copies) > 1:
            skipped["duplicate"] += len(copies) - 1
    return kept, skipped


def data_version(raw_dir: Path) -> str:
    """The DVC hash of the raw data (from its .dvc file), recorded in the model bundle."""
    dvc_file = raw_dir.with_suffix(".dvc")
    if not dvc_file.exists():
        return "untracked"
    return str(yaml.safe_load(dvc_file.read_text())["outs"][0]["md5"])


def prepare(
    raw_dir: Path,
    out_dir: Path,
    classes: list[str],
    image_size: int,
    ratios: dict[str, float],
    seed: int,
    min_side: int = 32,
    workers: int | None = None,
) -> dict:
    """Run the whole stage; returns the metrics written to metrics/prepare.json."""
    if abs(sum(ratios.values()) - 1.0) > 1e-6 or set(ratios) != set(SPLITS):
        raise SystemExit(f"prepare.split must give {SPLITS} summing to 1, got {dict(ratios)}")
    classes = [c.lower() for c in classes]
    limits = Limits(min_side=min_side)
    candidates = discover(raw_dir, classes)
    jobs = [(path, label, image_size, limits) for path, label in candidates]
    workers = workers or os.cpu_count() or 1
    with Pool(workers) as pool:
        photos = list(
            tqdm(
                pool.imap(read_photo, jobs, chunksize=32),
                total=len(jobs),
                desc="prepare: decoding photos",
                unit="photo",
            )
        )
    skipped = Counter(p.reason for p in photos if p.reason)
    good = [p for p in photos if not p.reason]
    good, dup_skips = deduplicate(good)
    skipped.update(dup_skips)

    format_mismatch = sum(1 for p in good if not extension_matches(p))
    converted = Counter(p.mode for p in good if p.mode != "RGB")

    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    split_counts: dict[str, dict[str, int]] = {s: dict.fromkeys(classes, 0) for s in SPLITS}
    assignments = {s: [p for p in good if split_of(p.md5, seed, ratios) == s] for s in SPLITS}
    for split, members in assignments.items():
        images = np.lib.format.open_memmap(
            out_dir / f"{split}_images.npy",
            mode="w+",
            dtype=np.uint8,
            shape=(len(members), image_size, image_size, 3),
        )
        labels = np.empty(len(members), dtype=np.int64)
        for index, photo in enumerate(members):
            images[index] = photo.pixels
            labels[index] = classes.index(photo.label)
            split_counts[split][photo.label] += 1
            rows.append(
                {
                    "file": os.path.relpath(photo.path, raw_dir),
                    "label": photo.label,
                    "md5": photo.md5,
                    "split": split,
                    "index": index,
                    "width": photo.width,
                    "height": photo.height,
                    "format": photo.format,
                    "mode": photo.mode,
                }
            )
        images.flush()
        del images
        np.save(out_dir / f"{split}_labels.npy", labels)
    pd.DataFrame(rows).to_csv(out_dir / "manifest.csv", index=False)
    meta = {"classes": classes, "image_size": image_size, "data_version": data_version(raw_dir)}
    (out_dir / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    kept = len(good)
    return {
        "files": len(photos),
        "kept": kept,
        "skipped": sum(skipped.values()),
        "skipped_by_reason": dict(sorted(skipped.items())),
        "converted_from_mode": dict(sorted(converted.items())),
        "format_mismatch": format_mismatch,
        "split": {s: {**split_counts[s], "total": len(assignments[s])} for s in SPLITS},
    }


def main() -> None:
    params = load_params()
    cfg, paths = params.prepare, Paths.from_params(params)
    metrics = prepare(
        raw_dir=paths.raw,
        out_dir=paths.prepared,
        classes=list(cfg.classes),
        image_size=int(cfg.image_size),
        ratios=dict(cfg.split),
        seed=int(params.seed),
        min_side=int(cfg.min_side),
    )
    paths.metrics.mkdir(parents=True, exist_ok=True)
    (paths.metrics / "prepare.json").write_text(json.dumps(metrics, indent=2) + "\n")
    print(
        f"prepare: kept {metrics['kept']} of {metrics['files']} files; "
        f"skipped {metrics['skipped_by_reason'] or 'none'}; split "
        + ", ".join(f"{s} {metrics['split'][s]['total']}" for s in SPLITS)
    )


if __name__ == "__main__":
    main()
