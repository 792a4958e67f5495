"""Stage 4: best checkpoint -> the model bundle (paths.export), proven, quantized, registered.

The bundle is what the service loads: an ONNX graph that takes RGB in [0, 1] and
returns probabilities (normalisation inside), and model.json (docs/bundle.md). The float
graph must agree with PyTorch; with `export.precision: int8` the bundle holds its static
int8 quantization instead, and only if that loses at most `export.int8.max_accuracy_drop`
test accuracy.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import warnings
from datetime import UTC, datetime
from pathlib import Path

import mlflow
import numpy as np
import onnx
import onnxruntime as ort
import torch
from omegaconf import DictConfig
from torch import nn

from contracts import drift
from contracts.bundle import BundleManifest, InputSpec, OutputSpec
from contracts.imaging import to_batch
from stages.allocator import reuse_freed_memory
from stages.classification_metrics import classification_metrics
from stages.lightning_module import load_classifier
from stages.params import Paths, load_params
from stages.quantize import calibration_photos, quantize_int8, session, timed_predict
from stages.tracking import resume_run

HISTOGRAM_BINS = 10


class Served(nn.Module):
    """What the service runs: probabilities from [0, 1] RGB, optionally flip-averaged."""

    def __init__(self, net: nn.Module, tta: bool) -> None:
        super().__init__()
        self.net, self.tta = net, tta

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        if not self.tta:
            return self.net(image).softmax(1)
        # One pass over photos and mirrors: the graph holds the network once, so int8's
        # keep_float (first conv, classifier) covers both halves.
        probs = self.net(torch.cat([image, image.flip(3)])).softmax(1)
        count = image.shape[0]
        return (probs[:count] + probs[count:]) / 2


def export_onnx(model: nn.Module, size: int, path: Path, opset: int) -> None:
    example = torch.rand(2, 3, size, size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (example,),
            str(path),
            input_names=["image"],
            output_names=["probabilities"],
            dynamic_shapes={"image": {0: torch.export.Dim("N", min=1, max=4096)}},
            opset_version=opset,
            dynamo=True,
            external_data=False,
            verbose=False,
        )
    onnx.checker.check_model(str(path))


def prove_agreement(
    model: nn.Module,
    session: ort.InferenceSession,
    images: np.ndarray,
    tolerance: float,
    chunk: int = 16,
) -> float:
    """Largest probability difference between PyTorch and ONNX Runtime on real photos."""
    batch = to_batch(np.array(images))
    with torch.inference_mode():  # in chunks: one big eager batch is slower
        expected = np.concatenate(
            [
                model(torch.from_numpy(batch[start : start + chunk])).numpy()
                for start in range(0, len(batch), chunk)
            ]
        )
    actual = session.run(None, {"image": batch})[0]
    worst = float(np.abs(expected - actual).max())
    if not worst <= tolerance:
        raise SystemExit(
            f"export: ONNX Runtime and PyTorch disagree by {worst:.2e} on {len(batch)} test "
            f"photos (tolerance {tolerance:.0e}); the bundle was not written."
        )
    return worst


def histogram(values: np.ndarray, low: float, high: float) -> dict[str, list]:
    """A reference histogram, binned by the same code that bins live traffic for drift."""
    edges = [round(float(e), 6) for e in np.linspace(low, high, HISTOGRAM_BINS + 1)]
    return {"edges": edges, "counts": drift.histogram(values, edges).tolist()}


def reference_statistics(probs: np.ndarray, images: np.ndarray, classes: list[str]) -> dict:
    """What normal traffic looks like, for drift monitoring of the deployed model."""
    predicted = probs.argmax(1)
    brightness = np.array([np.asarray(img, dtype=np.float32).mean() / 255.0 for img in images])
    return {
        "n": len(probs),
        "class_shares": {
            c: round(float((predicted == i).mean()), 6) for i, c in enumerate(classes)
        },
        "confidence_histogram": histogram(probs.max(1), 1.0 / len(classes), 1.0),
        "brightness_histogram": histogram(brightness, 0.0, 1.0),
    }


def git_revision() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def quantized_or_refused(
    cfg: DictConfig,
    fp32_path: Path,
    paths: Paths,
    seed: int,
    fp32_accuracy: float,
    labels: np.ndarray,
    images: np.ndarray,
) -> tuple[Path, np.ndarray, float, float]:
    """The int8 graph, its test probabilities, accuracy and ms/photo; exits if it loses too much."""
    int8_path = fp32_path.with_name("model.int8.onnx.unproven")
    train_images = np.load(paths.prepared / "train_images.npy", mmap_mode="r")
    photos = calibration_photos(train_images, int(cfg.int8.calibration_photos), seed)
    quantize_int8(
        fp32_path, int8_path, photos, str(cfg.int8.calibration), list(cfg.int8.keep_float)
    )
    probs, ms = timed_predict(int8_path, images, "int8")
    accuracy = float((probs.argmax(1) == labels).mean())
    drop = fp32_accuracy - accuracy
    if drop > float(cfg.int8.max_accuracy_drop):
        int8_path.unlink()
        raise SystemExit(
            f"export: the int8 graph scores {accuracy:.4f} on the test split, {100 * drop:.2f} "
            f"points below float32 ({fp32_accuracy:.4f}); the limit is "
            f"{100 * float(cfg.int8.max_accuracy_drop):.2f} (export.int8.max_accuracy_drop). "
            "The bundle was not written: keep more nodes in float (export.int8.keep_float), "
            "try another calibration, or export with -S export.precision=fp32."
        )
    return int8_path, probs, accuracy, ms


def build_bundle(cfg: DictConfig, paths: Paths, seed: int) -> dict:
    """Export, prove and (for int8) quantize; returns what the manifest and metrics need."""
    classifier = load_classifier(paths.checkpoint)
    classes: list[str] = list(classifier.hparams.classes)
    size = int(classifier.hparams.image_size)
    served = Served(classifier.inference_net, tta=bool(cfg.tta)).eval()
    out = paths.export
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob("*.onnx*"):
        stale.unlink()
    fp32_path = out / "model.fp32.onnx.unproven"  # only a proven graph becomes model.onnx
    export_onnx(served, size, fp32_path, int(cfg.opset))
    images = np.load(paths.prepared / "test_images.npy", mmap_mode="r")
    labels = np.load(paths.prepared / "test_labels.npy")
    worst = prove_agreement(
        served, session(fp32_path), images[: int(cfg.compare_photos)], float(cfg.tolerance)
    )
    fp32_probs, fp32_ms = timed_predict(fp32_path, images, "float32")
    fp32_accuracy = float((fp32_probs.argmax(1) == labels).mean())
    result = {
        "classifier": classifier,
        "classes": classes,
        "size": size,
        "images": images,
        "labels": labels,
        "worst": worst,
        "precision": str(cfg.precision),
        "accuracy": {"fp32": round(fp32_accuracy, 6)},
        "ms": {"fp32": round(fp32_ms, 3)},
    }
    onnx_path = out / "model.onnx"
    if cfg.precision == "int8":
        int8_path, probs, int8_accuracy, int8_ms = quantized_or_refused(
            cfg, fp32_path, paths, seed, fp32_accuracy, labels, images
        )
        int8_path.replace(onnx_path)
        fp32_path.unlink()
        result["accuracy"]["int8"] = round(int8_accuracy, 6)
        result["ms"]["int8"] = round(int8_ms, 3)
    elif cfg.precision == "fp32":
        fp32_path.replace(onnx_path)
        probs = fp32_probs
    else:
        raise SystemExit(f"export.precision must be fp32 or int8, not {cfg.precision!r}")
    result.update(onnx_path=onnx_path, probs=probs)
    return result


def main() -> None:
    reuse_freed_memory()
    params = load_params()
    cfg, paths = params.export, Paths.from_params(params)
    bundle = build_bundle(cfg, paths, int(params.seed))
    onnx_path, classes, size, probs = (bundle[k] for k in ("onnx_path", "classes", "size", "probs"))
    test_metrics = classification_metrics(bundle["labels"], probs, classes)
    evaluation = paths.metrics / "evaluate.json"
    digest = hashlib.sha256(onnx_path.read_bytes()).hexdigest()
    with resume_run(paths.run_file) as run:
        manifest = BundleManifest(
            name=cfg.registered_name,
            version=digest[:12],
            model_file=onnx_path.name,
            sha256=digest,
            architecture=bundle["classifier"].hparams.model.get("name", "unknown"),
            classes=classes,
            input=InputSpec(
                shape=["N", 3, size, size],
                size=size,
                preprocessing=(
                    "contracts.imaging.load: decode to upright RGB, resize the shorter side to "
                    "size (bilinear, antialiased), centre-crop size x size"
                ),
            ),
            output=OutputSpec(shape=["N", len(classes)]),
            tta=bool(cfg.tta),
            precision=bundle["precision"],
            accuracy=bundle["accuracy"],
            # The served graph's own figures on the test split, and the evaluate stage's.
            metrics={k: v for k, v in test_metrics.items() if k != "per_class"},
            evaluation=json.loads(evaluation.read_text()) if evaluation.exists() else {},
            data_version=json.loads((paths.prepared / "meta.json").read_text()).get(
                "data_version", "unknown"
            ),
            git_revision=git_revision(),
            mlflow_run_id=run.info.run_id,
            created_at=datetime.now(UTC).isoformat(timespec="seconds"),
            reference=reference_statistics(probs, bundle["images"], classes),
        )
        manifest.write(paths.export)
        export_metrics = {
            "precision": bundle["precision"],
            "served_test_accuracy": test_metrics["accuracy"],
            "served_test_f1_macro": test_metrics["f1_macro"],
            **{f"{k}_test_accuracy": v for k, v in bundle["accuracy"].items()},
            **{f"{k}_ms_per_photo_1_thread": v for k, v in bundle["ms"].items()},
            "onnx_max_abs_diff": bundle["worst"],
            "onnx_size_mb": round(onnx_path.stat().st_size / 2**20, 2),
        }
        (paths.metrics / "export.json").write_text(json.dumps(export_metrics, indent=2) + "\n")
        mlflow.log_metrics({k: v for k, v in export_metrics.items() if isinstance(v, float)})
        mlflow.log_artifact(str(paths.export / "model.json"), "bundle")
        version = register(onnx_path, cfg.registered_name, manifest)
    print(
        f"export: {onnx_path} ({bundle['precision']}, {export_metrics['onnx_size_mb']} MB, "
        f"version {manifest.version}), test accuracy {bundle['accuracy']}, "
        f"ms/photo on one thread {bundle['ms']}, max |ONNX fp32 - PyTorch| "
        f"{bundle['worst']:.1e}, registered as {cfg.registered_name} v{version}"
    )


def register(onnx_path: Path, name: str, manifest: BundleManifest) -> str:
    """Log the graph to the MLflow registry, tagged with what identifies the bundle."""
    info = mlflow.onnx.log_model(
        onnx.load(str(onnx_path)),
        name="model",
        registered_model_name=name,
        save_as_external_data=False,
    )
    client = mlflow.MlflowClient()
    version = str(info.registered_model_version)
    for key in ("data_version", "git_revision", "version"):
        client.set_model_version_tag(name, version, key, getattr(manifest, key))
    return version


if __name__ == "__main__":
    main()
