"""Which out-of-distribution score separates "neither cat nor dog" best? Measured, to JSON.

Exports the checkpoint's served graph (probabilities and `features`, T = 1) to a scratch
folder, runs it on the prepared splits and on photos that are neither cats nor dogs, and
writes, for each candidate score, AUROC (out-of-distribution = positive) and the FPR at
95 % TPR: the share of those photos that pass when 95 % of the test split's cats and dogs
pass. It also reports the share flagged at the validation-split threshold export uses,
and the temperature fitted on the validation split with the test split's ECE before and
after (the figures export records). The photos that are neither cat nor dog:
- scikit-image's sample photos (`skimage.data`), minus its cat (`chelsea`, `cat`);
- scikit-learn's `china.jpg` and `flower.jpg`;
- synthetic: flat colours, noise, and text rendered with PIL.
Each goes through the image contract (PNG bytes -> contracts.imaging.load), like uploads.

    python scripts/measure_ood.py --checkpoint /work/main/models/checkpoints/best.ckpt \\
        --prepared /work/main/data/prepared --out /tmp/calib/ood.json
"""

from __future__ import annotations

import argparse
import io
import json
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from sklearn.metrics import roc_auc_score

from contracts import calibration as cal
from contracts.imaging import load
from contracts.ood import fit_mahalanobis, knn_distance, mahalanobis, threshold_for
from stages.calibrate import graph_outputs
from stages.export import Served, export_onnx
from stages.lightning_module import load_classifier

SKIMAGE_PHOTOS = (
    "astronaut", "brick", "camera", "cell", "clock", "coffee", "coins", "colorwheel", "grass",
    "gravel", "hubble_deep_field", "immunohistochemistry", "logo", "microaneurysms", "moon",
    "page", "retina", "rocket", "text", "checkerboard",
)  # fmt: skip
FLAT_COLOURS = ((255, 0, 0), (0, 160, 0), (0, 0, 255), (255, 255, 255), (0, 0, 0), (128, 128, 128),
                (255, 200, 0), (120, 60, 20))  # fmt: skip


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def synthetic_photos(seed: int = 0) -> dict[str, bytes]:
    """Flat colours, uniform and Gaussian noise, and pages of text rendered with PIL."""
    rng = np.random.default_rng(seed)
    photos = {
        f"flat_{i}": png(np.full((256, 256, 3), c, np.uint8)) for i, c in enumerate(FLAT_COLOURS)
    }
    for i in range(4):
        photos[f"noise_uniform_{i}"] = png(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8))
        gauss = np.clip(rng.normal(128, 40, (256, 256, 3)), 0, 255).astype(np.uint8)
        photos[f"noise_gaussian_{i}"] = png(gauss)
    for i in range(6):
        page = Image.new("RGB", (320, 320), (255, 255, 255) if i % 2 == 0 else (250, 240, 200))
        draw = ImageDraw.Draw(page)
        for line in range(14):
            words = " ".join(rng.choice(["cat", "dog", "lorem", "ipsum", "model", "42"], 6))
            draw.text((10, 8 + 22 * line), words, fill=(0, 0, 0))
        photos[f"text_{i}"] = png(np.asarray(page))
    return photos


def package_photos() -> dict[str, bytes]:
    """scikit-image's sample photos (no cats) and scikit-learn's two sample photos."""
    import skimage.data
    from sklearn.datasets import load_sample_images

    photos = {}
    for name in SKIMAGE_PHOTOS:
        array = np.asarray(getattr(skimage.data, name)())
        if array.dtype != np.uint8:
            array = (255 * (array > 0)).astype(np.uint8)
        photos[f"skimage_{name}"] = png(array)
    samples = load_sample_images()
    for name, array in zip(samples.filenames, samples.images, strict=True):
        photos[f"sklearn_{Path(name).name}"] = png(array)
    return photos


def neither_cat_nor_dog(size: int) -> dict[str, np.ndarray]:
    """Every photo of this kind, through the image contract at the model's size."""
    return {
        name: load(data, size) for name, data in {**package_photos(), **synthetic_photos()}.items()
    }


def separation(in_scores: np.ndarray, out_scores: np.ndarray, threshold: float) -> dict:
    """AUROC (OOD positive), FPR at 95 % TPR (OOD passing when 95 % of ID pass), flagged share."""
    labels = np.r_[np.zeros(len(in_scores)), np.ones(len(out_scores))]
    pass_line = np.quantile(in_scores, 0.95)
    return {
        "auroc": round(float(roc_auc_score(labels, np.r_[in_scores, out_scores])), 4),
        "fpr_at_95_tpr": round(float((out_scores <= pass_line).mean()), 4),
        "ood_flagged_at_val_threshold": round(float((out_scores > threshold).mean()), 4),
        "test_flagged_at_val_threshold": round(float((in_scores > threshold).mean()), 4),
    }


