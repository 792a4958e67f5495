"""The prediction core without HTTP: micro-batching, the model, settings."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from contracts import imaging
from serving.inference.batching import MicroBatcher
from serving.inference.onnx_model import Model
from serving.settings import Settings
from tests.helpers.service import PHOTOS, ROOT


def test_micro_batcher_groups_concurrent_requests_without_changing_results(
    bundle_dir: Path,
) -> None:
    model = Model(bundle_dir, threads=2)
    images = np.stack([imaging.load(p.read_bytes(), model.size) for p in PHOTOS[:8]])
    alone = model.predict(imaging.to_batch(images))

    async def run(max_size: int) -> tuple[list[np.ndarray], list[int]]:
        sizes: list[int] = []
        batcher = MicroBatcher(model.predict, max_size, 0.0, 64, lambda n, _: sizes.append(n))
        batcher.start()
        results = await asyncio.gather(*(batcher.submit(images[i : i + 1]) for i in range(8)))
        await batcher.stop()
        return [r[0][0] for r in results], sizes

    batched, sizes = asyncio.run(run(max_size=16))
    assert max(sizes) > 1 and sum(sizes) == 8
    np.testing.assert_allclose(np.stack(batched), alone, atol=1e-5)
    single, sizes_off = asyncio.run(run(max_size=1))
    assert sizes_off == [1] * 8
    np.testing.assert_allclose(np.stack(single), alone, atol=1e-5)

    async def one_big_job(max_size: int) -> tuple[np.ndarray, list[int]]:
        sizes: list[int] = []
        batcher = MicroBatcher(model.predict, max_size, 0.0, 64, lambda n, _: sizes.append(n))
        batcher.start()
        probs, _ = await batcher.submit(images)
        await batcher.stop()
        return probs, sizes

    probs, sizes = asyncio.run(one_big_job(max_size=3))  # an explanation-sized job
    assert sizes == [3, 3, 2]  # run in chunks: memory stays bounded by max_size
    np.testing.assert_allclose(probs, alone, atol=1e-5)


def test_serving_imports_no_torch() -> None:
    code = "import serving.app, sys; assert 'torch' not in sys.modules, 'torch was imported'"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {
        "MODEL_DIR": "/srv/bundle", "PORT": "9001", "API_KEY": "k", "MAX_IMAGE_BYTES": "1000",
        "ALLOWED_FORMATS": "jpeg, png", "INFERENCE_THREADS": "3", "BATCH_MAX_SIZE": "1",
        "BATCH_MAX_WAIT_MS": "2.5", "QUEUE_MAX": "7", "REQUEST_TIMEOUT_S": "1.5",
        "STORE_PATH": "/srv/store.db", "DATABASE_URL": "", "RECENT_WINDOW": "50", "DRAFT_DECODE": "false", "LOG_LEVEL": "WARNING",
    }  # fmt: skip
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    s = Settings.from_env()
    assert (s.model_dir, s.port, s.api_key, s.max_bytes) == (Path("/srv/bundle"), 9001, "k", 1000)
    assert s.allowed_formats == frozenset({"JPEG", "PNG"})
    assert (s.inference_threads, s.batch_max_size, s.batch_max_wait_ms) == (3, 1, 2.5)
    assert (s.queue_max, s.request_timeout_s) == (7, 1.5)
    assert (s.store.dialect, s.store.path, s.store.window) == ("sqlite", Path("/srv/store.db"), 50)
    assert s.draft_decode is False and s.log_level == "warning"


def test_inference_threads_setting_reaches_onnx_runtime(bundle_dir: Path) -> None:
    for threads in (1, 2):
        options = Model(bundle_dir, threads=threads).session.get_session_options()
        assert options.intra_op_num_threads == threads
