"""Static int8 quantization of the exported ONNX graph (ONNX Runtime, QDQ, per-channel).

Calibration runs photos from the training split through the same preprocessing as the
service (`contracts.imaging.to_batch`). Which nodes stay in float and which calibration
method to use are parameters (`export.int8`), chosen by measurement (README).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process
from tqdm import tqdm

from contracts.imaging import to_batch

# Symbolic names for the nodes that `export.int8.keep_float` may keep in float.
KEEP_FLOAT_CHOICES = ("normalization", "first_conv", "classifier", "softmax")


class PhotoReader(CalibrationDataReader):
    """Feeds uint8 [N, S, S, 3] photos to the calibrator, preprocessed as the service does."""

    def __init__(self, photos: np.ndarray, batch_size: int = 32) -> None:
        self.batches = iter(
            [
                to_batch(np.asarray(photos[i : i + batch_size]))
                for i in range(0, len(photos), batch_size)
            ]
        )

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self.batches, None)
        return None if batch is None else {"image": batch}


def calibration_photos(train_images: np.ndarray, count: int, seed: int) -> np.ndarray:
    """A seeded random sample of training photos (never test photos) for calibration."""
    rng = np.random.default_rng(seed)
    picks = np.sort(
        rng.choice(len(train_images), size=min(count, len(train_images)), replace=False)
    )
    return np.asarray(train_images[picks])


def float_nodes(model: onnx.ModelProto, keep_float: list[str]) -> list[str]:
    """Names of the graph nodes that `keep_float` asks to leave unquantized."""
    unknown = set(keep_float) - set(KEEP_FLOAT_CHOICES)
    if unknown:
        raise SystemExit(
            f"export.int8.keep_float: unknown {sorted(unknown)}; choose from {KEEP_FLOAT_CHOICES}"
        )
    nodes = list(model.graph.node)
    convs = [n.name for n in nodes if n.op_type == "Conv"]
    picked: list[str] = []
    if "normalization" in keep_float:
        picked += [
            n.name for n in nodes[: nodes.index(next(n for n in nodes if n.op_type == "Conv"))]
        ]
    if "first_conv" in keep_float and convs:
        picked.append(convs[0])
    if "classifier" in keep_float:
        picked += [n.name for n in nodes if n.op_type in ("Gemm", "MatMul")][-1:]
    if "softmax" in keep_float:
        picked += probability_head(nodes)
    return picked


def probability_head(nodes: list[onnx.NodeProto]) -> list[str]:
    """Softmax, the temperature's scaling just before it, and every node after it (TTA's
    averaging): quantized, probabilities stop summing to 1 and the temperature is blurred."""
    downstream: set[str] = set()
    picked: list[str] = []
    producers = {out: node for node in nodes for out in node.output}
    for node in nodes:  # ONNX graphs are topologically sorted
        if node.op_type == "Softmax" or downstream.intersection(node.input):
            scale = producers.get(node.input[0]) if node.op_type == "Softmax" else None
            if scale is not None and scale.op_type in ("Mul", "Div"):  # logits / temperature
                picked.append(scale.name)
            picked.append(node.name)
            downstream.update(node.output)
    return picked


def quantize_int8(
    fp32_path: Path,
    int8_path: Path,
    photos: np.ndarray,
    method: str,
    keep_float: list[str],
    batch_size: int = 32,
) -> None:
    """Write the int8 QDQ graph of `fp32_path` to `int8_path`, calibrated on `photos`."""
    methods = {m.name.lower(): m for m in CalibrationMethod}
    if method.lower() not in methods:
        raise SystemExit(f"export.int8.calibration: {method!r} is not one of {sorted(methods)}")
    with tempfile.TemporaryDirectory() as scratch:
        prepared = Path(scratch) / "prepared.onnx"  # BN folded, shapes inferred
        quant_pre_process(str(fp32_path), str(prepared))
        excluded = float_nodes(onnx.load(str(prepared)), keep_float)
        quantize_static(
            str(prepared),
            str(int8_path),
            PhotoReader(photos, batch_size),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=excluded,
            calibrate_method=methods[method.lower()],
            extra_options={"CalibTensorRangeSymmetric": False},
        )
    onnx.checker.check_model(str(int8_path))


def session(path: Path, threads: int = 0) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def timed_predict(
    path: Path, images: np.ndarray, label: str, batch: int, timing_photos: int
) -> tuple[np.ndarray, float]:
    """Probabilities for uint8 photos (the service's preprocessing), and model ms per photo.

    The probabilities come from a session on every core; the time per photo from a
    one-thread session (what one service worker pays) on the first `timing_photos`
    photos, after a warm-up batch, so timing does not make the export stage wait.
    """
    graph = session(path)
    out, sample = [], []
    for start in tqdm(range(0, len(images), batch), desc=f"export: {label} on test split"):
        pixels = to_batch(np.asarray(images[start : start + batch]))
        out.append(graph.run(None, {"image": pixels})[0])
        if start < timing_photos:
            sample.append(pixels)
    one_thread = session(path, threads=1)
    one_thread.run(None, {"image": sample[0]})
    began = time.perf_counter()
    for pixels in sample:
        one_thread.run(None, {"image": pixels})
    seconds = time.perf_counter() - began
    photos = sum(len(pixels) for pixels in sample)
    return np.concatenate(out), 1000.0 * seconds / max(1, photos)
