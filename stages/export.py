"""Stage 4: best checkpoint -> the model bundle (paths.export), proven, quantized, described.

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
from dataclasses import dataclass, field
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
from contracts.bundle import (
    BundleManifest,
    Calibration,
    Environment,
    Environments,
    InputSpec,
    OodSpec,
    OutputSpec,
)
from contracts.imaging import to_batch
from contracts.ood import FEATURES_OUTPUT
from stages.allocator import reuse_freed_memory
from stages.calibrate import calibration_record, fitted_temperature, write_ood_reference
from stages.classification_metrics import classification_metrics
from stages.fingerprint import environment_fingerprint
from stages.lightning_module import Classifier, load_classifier
from stages.model_card import render as render_card
from stages.model_card import test_names, write_card
from stages.models import FeaturesAndLogits
from stages.params import Paths, load_params
from stages.quantize import calibration_photos, quantize_int8, session, timed_predict
from stages.tracking import resume_run

STACK_TRACE_KEY = "pkg.torch.onnx.stack_trace"  # node metadata written by the dynamo exporter


class Served(nn.Module):
    """What the service runs: [0, 1] RGB -> (probabilities, features), optionally flip-averaged.

    The probabilities are softmax(logits / temperature) (temperature scaling, fitted on the
    validation split); `features` are the penultimate activations the OOD score reads.
    """

    def __init__(self, net: nn.Module, tta: bool, temperature: float = 1.0) -> None:
        super().__init__()
        self.net, self.tta = FeaturesAndLogits(net), tta
        self.register_buffer("inverse_temperature", torch.tensor(1.0 / temperature))

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.tta:
            features, logits = self.net(image)
            return (logits * self.inverse_temperature).softmax(1), features
        # One pass over photos and mirrors: the graph holds the network once, so int8's
        # keep_float (first conv, classifier) covers both halves.
        features, logits = self.net(torch.cat([image, image.flip(3)]))
        probs = (logits * self.inverse_temperature).softmax(1)
        count = image.shape[0]
        return (
            (probs[:count] + probs[count:]) / 2,
            (features[:count] + features[count:]) / 2,
        )


def export_onnx(model: nn.Module, size: int, path: Path, opset: int) -> None:
    example = torch.rand(2, 3, size, size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (example,),
            str(path),
            input_names=["image"],
            output_names=["probabilities", FEATURES_OUTPUT],
            dynamic_shapes={"image": {0: torch.export.Dim("N", min=1, max=4096)}},
            opset_version=opset,
            dynamo=True,
            external_data=False,
            verbose=False,
        )
    strip_stack_traces(path)
    onnx.checker.check_model(str(path))


def strip_stack_traces(path: Path) -> None:
    """Drop the exporter's per-node Python stack traces: they name this checkout's absolute
    paths, so the same checkpoint exported from two clones gave two bundle versions."""
    model = onnx.load(str(path))
    for node in model.graph.node:
        kept = [p for p in node.metadata_props if p.key != STACK_TRACE_KEY]
        del node.metadata_props[:]
        node.metadata_props.extend(kept)
    onnx.save(model, str(path))


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
                model(torch.from_numpy(batch[start : start + chunk]))[0].numpy()
                for start in range(0, len(batch), chunk)
            ]
        )
    actual = session.run(["probabilities"], {"image": batch})[0]
    worst = float(np.abs(expected - actual).max())
    if not worst <= tolerance:
        raise SystemExit(
            f"export: ONNX Runtime and PyTorch disagree by {worst:.2e} on {len(batch)} test "
            f"photos (tolerance {tolerance:.0e}); the bundle was not written."
        )
    return worst


def histogram(values: np.ndarray, low: float, high: float, bins: int) -> dict[str, list]:
    """A reference histogram, binned by the same code that bins live traffic for drift."""
    edges = [round(float(e), 6) for e in np.linspace(low, high, bins + 1)]
    return {"edges": edges, "counts": drift.histogram(values, edges).tolist()}


def reference_statistics(
    probs: np.ndarray, images: np.ndarray, classes: list[str], bins: int = 10
) -> dict:
    """What normal traffic looks like, for drift monitoring of the deployed model."""
    predicted = probs.argmax(1)
    brightness = np.array([np.asarray(img, dtype=np.float32).mean() / 255.0 for img in images])
    return {
        "n": len(probs),
        "class_shares": {
            c: round(float((predicted == i).mean()), 6) for i, c in enumerate(classes)
        },
        "confidence_histogram": histogram(probs.max(1), 1.0 / len(classes), 1.0, bins),
        "brightness_histogram": histogram(brightness, 0.0, 1.0, bins),
    }


def git_revision() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


@dataclass(frozen=True)
class HeldOutPhotos:
    """The prepared test split: photos (uint8, as the service decodes them) and labels."""

    images: np.ndarray
    labels: np.ndarray

    @classmethod
    def load(cls, paths: Paths, split: str = "test") -> HeldOutPhotos:
        return cls(
            images=np.load(paths.split_images(split), mmap_mode="r"),
            labels=np.load(paths.split_labels(split)),
        )

    def accuracy(self, probs: np.ndarray) -> float:
        return float((probs.argmax(1) == self.labels).mean())


@dataclass(frozen=True)
class Scored:
    """One graph scored on the test split: probabilities, accuracy, ms a photo on one thread."""

    probs: np.ndarray
    accuracy: float
    ms_per_photo: float


@dataclass
class BuiltBundle:
    """What export made and proved: the served graph and the figures model.json records."""

    classifier: Classifier
    onnx_path: Path
    precision: str
    served: Scored
    test: HeldOutPhotos
    worst_difference: float
    calibration: Calibration | None = None
    ood: OodSpec | None = None
    accuracy: dict[str, float] = field(default_factory=dict)
    ms: dict[str, float] = field(default_factory=dict)

    @property
    def classes(self) -> list[str]:
        return list(self.classifier.hparams.classes)

    @property
    def size(self) -> int:
        return int(self.classifier.hparams.image_size)


def score(path: Path, test: HeldOutPhotos, label: str, timing: DictConfig) -> Scored:
    probs, ms = timed_predict(path, test.images, label, int(timing.batch_size), int(timing.photos))
    return Scored(probs, test.accuracy(probs), ms)


def quantized_or_refused(
    cfg: DictConfig, fp32_path: Path, fp32: Scored, test: HeldOutPhotos, calibration: np.ndarray
) -> tuple[Path, Scored]:
    """The int8 graph and its scores; exits if it loses more accuracy than the config allows."""
    int8 = cfg.int8
    int8_path = fp32_path.with_name("model.int8.onnx.unproven")
    quantize_int8(
        fp32_path,
        int8_path,
        calibration,
        str(int8.calibration),
        list(int8.keep_float),
        int(int8.calibration_batch_size),
    )
    scored = score(int8_path, test, "int8", cfg.timing)
    drop = fp32.accuracy - scored.accuracy
    if drop > float(int8.max_accuracy_drop):
        int8_path.unlink()
        raise SystemExit(
            f"export: the int8 graph scores {scored.accuracy:.4f} on the test split, "
            f"{100 * drop:.2f} points below float32 ({fp32.accuracy:.4f}); the limit is "
            f"{100 * float(int8.max_accuracy_drop):.2f} (export.int8.max_accuracy_drop). "
            "The bundle was not written: keep more nodes in float (export.int8.keep_float), "
            "try another calibration, or export with -S export.precision=fp32."
        )
    return int8_path, scored


def proven_float_graph(
    cfg: DictConfig, classifier: Classifier, out: Path, test: HeldOutPhotos, temperature: float
):
    """The float graph, written and proven to agree with PyTorch on real test photos."""
    served = Served(classifier.inference_net, tta=bool(cfg.tta), temperature=temperature).eval()
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob("*.onnx*"):
        stale.unlink()
    fp32_path = out / "model.fp32.onnx.unproven"  # only a proven graph becomes model.onnx
    export_onnx(served, int(classifier.hparams.image_size), fp32_path, int(cfg.opset))
    worst = prove_agreement(
        served, session(fp32_path), test.images[: int(cfg.compare_photos)], float(cfg.tolerance)
    )
    return fp32_path, worst


def build_bundle(cfg: DictConfig, paths: Paths, seed: int) -> BuiltBundle:
    """Export, prove and (for int8) quantize the checkpoint's served graph."""
    if cfg.precision not in ("fp32", "int8"):
        raise SystemExit(f"export.precision must be fp32 or int8, not {cfg.precision!r}")
    classifier = load_classifier(paths.checkpoint)
    test, val = HeldOutPhotos.load(paths), HeldOutPhotos.load(paths, "val")
    temperature = fitted_temperature(classifier.inference_net, val.images, val.labels)
    fp32_path, worst = proven_float_graph(cfg, classifier, paths.export, test, temperature)
    fp32 = score(fp32_path, test, "float32", cfg.timing)
    built = BuiltBundle(
        classifier, paths.export / "model.onnx", str(cfg.precision), fp32, test, worst,
        accuracy={"fp32": round(fp32.accuracy, 6)}, ms={"fp32": round(fp32.ms_per_photo, 3)},
    )  # fmt: skip
    if cfg.precision == "fp32":
        fp32_path.replace(built.onnx_path)
        return described(built, cfg, paths, temperature, val)
    train_images = np.load(paths.split_images("train"), mmap_mode="r")
    photos = calibration_photos(train_images, int(cfg.int8.calibration_photos), seed)
    int8_path, built.served = quantized_or_refused(cfg, fp32_path, fp32, test, photos)
    int8_path.replace(built.onnx_path)
    fp32_path.unlink()
    built.accuracy["int8"] = round(built.served.accuracy, 6)
    built.ms["int8"] = round(built.served.ms_per_photo, 3)
    return described(built, cfg, paths, temperature, val)


