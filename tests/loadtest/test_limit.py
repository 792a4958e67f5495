"""loadtest/limit.py: the serving limit computed from a real bundle and real photos."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from loadtest.limit import compute_limit
from tests.helpers.photos import FULLRES_DIR


def test_the_limit_is_the_cores_over_graph_and_decode_cost(tiny_bundle_dir: Path) -> None:
    photos = sorted(FULLRES_DIR.glob("*.jpg"))[:6]
    limit = compute_limit(tiny_bundle_dir, photos, batch=3)
    assert limit.batch == 3
    assert limit.cores == len(os.sched_getaffinity(0))
    assert limit.graph_ms > 0 and limit.decode_ms > 0
    assert limit.photos_per_s == pytest.approx(
        limit.cores * 1000.0 / (limit.graph_ms + limit.decode_ms)
    )
    assert set(limit.as_dict()) == {"cores", "batch", "graph_ms", "decode_ms", "photos_per_s"}


def test_a_batch_below_one_is_measured_as_one(tiny_bundle_dir: Path) -> None:
    photos = sorted(FULLRES_DIR.glob("*.jpg"))[:2]
    assert compute_limit(tiny_bundle_dir, photos, batch=0).batch == 1
