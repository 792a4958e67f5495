"""A client's FP32 tensor (V2 protocol) checked before any memory is spent on it."""

from __future__ import annotations

from typing import Any

import numpy as np

from serving.refusals import Refused


def fp32_images(shape: list[int], data: list[Any], size: int, max_images: int) -> np.ndarray:
    """FP32 `[N, 3, S, S]` in [0, 1] -> float32 array, refusing anything else with a reason.

    Each dimension is checked as a Python int (no overflow) before anything is multiplied
    or allocated, and N is capped like any other request's image count.
    """
    expected = [3, size, size]
    if len(shape) != 4 or shape[1:] != expected or shape[0] < 1:
        raise Refused("invalid_tensor", f"FP32 input must have shape [N, 3, {size}, {size}].")
    if shape[0] > max_images:
        raise Refused("too_many_files", f"{shape[0]} images sent; the limit is {max_images}.")
    count = shape[0] * 3 * size * size
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
    if not np.isfinite(flat).all() or flat.min() < 0.0 or flat.max() > 1.0:
        raise Refused("invalid_tensor", "FP32 values must be finite and in [0, 1].")
    return flat.reshape(shape[0], 3, size, size)
