"""The image contract on real photographs and on broken ones."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from contracts.imaging import (
    ImageError,
    Limits,
    decode,
    decoding_cost,
    fit,
    load,
    to_batch,
    to_rgb,
)
from tests.helpers.images import broken, encode, variants
from tests.helpers.photos import sample_photos


@pytest.fixture(scope="module")
def photo() -> Path:
    return sample_photos("cat", 1)[0]


def test_real_photo_becomes_model_input(photo: Path) -> None:
    pixels = load(photo.read_bytes(), 128)
    assert pixels.shape == (128, 128, 3) and pixels.dtype == np.uint8
    batch = to_batch([pixels, pixels])
    assert batch.shape == (2, 3, 128, 128) and batch.dtype == np.float32
    assert batch.min() >= 0.0 and batch.max() <= 1.0


@pytest.mark.parametrize(
    "kind",
    ["jpeg", "grayscale", "cmyk", "rgba_png", "palette_png", "gray16_png", "webp", "bmp"],
)
def test_unusual_encodings_decode_to_nearly_the_same_rgb(photo: Path, kind: str) -> None:
    reference = load(photo.read_bytes(), 96).astype(np.float32)
    pixels = load(variants(photo)[kind], 96).astype(np.float32)
    assert pixels.shape == (96, 96, 3)
    if kind in ("grayscale", "gray16_png"):
        reference = reference.mean(axis=2, keepdims=True).repeat(3, axis=2)
    # Lossy re-encoding, palettes and alpha blending move pixels a little, never a lot.
    assert np.abs(pixels - reference).mean() < 20, kind


def test_sixteen_bit_grayscale_is_scaled_not_clipped(photo: Path) -> None:
    pixels = load(variants(photo)["gray16_png"], 64)
    assert 30 < pixels.mean() < 225  # clipping 16-bit values would give pure white


def test_exif_orientation_is_applied(photo: Path) -> None:
    upright = np.asarray(decode(photo.read_bytes()), dtype=np.float32)
    restored = np.asarray(decode(variants(photo)["exif_rotated"]), dtype=np.float32)
    assert restored.shape == upright.shape
    assert np.abs(restored - upright).mean() < 10


def test_png_named_jpg_is_read_by_content(tmp_path: Path, photo: Path) -> None:
    lying = tmp_path / "photo.jpg"
    lying.write_bytes(encode(Image.open(photo), "PNG"))
    assert load(lying.read_bytes(), 64).shape == (64, 64, 3)


@pytest.mark.parametrize("kind", ["empty", "text", "truncated", "tiny", "pdf_header", "ico"])
def test_broken_inputs_raise_with_a_reason(photo: Path, kind: str) -> None:
    data, reason = broken(photo)[kind]
    with pytest.raises(ImageError) as caught:
        load(data, 64)
    assert caught.value.reason == reason
    assert str(caught.value)


def test_byte_and_pixel_limits(photo: Path) -> None:
    data = photo.read_bytes()
    with pytest.raises(ImageError, match="limit") as too_big:
        decode(data, Limits(max_bytes=len(data) - 1))
    assert too_big.value.reason == "too_large"
    bomb = encode(Image.new("L", (6000, 6000)), "PNG")  # 36 Mpx, a few KB compressed
    with pytest.raises(ImageError) as caught:
        decode(bomb, Limits(max_pixels=10_000_000))
    assert caught.value.reason == "too_many_pixels"


def test_fit_resizes_shorter_side_and_centre_crops() -> None:
    wide = Image.new("RGB", (400, 200), "blue")
    wide.paste((255, 0, 0), (0, 0, 100, 200))  # a red band on the left, cropped away
    out = fit(wide, 100)
    assert out.size == (100, 100)
    assert np.asarray(out)[:, :, 0].mean() < 5


def test_draft_decoding_matches_full_decoding(fullres_photos: list[tuple[Path, str]]) -> None:
    """Serving decodes big JPEGs at reduced scale; the pixels must stay close."""
    for path, _ in fullres_photos[:10]:
        data = path.read_bytes()
        fast = load(data, 128).astype(np.float32)
        full = np.asarray(fit(decode(data), 128), dtype=np.float32)
        assert np.abs(fast - full).mean() < 4.0, path.name


def test_transparency_is_composited_onto_white() -> None:
    clear = encode(Image.new("RGBA", (64, 64), (0, 0, 0, 0)), "PNG")
    assert load(clear, 32).min() == 255


def test_opaque_rgba_gives_exactly_the_rgb_pixels(photo: Path) -> None:
    rgb = Image.open(photo).convert("RGB")
    assert np.array_equal(np.asarray(to_rgb(rgb.convert("RGBA"))), np.asarray(rgb))


def test_decoding_budget_counts_mode_and_bit_depth() -> None:
    side = 6320  # a 16-bit grey PNG this size once took 1.7 GB to decode
    gray16 = encode(Image.new("I;16", (side, side), 1000), "PNG")
    assert len(gray16) < 200_000
    with pytest.raises(ImageError) as refused:
        decode(gray16, Limits(max_decoded_bytes=64 * 2**20))
    assert refused.value.reason == "too_many_bytes_decoded"
    assert decoding_cost((100, 100), "L") < decoding_cost((100, 100), "I;16")
    assert decoding_cost((100, 100), "I;16") < decoding_cost((100, 100), "RGBA")
