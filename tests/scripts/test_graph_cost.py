"""scripts/graph_cost.py: an architecture's served cost, from its exported graphs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from contracts.imaging import load
from scripts.graph_cost import cost
from stages.params import Paths
from tests.helpers.config import composed
from tests.helpers.photos import LABELS, sample_photos


def test_cost_times_both_graphs_of_a_real_network(tmp_path: Path) -> None:
    params = composed(["prepare.image_size=64", "export.int8.calibration_photos=8"])
    params["paths"] = {k: str(tmp_path / v) for k, v in params["paths"].items()}
    params = OmegaConf.create(params)
    paths = Paths.from_params(params)
    paths.prepared.mkdir(parents=True)
    photos = np.stack(
        [load(p.read_bytes(), 64) for label in LABELS for p in sample_photos(label, 8)]
    )
    for split in ("train", "test"):
        np.save(paths.split_images(split), photos)
    c = cost("efficientnet_lite0", paths, params, photos=16)
    assert c["fp32_ms"] > 0 and c["int8_ms"] > 0
    assert 3.0 < c["int8_mb"] < c["parameters_m"] * 4  # int8 weights: about a byte each
