"""The public photographs: Microsoft's "Kaggle Cats and Dogs" archive -> data/raw/{cat,dog}/.

For a clone without the team's sample remote, `python -m stages.public_data`:
1. imports the archive with `dvc import-url` into data/public/ (DVC records the source and
   the file's md5 in data/public/kagglecatsanddogs_5340.zip.dvc, and caches it),
2. refuses it unless its size and sha256 are the declared ones (DVC knows no sha256),
3. writes photos N = 1001..6000 of each class, the team sample's photos but at full size
   and with the archive's bytes untouched, into data/raw/{cat,dog}/N.jpg,
4. `dvc add`s data/raw, so data/raw.dvc (and the bundle's data version) names them.

Corrupt and empty files are copied as they are: prepare refuses them with a counted
reason. It is not a dvc.yaml stage: data/raw.dvc owns data/raw, and `dvc repro` must never
download 787 MB for the team, whose photos come from their remote.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import shutil
import subprocess
import sys
import zipfile
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

from stages.params import Paths, load_params


@dataclass(frozen=True)
class Archive:
    """Where the photos come from, what the file must be, and which photos to take."""

    url: str
    sha256: str
    size: int | None  # bytes; None: not declared (then only the sha256 is checked)
    first: int = 1001  # image numbers N taken from each class, inclusive:
    last: int = 6000  # the same photos as the team's sample

    @property
    def filename(self) -> str:
        return Path(urlparse(self.url).path).name


# The archive TensorFlow Datasets' cats_vs_dogs downloads. Size: the Content-Length that
# download.microsoft.com sends (wget logs in public notebooks); sha256: as published in
# gomlx's examples/dogsvscats (TFDS's checksum file still names the older 3367a archive).
KAGGLE_PET_IMAGES = Archive(
    url="https://download.microsoft.com/download/3/E/1/3E1C3F21-ECDB-4869-8368-6DEBA77B919F/"
    "kagglecatsanddogs_5340.zip",
    sha256="b7974bd00a84a99921f36ee4403f089853777b5ae8d151c76a86e64900334af9",
    size=824_887_076,
)
MEMBER = re.compile(r"^PetImages/(Cat|Dog)/(\d+)\.jpg$")  # Thumbs.db and the readme are not photos
PUBLIC_DIR = Path("data/public")


class ArchiveError(SystemExit):
    """The archive is not the declared one, or the photos cannot be written: stop, say why."""


@dataclass(frozen=True)
class Extracted:
    """What went into data/raw: photos per class, of which empty files."""

    per_class: dict[str, int]
    empty: int
    skipped_outside_range: int


def dvc(*args: str) -> None:
    """Run this environment's DVC; its output goes to the user's terminal."""
    result = subprocess.run([sys.executable, "-m", "dvc", *args], check=False)
    if result.returncode != 0:
        raise ArchiveError(f"dvc {' '.join(args)} failed ({result.returncode}): see above")


def dvc_source(url: str) -> str:
    """DVC takes http(s)://, s3://, ... as URLs but a local file as a path, not file://."""
    parsed = urlparse(url)
    return url2pathname(parsed.path) if parsed.scheme == "file" else url


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def verify(path: Path, archive: Archive) -> None:
    """Refuse a file whose size or sha256 differs from the declared ones."""
    size = path.stat().st_size
    if archive.size is not None and size != archive.size:
        raise ArchiveError(f"{path} has {size} bytes; {archive.url} should have {archive.size}")
    digest = sha256_of(path)
    if digest != archive.sha256:
        raise ArchiveError(
            f"{path} has sha256 {digest}; {archive.url} should have {archive.sha256}"
        )


def import_archive(archive: Archive, public_dir: Path = PUBLIC_DIR) -> Path:
    """`dvc import-url` the archive (once) and prove it; a refused file is removed again."""
    target = public_dir / archive.filename
    dvc_file = target.with_name(target.name + ".dvc")
    if target.is_file() and dvc_file.is_file():
        print(f"{target} is already imported ({dvc_file}); checking it")
    else:
        public_dir.mkdir(parents=True, exist_ok=True)
        print(f"Importing {archive.url} into {target} (dvc import-url)")
        dvc("import-url", "--force", dvc_source(archive.url), str(target))
    try:
        verify(target, archive)
    except ArchiveError:
        target.unlink(missing_ok=True)
        dvc_file.unlink(missing_ok=True)
        raise
    print(f"{target}: size and sha256 as declared ({archive.sha256[:16]}...)")
    return target


