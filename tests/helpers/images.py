"""Makers of awkward and broken image files, built in memory from real photographs."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image


def encode(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def variants(photo: Path) -> dict[str, bytes]:
    """Valid but unusual encodings of one real photo, keyed by what they exercise."""
    rgb = Image.open(photo).convert("RGB")
    gray16 = Image.fromarray(np.asarray(rgb.convert("L"), dtype=np.uint16) * 257)
    rgba = rgb.convert("RGBA")
    rgba.putalpha(255)  # RGBA mode, opaque: must look like the photo
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    return {
        "jpeg": photo.read_bytes(),
        "grayscale": encode(rgb.convert("L"), "JPEG"),
        "cmyk": encode(rgb.convert("CMYK"), "JPEG"),
        "rgba_png": encode(rgba, "PNG"),
        "palette_png": encode(rgb.convert("P", palette=Image.Palette.ADAPTIVE), "PNG"),
        "gray16_png": encode(gray16, "PNG"),
        "webp": encode(rgb, "WEBP", quality=90),
        "bmp": encode(rgb, "BMP"),
        "exif_rotated": encode(rgb.transpose(Image.Transpose.ROTATE_90), "JPEG", exif=exif),
    }


def broken(photo: Path) -> dict[str, tuple[bytes, str]]:
    """Bad inputs with the reason the image contract must give for each."""
    data = photo.read_bytes()
    return {
        "empty": (b"", "empty"),
        "text": (b"this is not an image at all, just text\n" * 10, "not_an_image"),
        "truncated": (data[: len(data) // 3], "corrupt"),
        "tiny": (encode(Image.new("RGB", (8, 8), "red"), "PNG"), "too_small"),
        "pdf_header": (b"%PDF-1.4\n" + b"0" * 200, "not_an_image"),
        "ico": (
            encode(Image.open(photo).convert("RGB").resize((32, 32)), "ICO"),
            "unsupported_format",
        ),
    }
