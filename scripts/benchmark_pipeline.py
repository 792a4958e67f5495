"""Benchmark the pipeline: wall time and peak memory per stage, accuracy, no-op repro time.

Runs `dvc repro --force --single-item <stage>` for each stage of dvc.yaml in order (the same commands
`dvc repro` runs, forced so nothing is restored from a cache), samples the memory of the
stage's process tree, then times a no-op `dvc repro`. Prints a Markdown table.

    python scripts/benchmark_pipeline.py            # the default configuration
    python scripts/benchmark_pipeline.py --json out.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import yaml


def stages_in_order() -> list[str]:
    """The stages as dvc.yaml lists them (each one's dependencies come before it)."""
    return list(yaml.safe_load(Path("dvc.yaml").read_text())["stages"])


def metrics_dir() -> Path:
    return Path(yaml.safe_load(Path("params.yaml").read_text())["paths"]["metrics"])


def run_measured(cmd: list[str]) -> tuple[float, float]:
    """Wall seconds and peak resident memory (MiB) of a command and all its children."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd)
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        parent = psutil.Process(proc.pid)
        while not done.is_set():
            try:
                tree = [parent, *parent.children(recursive=True)]
                peak = max(peak, sum(p.memory_info().rss for p in tree if p.is_running()))
            except psutil.Error:
                pass
            time.sleep(0.25)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    code = proc.wait()
    done.set()
    sampler.join()
    if code != 0:
        sys.exit(f"{' '.join(cmd)} failed with exit code {code}")
    return time.perf_counter() - started, peak / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    rows = []
    for stage in stages_in_order():
        seconds, mib = run_measured(["dvc", "repro", "--force", "--single-item", stage])
        rows.append({"stage": stage, "seconds": round(seconds, 1), "peak_mib": round(mib)})
    noop, _ = run_measured(["dvc", "repro"])
    evaluate = json.loads((metrics_dir() / "evaluate.json").read_text())
    export = json.loads((metrics_dir() / "export.json").read_text())
    train = json.loads((metrics_dir() / "train.json").read_text())
    result = {
        "stages": rows,
        "total_seconds": round(sum(r["seconds"] for r in rows), 1),
        "noop_repro_seconds": round(noop, 1),
        "epochs": train["epochs"],
        "val_acc": train["val_acc"],
        "test_accuracy": evaluate["accuracy"],
        "test_accuracy_without_tta": evaluate["accuracy_without_tta"],
        "served_precision": export["precision"],
        "served_test_accuracy": export["served_test_accuracy"],
        "fp32_onnx_test_accuracy": export["fp32_test_accuracy"],
        "served_ms_per_photo_1_thread": export[f"{export['precision']}_ms_per_photo_1_thread"],
    }
    print("| stage | wall time | peak memory |\n| --- | ---: | ---: |")
    for r in rows:
        print(f"| {r['stage']} | {r['seconds']:.0f} s | {r['peak_mib']} MiB |")
    print(f"| **total** | **{result['total_seconds']:.0f} s** | |")
    print(f"| no-op `dvc repro` | {noop:.1f} s | |")
    print(
        f"\ntest accuracy {result['test_accuracy']:.4f} (flip TTA), "
        f"{result['test_accuracy_without_tta']:.4f} without; served ONNX "
        f"({result['served_precision']}) {result['served_test_accuracy']:.4f}, float ONNX "
        f"{result['fp32_onnx_test_accuracy']:.4f}; {result['epochs']} epochs"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
