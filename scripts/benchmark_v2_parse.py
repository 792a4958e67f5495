"""What a V2 FP32 body costs the service before inference: JSON against binary tensor data.

In process, no server: the route's own parser and checks (serving/routes/v2_binary.py,
serving/inference/tensors.py) on the same photos decoded by the image contract, for each
--size and --images. Prints body bytes, CPU ms per body (mean of --repeats) and the peak
memory the parse allocates beyond the body itself (tracemalloc).

    .venv/bin/python scripts/benchmark_v2_parse.py --photos ../shared/data/fullres
"""

from __future__ import annotations

import argparse
import json
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numpy as np

from contracts import imaging
from serving.inference.tensors import fp32_from_bytes, fp32_images
from serving.routes import v2_binary


def bodies(tensor: np.ndarray) -> dict[str, tuple[bytes, str | None]]:
    """The same tensor as a JSON body and as a binary one (with its header length)."""
    spec = {"name": "image", "datatype": "FP32", "shape": list(tensor.shape)}
    as_json = json.dumps({"inputs": [{**spec, "data": tensor.ravel().tolist()}]}).encode()
    parameters = {"binary_data_size": tensor.nbytes}
    head = json.dumps({"inputs": [{**spec, "parameters": parameters}]}).encode()
    return {"json": (as_json, None), "binary": (head + tensor.tobytes(), str(len(head)))}


def parser(body: bytes, header: str | None, size: int) -> Callable[[], np.ndarray]:
    def parse() -> np.ndarray:
        request = v2_binary.parse_request(body, header)
        tensor, raw = request.body.inputs[0], request.binary[0]
        if raw is None:
            return fp32_images(tensor.shape, tensor.data or [], size, 1024)
        return fp32_from_bytes(tensor.shape, raw, size, 1024)

    return parse


def measure(parse: Callable[[], np.ndarray], repeats: int) -> tuple[float, int]:
    """(CPU ms per call, peak bytes allocated by one call)."""
    started = time.process_time()
    for _ in range(repeats):
        parse()
    cpu_ms = (time.process_time() - started) / repeats * 1000.0
    tracemalloc.start()
    parse()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return cpu_ms, peak


def main() -> None:
    args = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    args.add_argument("--photos", required=True, help="a folder of JPEGs")
    args.add_argument("--size", type=int, nargs="+", default=[128, 224])
    args.add_argument("--images", type=int, nargs="+", default=[1, 8])
    args.add_argument("--repeats", type=int, default=20)
    options = args.parse_args()
    photos = sorted(Path(options.photos).glob("*.jpg"))
    print("| size | images | form | body MB | CPU ms | peak allocated MB |")
    print("|---:|---:|---|---:|---:|---:|")
    for size in options.size:
        for count in options.images:
            tensor = imaging.to_batch([imaging.load(p.read_bytes(), size) for p in photos[:count]])
            results = {}
            for form, (body, header) in bodies(tensor).items():
                parse = parser(body, header, size)
                results[form] = parse()
                cpu_ms, peak = measure(parse, options.repeats)
                print(f"| {size} | {count} | {form} | {len(body) / 1e6:.2f} | {cpu_ms:.2f} | "
                      f"{peak / 1e6:.2f} |")  # fmt: skip
            assert np.array_equal(results["json"], results["binary"]), "the forms disagree"


if __name__ == "__main__":
    main()
