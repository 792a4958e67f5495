"""The image contract: how a photograph becomes model input.

Torch-free on purpose (Pillow and NumPy only) so that prepare, evaluate and the
service share one implementation and cannot drift apart. Scaling to [0, 1] and the
model's normalisation live inside the exported model, not here.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Formats we accept. MPO is what many phone cameras write for JPEG.
ALLOWED_FORMATS: frozenset[str] = frozenset({"JPEG", "MPO", "PNG", "WEBP", "BMP", "GIF", "TIFF"})


class ImageError(ValueError):
    """A photograph that cannot become model input.

    `reason` is a stable machine-readable code (used in metrics, logs and HTTP errors);
    the message is for people.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class Limits:
    """Input limits; the defaults suit photographs a person would upload.

    `max_decoded_bytes` bounds the memory decoding may take (see `decoding_cost`), so a
    small file that expands to gigabytes (a 16-bit or transparent PNG of 40 M pixels) is
    refused from its header, before any pixel is decoded.
    """

    max_bytes: int = 10 * 1024 * 1024
    max_pixels: int = 40_000_000
    min_side: int = 16
    formats: frozenset[str] = ALLOWED_FORMATS
    max_decoded_bytes: int = 64 * 1024 * 1024


DEFAULT_LIMITS = Limits()

# Bytes per pixel Pillow keeps for a decoded mode (multi-band modes are stored 4 wide).
_STORED_BYTES = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16B": 2, "I;16L": 2, "I;16N": 2}
_TRANSPARENT_MODES = ("RGBA", "LA", "PA", "RGBa", "La", "P")


def decoding_cost(size: tuple[int, int], mode: str) -> int:
    """Peak bytes to decode an image of `size` and `mode` and convert it to RGB.

    The decoded pixels (mode and bit depth counted), plus the RGB copy when the mode is
    not RGB, plus two RGBA layers for transparency compositing.
    """
    pixels = size[0] * size[1]
    cost = pixels * _STORED_BYTES.get(mode, 4)
    if mode != "RGB":
        cost += pixels * 4
    if mode in _TRANSPARENT_MODES:
        cost += pixels * 8
    return cost


def open_checked(data: bytes, limits: Limits) -> Image.Image:
    """Open (header only) and check bytes, format and pixel count; raises ImageError."""
    if not data:
        raise ImageError("empty", "The file is empty.")
    if len(data) > limits.max_bytes:
        raise ImageError(
            "too_large", f"The file has {len(data)} bytes; the limit is {limits.max_bytes}."
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError("too_many_pixels", f"The image has too many pixels: {exc}") from exc
    except UnidentifiedImageError as exc:
        raise ImageError("not_an_image", "The file is not an image Pillow can read.") from exc
    except Exception as exc:  # Pillow raises many types on garbage headers
        raise ImageError("not_an_image", f"The file is not a readable image: {exc}") from exc
    if img.format not in limits.formats:
        raise ImageError(
            "unsupported_format",
            f"Format {img.format} is not accepted; use one of {sorted(limits.formats)}.",
        )
    width, height = img.size
    if width * height > limits.max_pixels:
        raise ImageError(
            "too_many_pixels",
            f"The image is {width}x{height} pixels; the limit is {limits.max_pixels} pixels.",
        )
    if min(width, height) < limits.min_side:
        raise ImageError(
            "too_small", f"The image is {width}x{height}; each side needs {limits.min_side} px."
        )
    return img


def decode(
    data: bytes, limits: Limits = DEFAULT_LIMITS, draft_size: int | None = None
) -> Image.Image:
    """Decode bytes into an upright RGB image, or raise ImageError with a reason.

    With `draft_size`, a JPEG is decoded directly at a reduced scale (never below
    `draft_size` on either side), which is much cheaper for large uploads and gives
    nearly the same pixels after `fit`. The decoding budget is checked after drafting,
    from the header, before any pixel is decoded.
    """
    img = open_checked(data, limits)
    if draft_size and img.format in ("JPEG", "MPO") and img.mode in ("RGB", "L", "CMYK", "YCbCr"):
        img.draft(img.mode, (draft_size, draft_size))
    cost = decoding_cost(img.size, img.mode)
    if cost > limits.max_decoded_bytes:
        width, height = img.size
        raise ImageError(
            "too_many_bytes_decoded",
            f"Decoding this {width}x{height} {img.mode} image would take {cost / 2**20:.0f} MiB; "
            f"the limit is {limits.max_decoded_bytes / 2**20:.0f} MiB (send a smaller or "
            "8-bit image, or a JPEG).",
        )
    try:
        img.load()
        ImageOps.exif_transpose(img, in_place=True)  # no copy when there is nothing to turn
        return to_rgb(img)
    except ImageError:
        raise
    except Exception as exc:  # truncated or corrupt pixel data
        raise ImageError("corrupt", f"The image data is damaged or truncated: {exc}") from exc


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB; transparency is composited onto white."""
    if img.mode == "RGB":
        return img
    if img.mode.startswith("I;16"):
        # Integer arithmetic: round(v / 65535 * 255) without a float64 copy of the image.
        arr = np.asarray(img).astype(np.uint32)
        arr8 = ((arr * 255 + 32767) // 65535).astype(np.uint8)
        return Image.fromarray(arr8).convert("RGB")
    if img.mode in ("I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        peak = 65535.0 if arr.max() > 255 else 255.0
        arr8 = np.clip(arr / peak * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(arr8).convert("RGB")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        if rgba.getextrema()[3] == (255, 255):  # opaque: compositing would change nothing
            return rgba.convert("RGB")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def fit(img: Image.Image, size: int) -> Image.Image:
    """Resize the shorter side to `size` (antialiased) and centre-crop a square."""
    width, height = img.size
    scale = size / min(width, height)
    new_w, new_h = max(size, round(width * scale)), max(size, round(height * scale))
    if (new_w, new_h) != (width, height):
        img = img.resize((new_w, new_h), Image.Resampling.BILINEAR, reducing_gap=None)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    return img.crop((left, top, left + size, top + size))


def load(data: bytes, size: int, limits: Limits = DEFAULT_LIMITS) -> np.ndarray:
    """Bytes to the model's input pixels: uint8 array [size, size, 3], RGB."""
    return np.asarray(fit(decode(data, limits, draft_size=size), size), dtype=np.uint8)


def to_batch(images: list[np.ndarray] | np.ndarray) -> np.ndarray:
    """uint8 HWC images to the bundle's input tensor: float32 [N, 3, H, W] in [0, 1]."""
    batch = np.stack(images) if isinstance(images, list) else images
    return np.ascontiguousarray(batch.transpose(0, 3, 1, 2), dtype=np.float32) / 255.0
