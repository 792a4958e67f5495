"""The model bundle contract: one typed definition of `model.json`, torch-free.

`stages/export.py` builds a `BundleManifest` and writes it; the service reads it back with
`BundleManifest.read`. Both sides use this module, so the contract cannot drift between
them. docs/bundle.md describes each field for people.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

MANIFEST_FILE = "model.json"


class BundleError(RuntimeError):
    """The bundle is missing, inconsistent, or its model file was altered."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class InputSpec(_Strict):
    """The graph's input: RGB pixels in [0, 1], NCHW, after the image contract's resize."""

    name: str = "image"
    dtype: Literal["float32"] = "float32"
    layout: Literal["NCHW"] = "NCHW"
    shape: list[int | str]
    size: int = Field(gt=0)
    color: Literal["RGB"] = "RGB"
    range: tuple[float, float] = (0.0, 1.0)
    preprocessing: str


class OutputSpec(_Strict):
    """The graph's output: class probabilities (the softmax is inside the graph)."""

    name: str = "probabilities"
    kind: Literal["probabilities"] = "probabilities"
    shape: list[int | str]


class Histogram(_Strict):
    edges: list[float]
    counts: list[int]


class Reference(_Strict):
    """What normal traffic looks like (the served graph on the test split), for drift."""

    n: int
    class_shares: dict[str, float]
    confidence_histogram: Histogram
    brightness_histogram: Histogram


class Calibration(_Strict):
    """Temperature scaling inside the served graph: probabilities = softmax(logits / T).

    T is fitted on the validation split (never the test split); the expected calibration
    error (ECE, `bins` equal-width confidence bins) and log loss are measured on the test
    split before (T = 1) and after.
    """

    method: Literal["temperature"] = "temperature"
    temperature: float = Field(gt=0)
    fitted_on: Literal["val"] = "val"
    fitted_photos: int
    bins: int = 15
    ece_before: float
    ece_after: float
    nll_before: float
    nll_after: float


class OodSpec(_Strict):
    """The out-of-distribution reference (contracts/ood.py): which score, its file, threshold.

    The graph's second output (`feature_output`) is the penultimate features; the reference
    statistics in `file` come from the TRAIN split; `threshold` lets `pass_rate` of the
    validation photos through. `sha256` covers the file, and the bundle version covers it.
    """

    method: Literal["mahalanobis", "knn"]
    file: str = "ood.npz"
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    feature_output: str = "features"
    feature_dim: int = Field(gt=0)
    k: int = 1
    threshold: float
    pass_rate: float = 0.95
    reference_photos: int
    threshold_photos: int


class Environment(_Strict):
    """Where a stage ran: what can move its numbers across machines (docs/reproducibility.md).

    Kernels differ by instruction set, so float32 results differ in the last digits between
    CPUs; `compare` names the fields that differ when a fresh run's metrics move.
    """

    python: str
    torch: str
    onnxruntime: str
    numpy: str
    requirements_sha256: str
    cpu_model: str
    cpu_flags: list[str]  # the instruction sets that change kernels (AVX2, AVX-512 ...)
    torch_cpu_capability: str  # the kernel family torch dispatched to on this CPU
    threads: int
    precision: str  # training precision (trainer.precision)

    def differences(self, other: Environment) -> list[str]:
        """Names of the fields whose values differ, in declaration order."""
        return [
            name for name in type(self).model_fields if getattr(self, name) != getattr(other, name)
        ]


class Environments(_Strict):
    """The training and export environments of a bundle."""

    train: Environment | None = None
    export: Environment | None = None


class BundleManifest(_Strict):
    """`model.json`: what the service needs to load, verify, describe and monitor a model."""

    name: str
    version: str = Field(min_length=1)
    model_file: str = "model.onnx"
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    architecture: str
    classes: list[str] = Field(min_length=2)
    input: InputSpec
    output: OutputSpec
    tta: bool = False
    precision: Literal["fp32", "int8"] = "fp32"
    # Test-split accuracy of the float graph and of the served graph (equal for fp32).
    accuracy: dict[str, float] = Field(default_factory=dict)
    metrics: dict[str, float] = Field(default_factory=dict)
    evaluation: dict[str, Any] = Field(default_factory=dict)
    data_version: str = "unknown"
    git_revision: str = "unknown"
    mlflow_run_id: str = ""
    created_at: str
    reference: Reference
    environment: Environments = Field(default_factory=Environments)
    calibration: Calibration | None = None
    ood: OodSpec | None = None

    @property
    def size(self) -> int:
        return self.input.size

    @classmethod
    def read(cls, model_dir: Path) -> BundleManifest:
        """Parse and validate `model_dir/model.json`, or raise BundleError saying why."""
        path = Path(model_dir) / MANIFEST_FILE
        try:
            return cls.model_validate_json(path.read_bytes())
        except FileNotFoundError as exc:
            raise BundleError(f"No model manifest at {path}: run `dvc repro` (export).") from exc
        except ValidationError as exc:
            raise BundleError(f"{path} does not match the bundle contract: {exc}") from exc

    def write(self, model_dir: Path) -> Path:
        path = Path(model_dir) / MANIFEST_FILE
        path.write_text(self.model_dump_json(indent=2) + "\n")
        return path

    def verified_model_file(self, model_dir: Path) -> Path:
        """The ONNX file, after checking that it hashes to `sha256`."""
        model_file = Path(model_dir) / self.model_file
        if not model_file.is_file():
            raise BundleError(f"No model file at {model_file}.")
        actual = file_sha256(model_file)
        if actual != self.sha256:
            raise BundleError(
                f"{model_file} has SHA-256 {actual[:12]}…, the manifest says {self.sha256[:12]}…;"
                " refusing a model file that is not the exported one."
            )
        return model_file


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
