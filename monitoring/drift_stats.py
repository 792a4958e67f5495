"""Drift statistics for the report only: how large a PSI sampling noise alone gives."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from contracts.drift import psi


def noise_level(
    reference_counts: Sequence[float],
    n_live: int,
    quantile: float = 0.95,
    draws: int = 400,
    seed: int = 0,
) -> float | None:
    """The PSI that sampling alone exceeds with probability 1 - `quantile`.

    Both samples are redrawn from the reference's own distribution (the reference is a
    finite test split, the live window a finite sample) and their PSI taken, `draws`
    times. A figure below this level is indistinguishable from noise at that size; it
    shrinks roughly as (bins - 1) / n. For the report, not the scrape path.
    """
    ref = np.asarray(reference_counts, dtype=np.float64)
    n_ref = round(float(ref.sum()))
    if n_live <= 0 or n_ref <= 0:
        return None
    shares = ref / ref.sum()
    rng = np.random.default_rng(seed)
    refs = rng.multinomial(n_ref, shares, size=draws)
    lives = rng.multinomial(n_live, shares, size=draws)
    values = [psi(r, v) for r, v in zip(refs, lives, strict=True)]
    return float(np.quantile(values, quantile))
