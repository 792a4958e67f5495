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
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from omegaconf import DictConfig
from PIL import Image
from tqdm import tqdm

from contracts.imaging import ImageError, Limits, load
from stages.label_fixes import Applied, Corrections, load_corrections
from stages.params import SPLITS, Paths, load_params

IGNORED_NAMES = {".DS_Store", "Thumbs.db", "desktop.ini"}
EXTENSION_FORMATS = {
    ".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".webp": "WEBP",
    ".bmp": "BMP", ".gif": "GIF", ".tif": "TIFF", ".tiff": "TIFF",
}  # fmt: skip


@dataclass
class Photo:
    """The outcome of reading one raw file."""

    path: str
    label: str | None  # after the reviewed corrections (stages.label_fixes)
    md5: str = ""
    sha256: str = ""  # what known placeholders are dropped by
    original_label: str | None = None  # the folder's label, before any correction
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
    photo = Photo(path=str(path), label=label, original_label=label)
    if label is None:
        photo.reason = "unknown_label"
        return photo
    data = path.read_bytes()
    photo.md5 = hashlib.md5(data).hexdigest()
    photo.sha256 = hashlib.sha256(data).hexdigest()
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


def decode_all(candidates: list[tuple[Path, str]], image_size: int, limits: Limits) -> list[Photo]:
    """Every candidate through the image contract, on every core, with a progress bar."""
    jobs = [(path, label, image_size, limits) for path, label in candidates]
    with Pool(os.cpu_count() or 1) as pool:
        return list(
            tqdm(
                pool.imap(read_photo, jobs, chunksize=32),
                total=len(jobs),
                desc="prepare: decoding photos",
                unit="photo",
            )
        )


def write_pixels(path: Path, members: list[Photo], image_size: int) -> None:
    """uint8 [N, S, S, 3] pixels of `members`, written through a memory map."""
    images = np.lib.format.open_memmap(
        path, mode="w+", dtype=np.uint8, shape=(len(members), image_size, image_size, 3)
    )
    for index, photo in enumerate(members):
        images[index] = photo.pixels
    images.flush()
    del images


def write_split(
    split: str, members: list[Photo], classes: list[str], image_size: int, paths: Paths
) -> list[dict]:
    """The split's images, labels and original labels; returns its manifest rows."""
    write_pixels(paths.split_images(split), members, image_size)
    np.save(paths.split_labels(split), np.array([classes.index(p.label) for p in members], int))
    original = [classes.index(p.original_label) for p in members]
    np.save(paths.split_original_labels(split), np.array(original, dtype=np.int64))
    return [
        {
            "file": os.path.relpath(photo.path, paths.raw),
            "label": photo.label,
            "original_label": photo.original_label,
            "md5": photo.md5,
            "split": split,
            "index": index,
            "width": photo.width,
            "height": photo.height,
            "format": photo.format,
            "mode": photo.mode,
        }
        for index, photo in enumerate(members)
    ]


def write_dropped(dropped: list[Photo], classes: list[str], image_size: int, paths: Paths) -> None:
    """The test photos the corrections dropped, with their filed labels, so evaluate can
    still score the test split as it was filed (accuracy on the original labels)."""
    write_pixels(paths.dropped_images("test"), dropped, image_size)
    labels = np.array([classes.index(p.original_label) for p in dropped], dtype=np.int64)
    np.save(paths.dropped_labels("test"), labels)


def apply_corrections(
    photos: list[Photo], corrections: Corrections, paths: Paths, split: Callable[[str], str]
) -> tuple[list[Photo], list[Photo], Applied]:
    """Decodable photos relabelled or dropped as reviewed: (kept, dropped, what was done)."""
    applied, kept, dropped = Applied(), [], []
    files = {Path(os.path.relpath(p.path, paths.raw)).as_posix(): p for p in photos}
    for file, photo in files.items():
        if photo.reason:
            continue
        label, decided_by = corrections.decide(file, str(photo.label), photo.sha256)
        if label is None:
            counter = applied.dropped_by_hash if decided_by == "hash" else applied.dropped
            counter[split(photo.md5)] += 1
            photo.reason = "known_placeholder" if decided_by == "hash" else "label_fix_drop"
            dropped.append(photo)
            continue
        if label != photo.label:
            applied.relabelled[split(photo.md5)] += 1
            photo.label = label
        kept.append(photo)
    applied.not_found = sorted(set(corrections.fixes) - set(files))
    return kept, dropped, applied


