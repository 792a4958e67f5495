"""Which int8 settings keep accuracy: calibration method x nodes kept in float, measured.

Quantizes the float graph that export proved (or any float ONNX bundle graph) with each
combination, and prints test-split accuracy and one-thread ms per photo for each, so the
`export.int8` defaults in conf/config.yaml are chosen by measurement:

    python scripts/compare_quantization.py --fp32 /tmp/model.fp32.onnx \\
        --methods minmax entropy percentile --keep-float softmax softmax,first_conv
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from stages.params import Paths, load_params
from stages.quantize import calibration_photos, quantize_int8, timed_predict


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fp32", type=Path, required=True, help="the float ONNX graph")
    parser.add_argument("--methods", nargs="+", default=["minmax", "entropy", "percentile"])
    parser.add_argument("--keep-float", nargs="+", default=["softmax"], help="comma lists")
    parser.add_argument("--photos", type=int, default=256, help="calibration photos")
    args = parser.parse_args()
    params = load_params()
    paths = Paths.from_params(params)
    images = np.load(paths.split_images("test"), mmap_mode="r")
    labels = np.load(paths.split_labels("test"))
    train = np.load(paths.split_images("train"), mmap_mode="r")
    photos = calibration_photos(train, args.photos, int(params.seed))
    probs, ms = timed_predict(args.fp32, images, "float32", 32, 128)
    rows = [("float32", "-", float((probs.argmax(1) == labels).mean()), ms)]
    with tempfile.TemporaryDirectory() as scratch:
        for method in args.methods:
            for keep in args.keep_float:
                int8 = Path(scratch) / f"{method}-{keep}.onnx"
                quantize_int8(args.fp32, int8, photos, method, [k for k in keep.split(",") if k])
                probs, ms = timed_predict(int8, images, "int8", 32, 128)
                rows.append((method, keep, float((probs.argmax(1) == labels).mean()), ms))
    print("| calibration | kept in float | test accuracy | ms/photo (1 thread) |")
    print("| --- | --- | --- | --- |")
    for method, keep, accuracy, ms in rows:
        print(f"| {method} | {keep} | {accuracy:.4f} | {ms:.2f} |")


if __name__ == "__main__":
    main()