def candidate_scores(features: dict, logits: dict, labels: np.ndarray, components: int) -> dict:
    """Each candidate as a function of a split name -> its scores (higher = stranger)."""
    full = fit_mahalanobis(features["train"], labels, 2)
    reduced = fit_mahalanobis(features["train"], labels, 2, components)
    bank = features["train"]

    def lse(z: np.ndarray) -> np.ndarray:
        m = z.max(1)
        return m + np.log(np.exp(z - m[:, None]).sum(1))

    return {
        "max_softmax": lambda s: 1.0 - cal.softmax(logits[s]).max(1),
        "energy": lambda s: -lse(logits[s]),
        "mahalanobis_full": lambda s: mahalanobis(features[s].astype(np.float64), **full),
        f"mahalanobis_top{components}": lambda s: mahalanobis(
            features[s].astype(np.float64), **reduced
        ),
        "knn_k1_cosine": lambda s: knn_distance(features[s], bank, 1),
        "knn_k10_cosine": lambda s: knn_distance(features[s], bank, 10),
    }


def served_outputs(checkpoint: Path, prepared: Path, train_limit: int) -> tuple[dict, dict, dict]:
    """Features and logits of the T = 1 graph for train/val/test and the OOD photos."""
    classifier = load_classifier(checkpoint)
    size = int(classifier.hparams.image_size)
    served = Served(classifier.inference_net, tta=False).eval()
    head = served.net.head
    weight, bias = head.weight.detach().numpy(), head.bias.detach().numpy()
    splits = {
        s: np.load(prepared / f"{s}_images.npy", mmap_mode="r") for s in ("train", "val", "test")
    }
    labels = {s: np.load(prepared / f"{s}_labels.npy") for s in splits}
    if train_limit:
        pick = np.random.default_rng(0).permutation(len(labels["train"]))[:train_limit]
        pick.sort()
        splits["train"], labels["train"] = splits["train"][pick], labels["train"][pick]
    ood = neither_cat_nor_dog(size)
    splits["ood"] = np.stack(list(ood.values()))
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "served.onnx"
        export_onnx(served, size, path, opset=18)
        features = {s: graph_outputs(path, images, s)[1] for s, images in splits.items()}
    logits = {s: f @ weight.T + bias for s, f in features.items()}
    return features, logits, {**labels, "ood_names": list(ood)}


def calibration_figures(logits: dict, labels: dict) -> dict:
    """Temperature fitted on val; ECE (15 bins) and log loss on test, before and after."""
    t = cal.fit_temperature(logits["val"], labels["val"])
    test, y = logits["test"], labels["test"]
    return {
        "temperature": round(t, 4),
        "ece_bins": cal.BINS,
        "test_ece_before": round(cal.expected_calibration_error(cal.softmax(test), y), 5),
        "test_ece_after": round(cal.expected_calibration_error(cal.softmax(test, t), y), 5),
        "test_nll_before": round(cal.log_loss(test, y), 5),
        "test_nll_after": round(cal.log_loss(test, y, t), 5),
        "val_nll_before": round(cal.log_loss(logits["val"], labels["val"]), 5),
        "val_nll_after": round(cal.log_loss(logits["val"], labels["val"], t), 5),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--prepared", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--components", type=int, default=256)
    parser.add_argument("--train-limit", type=int, default=0, help="0: the whole train split")
    args = parser.parse_args()
    features, logits, labels = served_outputs(args.checkpoint, args.prepared, args.train_limit)
    scores = candidate_scores(features, logits, labels["train"], args.components)
    report = {"photos": {"in_distribution_test": len(labels["test"]), "train_reference": len(labels["train"]),
                         "neither_cat_nor_dog": labels["ood_names"]},
              "calibration": calibration_figures(logits, labels), "scores": {}}  # fmt: skip
    for name, score in scores.items():
        threshold = threshold_for(score("val"), 0.95)
        report["scores"][name] = separation(score("test"), score("ood"), threshold)
        per_photo = dict(zip(labels["ood_names"], np.round(score("ood"), 4).tolist(), strict=True))
        report["scores"][name]["per_photo"] = per_photo
        report["scores"][name]["val_threshold"] = round(threshold, 5)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(
        json.dumps(
            {k: {m: v[m] for m in ("auroc", "fpr_at_95_tpr")} for k, v in report["scores"].items()},
            indent=1,
        )
    )
    print(json.dumps(report["calibration"], indent=1))


if __name__ == "__main__":
    main()