def chosen_members(names: list[str], first: int, last: int) -> tuple[dict[str, Path], int]:
    """Archive member -> data/raw-relative path for each photo N in [first, last]."""
    chosen, outside = {}, 0
    for name in names:
        match = MEMBER.match(name)
        if not match:
            continue
        label, number = match.group(1).lower(), int(match.group(2))
        if first <= number <= last:
            chosen[name] = Path(label) / f"{number}.jpg"
        else:
            outside += 1
    return chosen, outside


def extract(zip_path: Path, raw_dir: Path, first: int, last: int) -> Extracted:
    """Write the chosen photos, bytes untouched, into a fresh raw_dir (all or nothing)."""
    partial = raw_dir.with_name(raw_dir.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    per_class: Counter = Counter()
    empty = 0
    with zipfile.ZipFile(zip_path) as archive:
        chosen, outside = chosen_members(archive.namelist(), first, last)
        for member, relative in sorted(chosen.items(), key=lambda item: str(item[1])):
            target = partial / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            data = archive.read(member)
            target.write_bytes(data)
            per_class[relative.parent.name] += 1
            empty += not data
    if not per_class:
        shutil.rmtree(partial, ignore_errors=True)
        raise ArchiveError(
            f"{zip_path} holds no PetImages/{{Cat,Dog}}/N.jpg with N in {first}..{last}"
        )
    if raw_dir.exists():
        shutil.rmtree(raw_dir)  # only now: a failed extraction leaves the old photos
    partial.rename(raw_dir)
    return Extracted(dict(sorted(per_class.items())), empty, outside)


def fetch(archive: Archive, raw_dir: Path, replace_raw: bool = False) -> Extracted:
    """The whole path: import, prove, extract into data/raw, track it with DVC."""
    if raw_dir.exists() and any(raw_dir.iterdir()) and not replace_raw:
        raise ArchiveError(
            f"{raw_dir} already holds photos; add --replace to swap them for the public ones"
        )
    zip_path = import_archive(archive)
    extracted = extract(zip_path, raw_dir, archive.first, archive.last)
    print(f"Tracking {raw_dir} with DVC (dvc add): {raw_dir}.dvc now names these photos")
    dvc("add", str(raw_dir))
    return extracted


def parse_args(argv: list[str] | None) -> tuple[Archive, bool]:
    parser = argparse.ArgumentParser(prog="python -m stages.public_data", description=__doc__)
    parser.add_argument("--url", help="another copy of the archive (https://, file://, s3://...)")
    parser.add_argument("--sha256", help="that copy's sha256 (required with --url)")
    parser.add_argument("--size", type=int, help="that copy's size in bytes (optional)")
    parser.add_argument("--first", type=int, default=KAGGLE_PET_IMAGES.first)
    parser.add_argument("--last", type=int, default=KAGGLE_PET_IMAGES.last)
    parser.add_argument("--replace", action="store_true", help="replace the photos in paths.raw")
    args = parser.parse_args(argv)
    archive = replace(KAGGLE_PET_IMAGES, first=args.first, last=args.last)
    if args.url:
        if not args.sha256:
            parser.error("--url needs --sha256: every archive is checked before it is used")
        archive = replace(archive, url=args.url, sha256=args.sha256.lower(), size=args.size)
    return archive, args.replace


def main(argv: list[str] | None = None) -> None:
    archive, replace_raw = parse_args(argv)
    raw_dir = Paths.from_params(load_params()).raw  # params.yaml's paths.raw, as prepare reads
    extracted = fetch(archive, raw_dir, replace_raw=replace_raw)
    counts = ", ".join(f"{n} {label}" for label, n in extracted.per_class.items())
    print(
        f"{raw_dir}: {counts} (N {archive.first}..{archive.last}, full size; empty files: "
        f"{extracted.empty}, left for prepare to refuse). Next: dvc repro"
    )


if __name__ == "__main__":
    main()
