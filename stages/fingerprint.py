"""The environment fingerprint every run records (metrics/train.json, model.json, MLflow).

Exact equality across CPUs is not on offer: torch and ONNX Runtime pick kernels by
instruction set, so float32 sums round differently on AVX2 and AVX-512 machines. The
fingerprint names what can move the numbers, and `stages.reproduction` reports which
fields differ when a fresh run's metrics do.
"""

from __future__ import annotations

import hashlib
import platform
import sys
from pathlib import Path

import numpy as np
import onnxruntime
import torch

from contracts.bundle import Environment
from stages.params import repo_root

# CPU flags that select different kernels in torch, oneDNN and ONNX Runtime.
KERNEL_FLAGS = (
    "avx2",
    "fma",
    "avx512f",
    "avx512bw",
    "avx512_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "avx_vnni",
    "amx_bf16",
    "amx_int8",
)


def cpu_model_and_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> tuple[str, list[str]]:
    """The CPU's model name and which of `KERNEL_FLAGS` it has (Linux; else what Python says)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return platform.processor() or platform.machine(), []
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line and line.strip())
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    flags = set(fields.get("flags", "").split())
    return fields.get("model name", platform.machine()), [f for f in KERNEL_FLAGS if f in flags]


def requirements_sha256(root: Path | None = None) -> str:
    """The first 16 hex digits of requirements.txt's SHA-256: the locked package set."""
    path = (root or repo_root()) / "requirements.txt"
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16] if path.exists() else "unknown"


def environment_fingerprint(precision: str) -> Environment:
    """This process's environment, with the training precision it ran (or will run) at."""
    model, flags = cpu_model_and_flags()
    return Environment(
        python=platform.python_version(),
        torch=torch.__version__,
        onnxruntime=onnxruntime.__version__,
        numpy=np.__version__,
        requirements_sha256=requirements_sha256(),
        cpu_model=model,
        cpu_flags=flags,
        torch_cpu_capability=str(torch.backends.cpu.get_cpu_capability()),
        threads=torch.get_num_threads(),
        precision=str(precision),
    )


if __name__ == "__main__":  # `python -m stages.fingerprint`: this machine's fingerprint
    sys.stdout.write(environment_fingerprint("n/a").model_dump_json(indent=2) + "\n")
