"""Occlusion explanations without torch: which regions drove a prediction.

Each cell of a grid is greyed out in turn; all variants go through ONNX Runtime as one
batch, and a cell's score is how much the predicted class's probability drops without
it. Model-agnostic, deterministic, and needs nothing beyond the bundle.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

from serving.inference.prediction import Prediction

GREY = 128


@dataclass(frozen=True)
class Explanation:
    """A prediction and the occlusion map behind it (`Predictor.explain`)."""

    prediction: Prediction
    grid_size: int
    cell_px: float  # side of one grid cell, in model-input pixels
    base_probability: float  # the predicted class's probability on the whole photo
    drops: np.ndarray  # [grid, grid]: how much hiding each cell lowers that probability
    overlay_png: bytes  # the model input with the drops as a red overlay

    @property
    def png_base64(self) -> str:
        return base64.b64encode(self.overlay_png).decode("ascii")


def cell_edges(size: int, grid: int) -> np.ndarray:
    return np.linspace(0, size, grid + 1).round().astype(int)


def occlusion_variants(pixels: np.ndarray, grid: int) -> np.ndarray:
    """uint8 [S, S, 3] -> [1 + grid*grid, S, S, 3]: the original, then one grey cell each."""
    size = pixels.shape[0]
    edges = cell_edges(size, grid)
    variants = np.repeat(pixels[None], 1 + grid * grid, axis=0)
    for row in range(grid):
        for col in range(grid):
            k = 1 + row * grid + col
            variants[k, edges[row] : edges[row + 1], edges[col] : edges[col + 1]] = GREY
    return variants


def occlusion_grid(probs: np.ndarray, class_index: int, grid: int) -> np.ndarray:
    """Probabilities of the variants -> [grid, grid] drop of the class's probability."""
    base = probs[0, class_index]
    return (base - probs[1:, class_index]).reshape(grid, grid)


def overlay_png(pixels: np.ndarray, drops: np.ndarray, alpha: float = 0.6) -> bytes:
    """Blend a red heat layer (where hiding the cell hurt the prediction) onto the photo."""
    size = pixels.shape[0]
    positive = np.clip(drops, 0.0, None)
    peak = float(positive.max())
    weights = positive / peak if peak > 0 else positive
    heat = Image.fromarray(weights.astype(np.float32), mode="F").resize(
        (size, size), Image.Resampling.BILINEAR
    )
    w = np.clip(np.asarray(heat, dtype=np.float32), 0.0, 1.0)[..., None] * alpha
    red = np.array([255.0, 32.0, 0.0], dtype=np.float32)
    blended = pixels.astype(np.float32) * (1.0 - w) + red * w
    buffer = io.BytesIO()
    Image.fromarray(blended.round().astype(np.uint8), mode="RGB").save(buffer, format="PNG")
    return buffer.getvalue()
