"""Stage 4: best checkpoint -> the model bundle (models/export/), proven and registered.

The bundle is what the service loads: an ONNX graph that takes RGB in [0, 1] and
returns probabilities (normalisation inside), and model.json (docs/bundle.md).
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
from torch import nn
from tqdm import tqdm

from serving.bundle import BundleManifest, InputSpec, OutputSpec
from serving.imaging import to_batch
from stages.classification_metrics import classification_metrics
from stages.lightning_module import load_classifier
from stages.params import Paths, load_params
from stages.tracking import resume_run
HISTOGRAM_BINS = 10


class Served(nn.Module):
    """What the service runs: probabilities from [0, 1] RGB, optionally flip-averaged."""

    def __init__(self, net: nn.Module, tta: bool) -> None:
        super().__init__()
        self.net, self.tta = net, tta

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        probs = self.net(image).softmax(1)
        if self.tta:
            probs = (probs + self.net(image.flip(3)).softmax(1)) / 2
        return probs


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


def onnx_predict(session: ort.InferenceSession, images: np.ndarray, batch: int = 64) -> np.ndarray:
    """Run the bundle exactly as the service does: uint8 pixels -> imaging.to_batch -> ONNX."""
    out = []
    for start in tqdm(
        range(0, len(images), batch), desc="export: ONNX on test split", unit="batch"
    ):
        out.append(
            session.run(None, {"image": to_batch(np.array(images[start : start + batch]))})[0]
        )
    return np.concatenate(out)


def prove_agreement(
    model: nn.Module, session: ort.InferenceSession, images: np.ndarray, tolerance: float
) -> float:
    """Largest probability difference between PyTorch and ONNX Runtime on real photos."""
    batch = to_batch(np.array(images))
    with torch.inference_mode():
        expected = model(torch.from_numpy(batch)).numpy()
    actual = session.run(None, {"image": batch})[0]
    worst = float(np.abs(expected - actual).max())
    if not worst <= tolerance:
        raise SystemExit(
            f"export: ONNX Runtime and PyTorch disagree by {worst:.2e} on {len(batch)} test "
            f"photos (tolerance {tolerance:.0e}); the bundle was not written."
        )
    return worst


def histogram(values: np.ndarray, low: float, high: float) -> dict[str, list]:
    edges = np.linspace(low, high, HISTOGRAM_BINS + 1)
    counts, _ = np.histogram(np.clip(values, low, high), bins=edges)
    return {"edges": [round(float(e), 6) for e in edges], "counts": counts.tolist()}


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


def main() -> None:
    params = load_params()
    cfg, paths = params.export, Paths.from_params(params)
    PREPARED, METRICS, EVALUATION = paths.prepared, paths.metrics / "export.json", paths.metrics / "evaluate.json"
    classifier = load_classifier(paths.checkpoint)
    classes: list[str] = list(classifier.hparams.classes)
    size = int(classifier.hparams.image_size)
    served = Served(classifier.inference_net, tta=bool(cfg.tta)).eval()

    out = paths.export
    out.mkdir(parents=True, exist_ok=True)
    onnx_path = out / "model.onnx"
    candidate = out / "model.onnx.unproven"  # becomes model.onnx only once proven
    export_onnx(served, size, candidate, int(cfg.opset))
    session = ort.InferenceSession(str(candidate), providers=["CPUExecutionProvider"])

    images = np.load(PREPARED / "test_images.npy", mmap_mode="r")
    labels = np.load(PREPARED / "test_labels.npy")
    worst = prove_agreement(
        served, session, images[: int(cfg.compare_photos)], float(cfg.tolerance)
    )
    candidate.replace(onnx_path)
    probs = onnx_predict(session, images)
    test_metrics = classification_metrics(labels, probs, classes)

    digest = hashlib.sha256(onnx_path.read_bytes()).hexdigest()
    with resume_run(paths.run_file) as run:
        manifest = BundleManifest(
            name=cfg.registered_name,
            version=digest[:12],
            model_file=onnx_path.name,
            sha256=digest,
            architecture=classifier.hparams.model.get("name", "unknown"),
            classes=classes,
            input=InputSpec(
                shape=["N", 3, size, size],
                size=size,
                preprocessing=(
                    "serving.imaging.load: decode to upright RGB, resize the shorter side to "
                    "size (bilinear, antialiased), centre-crop size x size"
                ),
            ),
            output=OutputSpec(shape=["N", len(classes)]),
            tta=bool(cfg.tta),
            precision="fp32",
            accuracy={"fp32": test_metrics["accuracy"], "served": test_metrics["accuracy"]},
            # The served graph's own figures on the test split, and the evaluate stage's.
            metrics={k: v for k, v in test_metrics.items() if k != "per_class"},
            evaluation=json.loads(EVALUATION.read_text()) if EVALUATION.exists() else {},
            data_version=json.loads((PREPARED / "meta.json").read_text()).get(
                "data_version", "unknown"
            ),
            git_revision=git_revision(),
            mlflow_run_id=run.info.run_id,
            created_at=datetime.now(UTC).isoformat(timespec="seconds"),
            reference=reference_statistics(probs, images, classes),
        )
        manifest.write(out)
        export_metrics = {
            "onnx_test_accuracy": test_metrics["accuracy"],
            "onnx_test_f1_macro": test_metrics["f1_macro"],
            "onnx_max_abs_diff": worst,
            "onnx_size_mb": round(onnx_path.stat().st_size / 2**20, 2),
        }
        METRICS.write_text(json.dumps(export_metrics, indent=2) + "\n")
        mlflow.log_metrics(export_metrics)
        mlflow.log_artifact(str(out / "model.json"), "bundle")
        info = mlflow.onnx.log_model(
            onnx.load(str(onnx_path)),
            name="model",
            registered_model_name=cfg.registered_name,
            save_as_external_data=False,
        )
        client = mlflow.MlflowClient()
        version = str(info.registered_model_version)
        for key in ("data_version", "git_revision", "version"):
            client.set_model_version_tag(
                cfg.registered_name, version, key, getattr(manifest, key)
            )
    print(
        f"export: {onnx_path} ({export_metrics['onnx_size_mb']} MB, version {manifest.version}), "
        f"ONNX test accuracy {test_metrics['accuracy']:.4f}, max |ONNX - PyTorch| {worst:.1e}, "
        f"registered as {cfg.registered_name} v{version}"
    )


if __name__ == "__main__":
    main()
