"""The serving limit of a machine: what two cores could answer if HTTP, JSON and
recording cost nothing.

limit (photos a second) = cores x 1000 / (graph ms per photo + decode ms per photo), with
the graph run by ONNX Runtime on one thread at the batch size the service served, and
decoding done by the image contract (draft decode, fit) on the same photos. Both are CPU
time of this process, so other load on the machine does not inflate them.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from contracts import imaging


@dataclass(frozen=True)
class Limit:
    cores: int
    batch: int
    graph_ms: float  # CPU ms per photo, one ONNX Runtime thread, at `batch`
    decode_ms: float  # CPU ms per photo, the image contract with draft decoding
    photos_per_s: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def decode_ms_per_photo(photos: list[Path], size: int, rounds: int = 3) -> tuple[float, list]:
    """Mean CPU ms to decode and fit one photo; also the model-input pixels of each."""
    blobs = [p.read_bytes() for p in photos]
    pixels = [imaging.load(b, size) for b in blobs]  # warm the decoder once
    began = time.thread_time()
    for _ in range(rounds):
        for blob in blobs:
            imaging.load(blob, size)
    return 1000.0 * (time.thread_time() - began) / (rounds * len(blobs)), pixels


def graph_ms_per_photo(model_dir: Path, pixels: list, batch: int, photos: int = 200) -> float:
    """CPU ms per photo of the bundle's graph on one thread, fed `batch` photos a call."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(
        str(model_dir / "model.onnx"), options, providers=["CPUExecutionProvider"]
    )
    name = session.get_inputs()[0].name
    outputs = [session.get_outputs()[0].name]
    batches = [
        imaging.to_batch(np.stack([pixels[(i + k) % len(pixels)] for k in range(batch)]))
        for i in range(0, len(pixels), batch)
    ]
    session.run(outputs, {name: batches[0]})  # warm-up
    calls = max(1, photos // batch)
    began = time.thread_time()
    for i in range(calls):
        session.run(outputs, {name: batches[i % len(batches)]})
    return 1000.0 * (time.thread_time() - began) / (calls * batch)


def compute_limit(model_dir: Path, photos: list[Path], batch: int) -> Limit:
    """The limit for `batch` photos per ONNX Runtime call on the CPUs this process may use."""
    size = int(json.loads((model_dir / "model.json").read_text())["input"]["size"])
    decode_ms, pixels = decode_ms_per_photo(photos, size)
    graph_ms = graph_ms_per_photo(model_dir, pixels, max(1, batch))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cores = cores or 1
    return Limit(cores, max(1, batch), graph_ms, decode_ms, cores * 1000.0 / (graph_ms + decode_ms))