def described(
    built: BuiltBundle, cfg: DictConfig, paths: Paths, temperature: float, val: HeldOutPhotos
) -> BuiltBundle:
    """Record the served graph's calibration on the test split and write its OOD reference."""
    built.calibration = calibration_record(
        temperature, len(val.labels), built.served.probs, built.test.labels
    )
    train = HeldOutPhotos.load(paths, "train")
    built.ood = write_ood_reference(
        cfg.ood, built.onnx_path, (train.images, train.labels), val.images
    ).spec
    return built


def bundle_version(onnx_digest: str, ood: OodSpec | None) -> str:
    """The graph's hash, combined with the whole OOD description (its file's hash, method,
    k, threshold): any of them changes what /predict answers, so each changes the version."""
    if ood is None:
        return onnx_digest[:12]
    described = ood.model_dump_json()  # fields in their declared order: stable
    return hashlib.sha256(f"{onnx_digest}:{described}".encode()).hexdigest()[:12]


def training_environment(paths: Paths) -> Environment | None:
    """The fingerprint train recorded in metrics/train.json (absent in older runs)."""
    try:
        recorded = json.loads(paths.train_metrics.read_text()).get("environment")
    except FileNotFoundError:
        return None
    return Environment.model_validate(recorded) if recorded else None


def manifest_for(
    cfg: DictConfig, bundle: BuiltBundle, test_metrics: dict, paths: Paths, run_id: str
) -> BundleManifest:
    """model.json for the bundle, as docs/bundle.md describes it."""
    digest = hashlib.sha256(bundle.onnx_path.read_bytes()).hexdigest()
    evaluation = paths.metrics / "evaluate.json"
    trained = training_environment(paths)
    return BundleManifest(
        name=cfg.registered_name,
        version=bundle_version(digest, bundle.ood),
        model_file=bundle.onnx_path.name,
        sha256=digest,
        architecture=bundle.classifier.hparams.model.get("name", "unknown"),
        classes=bundle.classes,
        input=InputSpec(
            shape=["N", 3, bundle.size, bundle.size],
            size=bundle.size,
            preprocessing=(
                "contracts.imaging.load: decode to upright RGB, resize the shorter side to "
                "size (bilinear, antialiased), centre-crop size x size"
            ),
        ),
        output=OutputSpec(shape=["N", len(bundle.classes)]),
        tta=bool(cfg.tta),
        precision=bundle.precision,
        accuracy=bundle.accuracy,
        # The served graph's own figures on the test split, and the evaluate stage's.
        metrics={k: v for k, v in test_metrics.items() if k != "per_class"},
        evaluation=json.loads(evaluation.read_text()) if evaluation.exists() else {},
        data_version=json.loads(paths.meta.read_text()).get("data_version", "unknown"),
        git_revision=git_revision(),
        mlflow_run_id=run_id,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        reference=reference_statistics(
            bundle.served.probs, bundle.test.images, bundle.classes, int(cfg.histogram_bins)
        ),
        environment=Environments(
            train=trained,
            export=environment_fingerprint(trained.precision if trained else "unknown"),
        ),
        calibration=bundle.calibration,
        ood=bundle.ood,
    )


