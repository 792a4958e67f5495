"""The prediction core without HTTP: micro-batching and the model."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np

from contracts import imaging
from serving.inference.batching import MicroBatcher
from serving.inference.onnx_model import Model
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


def test_inference_threads_setting_reaches_onnx_runtime(bundle_dir: Path) -> None:
    for threads in (1, 2):
        options = Model(bundle_dir, threads=threads).session.get_session_options()
        assert options.intra_op_num_threads == threads


def test_inference_workers_run_batches_at_once_with_each_batch_its_own_answers(
    bundle_dir: Path,
) -> None:
    """Two workers: two single-photo batches meet inside the model at the same time (a
    barrier that one worker alone could never pass), and each photo gets its own row."""
    model = Model(bundle_dir, threads=1)
    images = np.stack([imaging.load(p.read_bytes(), model.size) for p in PHOTOS[:2]])
    alone = model.predict(imaging.to_batch(images))
    barrier = threading.Barrier(2, timeout=30)

    def predict(batch: np.ndarray) -> np.ndarray:
        barrier.wait()  # BrokenBarrierError fails the batch if the other never comes
        return model.predict(batch)

    async def run() -> list[np.ndarray]:
        batcher = MicroBatcher(predict, 1, 0.0, 64, workers=2)
        batcher.start()
        try:
            results = await asyncio.gather(*(batcher.submit(images[i : i + 1]) for i in (0, 1)))
        finally:
            await batcher.stop()
        return [probs for probs, _ in results]

    rows = asyncio.run(run())
    np.testing.assert_allclose(np.concatenate(rows), alone, atol=1e-5)
