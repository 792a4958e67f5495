"""What each architecture would cost to serve: ms per photo of its exported graph.

    python scripts/graph_cost.py [--models efficientnet_lite0 efficientnet_lite1 ...]

Exports each network (ImageNet weights, a two-class head, the served wrapper with the OOD
features) the way the export stage does, quantizes it to int8 with the default settings,
and times both graphs on one ONNX Runtime thread over prepared test photos (run `dvc repro`
or at least prepare first). The cost of a graph does not depend on its trained weights, so
a bigger model's milliseconds are known before anyone trains it (docs/experiments.md).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch
from hydra.utils import instantiate

from stages.export import Served, export_onnx
from stages.params import Paths, load_params
from stages.quantize import calibration_photos, quantize_int8, timed_predict


def cost(name: str, paths: Paths, params, photos: int) -> dict[str, float]:
    """(fp32 ms, int8 ms, int8 MB, parameters in millions) of one architecture's graph."""
    target = {"_target_": f"stages.models.{name}", "num_classes": 2, "pretrained": True}
    net = instantiate(target).eval()
    size = int(params.prepare.image_size)
    test = np.load(paths.split_images("test"), mmap_mode="r")[:photos]
    train = np.load(paths.split_images("train"), mmap_mode="r")
    int8 = params.export.int8
    with tempfile.TemporaryDirectory() as scratch:
        fp32_path, int8_path = Path(scratch) / "fp32.onnx", Path(scratch) / "int8.onnx"
        export_onnx(Served(net, tta=False), size, fp32_path, int(params.export.opset))
        calibration = calibration_photos(train, int(int8.calibration_photos), 0)
        quantize_int8(fp32_path, int8_path, calibration, int8.calibration, list(int8.keep_float))
        _, fp32_ms = timed_predict(fp32_path, test, "fp32", 32, photos)
        _, int8_ms = timed_predict(int8_path, test, "int8", 32, photos)
        megabytes = int8_path.stat().st_size / 1e6
    return {
        "fp32_ms": round(fp32_ms, 2),
        "int8_ms": round(int8_ms, 2),
        "int8_mb": round(megabytes, 2),
        "parameters_m": round(sum(p.numel() for p in net.parameters()) / 1e6, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--models",
        nargs="+",
        default=["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"],
    )
    parser.add_argument("--photos", type=int, default=128, help="timed test photos")
    args = parser.parse_args()
    params = load_params()
    paths = Paths.from_params(params)
    if not paths.split_images("test").exists():
        raise SystemExit(f"{paths.split_images('test')} is missing: run `dvc repro prepare`.")
    torch.set_num_threads(2)
    print("| model | parameters (M) | float32 ms/photo | int8 ms/photo | int8 MB |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name in args.models:
        c = cost(name, paths, params, args.photos)
        print(
            f"| {name} | {c['parameters_m']} | {c['fp32_ms']} | {c['int8_ms']} | {c['int8_mb']} |"
        )


if __name__ == "__main__":
    main()
