"""A client's V2 tensor checked before any memory is spent on it.

Tensors come as JSON lists or as raw little-endian bytes (the binary tensor data
extension); both are held to the same shape, count, dtype and value rules here, so the
cheaper binary form is never the laxer one.
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np

from serving.refusals import Refused

_LENGTH = struct.Struct("<I")  # a BYTES element's length prefix in binary tensor data


def fp32_count(shape: list[int], size: int, max_images: int) -> int:
    """Values an FP32 `[N, 3, S, S]` tensor holds, its shape checked as Python ints
    (no overflow) and N capped like any other request's image count."""
    if len(shape) != 4 or shape[1:] != [3, size, size] or shape[0] < 1:
        raise Refused("invalid_tensor", f"FP32 input must have shape [N, 3, {size}, {size}].")
    if shape[0] > max_images:
        raise Refused("too_many_files", f"{shape[0]} images sent; the limit is {max_images}.")
    return shape[0] * 3 * size * size


def fp32_images(shape: list[int], data: list[Any], size: int, max_images: int) -> np.ndarray:
    """FP32 `[N, 3, S, S]` in [0, 1] as a JSON list -> float32 array, or a refusal."""
    count = fp32_count(shape, size, max_images)
    if len(data) != count:
        raise Refused(
            "invalid_tensor", f"Data has {len(data)} values; shape {shape} needs {count}."
        )
    if not set(map(type, data)) <= {float, int}:  # no str, bool, list, None (C-speed check)
        raise Refused("invalid_tensor", "FP32 data must be a flat list of numbers.")
    try:
        flat = np.asarray(data, dtype=np.float32)
    except (OverflowError, ValueError, TypeError) as exc:
        raise Refused("invalid_tensor", f"FP32 data is not numeric: {exc}") from exc
    return in_unit_range(flat).reshape(shape[0], 3, size, size)


def fp32_from_bytes(shape: list[int], raw: memoryview, size: int, max_images: int) -> np.ndarray:
    """FP32 `[N, 3, S, S]` as raw little-endian bytes -> a float32 view (no copy), or a
    refusal: the byte count must be exactly 4 per value."""
    count = fp32_count(shape, size, max_images)
    if len(raw) != count * 4:
        raise Refused(
            "invalid_tensor", f"Binary data has {len(raw)} bytes; FP32 shape {shape} needs "
            f"{count * 4}.",
        )  # fmt: skip
    flat = np.frombuffer(raw, dtype="<f4")
    if not flat.flags.aligned:  # the data starts after a JSON header of any length
        flat = flat.copy()
    return in_unit_range(flat).reshape(shape[0], 3, size, size)


def in_unit_range(flat: np.ndarray) -> np.ndarray:
    """The values unchanged if all are finite and in [0, 1]; else a refusal."""
    if not np.isfinite(flat).all() or flat.min() < 0.0 or flat.max() > 1.0:
        raise Refused("invalid_tensor", "FP32 values must be finite and in [0, 1].")
    return flat


def bytes_count(shape: list[int], max_items: int) -> int:
    """Elements of a BYTES `[N]` tensor, N capped at `max_items`."""
    if len(shape) != 1 or shape[0] < 1:
        raise Refused("invalid_tensor", "BYTES input must have shape [N] with N ≥ 1.")
    if shape[0] > max_items:
        raise Refused("too_many_files", f"{shape[0]} images sent; the limit is {max_items}.")
    return shape[0]


def bytes_from_binary(shape: list[int], raw: memoryview, max_items: int) -> list[bytes]:
    """BYTES `[N]` in binary tensor data (each element a 4-byte little-endian length, then
    that many bytes) -> N byte strings; anything left over or cut short is refused."""
    count = bytes_count(shape, max_items)
    items, offset = [], 0
    while offset < len(raw) and len(items) < count:
        if offset + 4 > len(raw):
            break
        (length,) = _LENGTH.unpack_from(raw, offset)
        offset += 4
        if offset + length > len(raw):
            break
        items.append(bytes(raw[offset : offset + length]))
        offset += length
    if len(items) != count or offset != len(raw):
        raise Refused(
            "invalid_tensor", f"Binary BYTES data does not hold exactly {count} elements "
            "(each a 4-byte little-endian length, then its bytes).",
        )  # fmt: skip
    return items


def binary_bytes(items: list[str]) -> bytes:
    """Strings as a BYTES tensor's binary data (length-prefixed UTF-8)."""
    encoded = [item.encode() for item in items]
    return b"".join(_LENGTH.pack(len(e)) + e for e in encoded)
