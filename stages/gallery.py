"""A grid of captioned photos: evaluate's confidently wrong, review_labels' disputed labels."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

COLUMNS = 4


def draw_gallery(
    photos: Sequence[np.ndarray], captions: Sequence[str], title: str, empty: str, path: Path
) -> None:
    """Four photos a row, each with its caption; `empty` says why there are none."""
    rows = max(1, int(np.ceil(len(photos) / COLUMNS)))
    fig, axes = plt.subplots(rows, COLUMNS, figsize=(COLUMNS * 2.8, rows * 3.1), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, photo, caption in zip(axes.flat, photos, captions, strict=False):
        ax.imshow(photo)
        ax.set_title(caption, fontsize=8)
    if not len(photos):
        axes.flat[0].text(0.5, 0.5, empty, ha="center", va="center")
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