def export_metrics(bundle: BuiltBundle, test_metrics: dict) -> dict[str, float | str]:
    """metrics/export.json: what DVC compares across experiments."""
    return {
        "precision": bundle.precision,
        "served_test_accuracy": test_metrics["accuracy"],
        "served_test_f1_macro": test_metrics["f1_macro"],
        **{f"{k}_test_accuracy": v for k, v in bundle.accuracy.items()},
        **{f"{k}_ms_per_photo_1_thread": v for k, v in bundle.ms.items()},
        "onnx_max_abs_diff": bundle.worst_difference,
        **calibration_figures(bundle.calibration),
        "onnx_size_mb": round(bundle.onnx_path.stat().st_size / 2**20, 2),
    }


def calibration_figures(calibration: Calibration | None) -> dict[str, float]:
    """Temperature and test-split ECE / log loss before and after, for export.json."""
    if calibration is None:
        return {}
    keys = ("temperature", "ece_before", "ece_after", "nll_before", "nll_after")
    return {f"calibration_{k}": getattr(calibration, k) for k in keys}


def main() -> None:
    reuse_freed_memory()
    params = load_params()
    cfg, paths = params.export, Paths.from_params(params)
    bundle = build_bundle(cfg, paths, int(params.seed))
    test_metrics = classification_metrics(bundle.test.labels, bundle.served.probs, bundle.classes)
    with resume_run(paths.run_file) as run:
        manifest = manifest_for(cfg, bundle, test_metrics, paths, run.info.run_id)
        manifest.write(paths.export)
        card = write_card(paths.export, card_for(manifest, bundle, paths))
        figures = export_metrics(bundle, test_metrics)
        (paths.metrics / "export.json").write_text(json.dumps(figures, indent=2) + "\n")
        mlflow.log_metrics({k: v for k, v in figures.items() if isinstance(v, float)})
        # A candidate: logged with its run, registered only by the promotion gate.
        for path in (paths.export / "model.json", card, bundle.onnx_path):
            mlflow.log_artifact(str(path), "bundle")
    print(
        f"export: {bundle.onnx_path} ({bundle.precision}, {figures['onnx_size_mb']} MB, "
        f"version {manifest.version}), test accuracy {bundle.accuracy}, "
        f"ms/photo on one thread {bundle.ms}, max |ONNX fp32 - PyTorch| "
        f"{bundle.worst_difference:.1e}; a challenger until `python -m stages.promote` "
        f"accepts it"
    )


def card_for(manifest: BundleManifest, bundle: BuiltBundle, paths: Paths) -> str:
    """MODEL_CARD.md's text, from the served graph's test predictions and the stage metrics."""
    labels = bundle.test.labels
    names = test_names(paths.manifest, len(labels))
    return render_card(manifest, bundle.served.probs, labels, names, paths.metrics)


if __name__ == "__main__":
    main()
