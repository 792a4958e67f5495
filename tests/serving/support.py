"""What the service tests share: real photos, hermetic settings, and request helpers."""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import replace
from pathlib import Path

from fastapi.testclient import TestClient
from PIL import Image

from serving.settings import Settings
from serving.store import StoreConfig
from tests.helpers.photos import FULLRES_DIR

ROOT = Path(__file__).resolve().parents[2]
FULLRES = FULLRES_DIR
PHOTOS = sorted(FULLRES.glob("*.jpg"))


def true_label(path: Path) -> str:
    return path.name.split(".")[0]


def settings_for(bundle_dir: Path, logs: Path, **overrides: object) -> Settings:
    """Hermetic settings (not from the environment) with the store in a temporary folder."""
    base = Settings(
        model_dir=bundle_dir,
        store=StoreConfig(path=logs / "store.sqlite3", flush_ms=20, window_ttl_s=0),
        inference_threads=2,
        decode_threads=2,
    )
    return replace(base, **overrides)


def upload(client: TestClient, data: bytes, name: str = "photo.jpg", ctype: str = "image/jpeg"):
    return client.post("/predict", files={"file": (name, data, ctype)})


def encode(img: Image.Image, fmt: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def png_with_size(width: int, height: int, mode: str = "L") -> bytes:
    """A tiny PNG whose header claims width x height pixels (a decompression bomb)."""
    data = bytearray(encode(Image.new(mode, (16, 16)), "PNG"))
    ihdr = bytearray(data[16:29])
    ihdr[0:8] = struct.pack(">II", width, height)
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + bytes(ihdr)))
    return bytes(data)
