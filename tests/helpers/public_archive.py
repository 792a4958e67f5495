"""A stand-in for Microsoft's kagglecatsanddogs_5340.zip, built from the committed photos.

Same layout as the real archive (PetImages/{Cat,Dog}/N.jpg, a Thumbs.db per folder, a
readme beside), with what makes the real one awkward: an empty file and a damaged one
among the photos N = 1001..6000 that the public path takes, and photos outside that range
that it must leave out.
"""

from __future__ import annotations

import hashlib
import zipfile
from dataclasses import dataclass
from pathlib import Path

from tests.helpers.photos import LABELS, sample_photos

FOLDERS = {"cat": "Cat", "dog": "Dog"}
EMPTY = "PetImages/Cat/5999.jpg"  # 0 bytes, as some files of the real archive
DAMAGED = "PetImages/Dog/6000.jpg"  # a JPEG cut short


@dataclass(frozen=True)
class StandIn:
    path: Path
    sha256: str
    size: int
    photos: dict[str, Path]  # data/raw-relative path -> committed photo it holds

    @property
    def url(self) -> str:
        return self.path.as_uri()


def build_standin_archive(path: Path, per_class: int | None = None) -> StandIn:
    """Write the stand-in zip at `path`: the committed photos (N = 1001..) of each class."""
    photos: dict[str, Path] = {}
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("readme[1].txt", "Stand-in for the Kaggle Cats and Dogs archive.\n")
        for label in LABELS:
            folder = f"PetImages/{FOLDERS[label]}"
            for photo in sample_photos(label, per_class):
                archive.write(photo, f"{folder}/{photo.name}")
                photos[f"{label}/{photo.name}"] = photo
            archive.writestr(f"{folder}/Thumbs.db", b"\xd0\xcf\x11\xe0 not a photo")
        first = sample_photos("cat", 1)[0]
        archive.write(first, "PetImages/Cat/1000.jpg")  # outside 1001..6000: left out
        archive.write(first, "PetImages/Dog/6001.jpg")
        archive.writestr(EMPTY, b"")
        archive.writestr(DAMAGED, first.read_bytes()[:700])
    data = path.read_bytes()
    return StandIn(path, hashlib.sha256(data).hexdigest(), len(data), photos)