def prepare(paths: Paths, cfg: PrepareConfig, seed: int) -> dict:
    """Run the whole stage; returns the metrics written to metrics/prepare.json."""
    corrections = load_corrections(paths.label_fixes, paths.drop_hashes, cfg.classes)
    photos = decode_all(discover(paths.raw, cfg.classes), cfg.image_size, cfg.limits)

    def split(md5: str) -> str:
        return split_of(md5, seed, cfg.ratios)

    readable, dropped, applied = apply_corrections(photos, corrections, paths, split)
    good, dup_skips = deduplicate(readable)
    skipped = Counter(p.reason for p in photos if p.reason) + dup_skips
    paths.prepared.mkdir(parents=True, exist_ok=True)
    assignments = {s: [p for p in good if split(p.md5) == s] for s in SPLITS}
    rows = [
        row
        for name, members in assignments.items()
        for row in write_split(name, members, cfg.classes, cfg.image_size, paths)
    ]
    dropped_test = {p.md5: p for p in dropped if split(p.md5) == "test"}  # one per content
    write_dropped(list(dropped_test.values()), cfg.classes, cfg.image_size, paths)
    pd.DataFrame(rows).to_csv(paths.manifest, index=False)
    meta = {
        "classes": cfg.classes,
        "image_size": cfg.image_size,
        "data_version": data_version(paths.raw),
    }
    paths.meta.write_text(json.dumps(meta, indent=2) + "\n")
    return {
        "files": len(photos),
        "kept": len(good),
        "skipped": sum(skipped.values()),
        "skipped_by_reason": dict(sorted(skipped.items())),
        "converted_from_mode": dict(
            sorted(Counter(p.mode for p in good if p.mode != "RGB").items())
        ),
        "format_mismatch": sum(1 for p in good if not extension_matches(p)),
        "split": split_counts(assignments, cfg.classes),
        "label_fixes": applied.report(SPLITS),
        "label_fix_rows_not_found": applied.not_found,  # rows reviewed on other photos
    }


def split_counts(assignments: dict[str, list[Photo]], classes: list[str]) -> dict:
    return {
        s: {**{c: sum(p.label == c for p in members) for c in classes}, "total": len(members)}
        for s, members in assignments.items()
    }


@dataclass(frozen=True)
class PrepareConfig:
    """params.yaml's `prepare` section, checked."""

    classes: list[str]
    image_size: int
    ratios: dict[str, float]
    min_side: int = 32

    def __post_init__(self) -> None:
        ratios = self.ratios
        if abs(sum(ratios.values()) - 1.0) > 1e-6 or set(ratios) != set(SPLITS):
            raise SystemExit(f"prepare.split must give {SPLITS} summing to 1, got {dict(ratios)}")
        object.__setattr__(self, "classes", [c.lower() for c in self.classes])

    @property
    def limits(self) -> Limits:
        return Limits(min_side=self.min_side)

    @classmethod
    def from_params(cls, section: DictConfig) -> PrepareConfig:
        return cls(
            classes=list(section.classes),
            image_size=int(section.image_size),
            ratios=dict(section.split),
            min_side=int(section.min_side),
        )


def main() -> None:
    params = load_params()
    cfg, paths = params.prepare, Paths.from_params(params)
    metrics = prepare(paths, PrepareConfig.from_params(cfg), int(params.seed))
    missing = metrics["label_fix_rows_not_found"]  # listed in prepare.json too
    if missing:
        print(f"prepare: WARNING: {len(missing)} label fix rows name no photo here: {missing}")
    paths.metrics.mkdir(parents=True, exist_ok=True)
    (paths.metrics / "prepare.json").write_text(json.dumps(metrics, indent=2) + "\n")
    fixes = metrics["label_fixes"]
    print(
        f"prepare: kept {metrics['kept']} of {metrics['files']} files; "
        f"skipped {metrics['skipped_by_reason'] or 'none'}; split "
        + ", ".join(f"{s} {metrics['split'][s]['total']}" for s in SPLITS)
        + f"; reviewed labels: relabelled {fixes['relabelled']}, dropped {fixes['dropped']}, "
        f"dropped by hash {fixes['dropped_by_hash']}"
    )


if __name__ == "__main__":
    main()
