"""Stage: photos whose labels an out-of-fold model most confidently disputes, for review.

Every prepared photo (train, val and test) is described by the ImageNet-pretrained
backbone, which has never seen this sample's labels; a logistic regression then
predicts each photo's class from the other folds only (k-fold). A photo whose
out-of-fold prediction confidently contradicts its folder is a candidate label error.
Nothing is dropped: the CSV lists every disputed photo for a person to check in data/.
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import numpy as np
import pandas as pd
import torch
from hydra.utils import instantiate
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from tqdm import tqdm

from stages import gallery
from stages.allocator import reuse_freed_memory
from stages.models import fold_batch_norms
from stages.params import SPLITS, Paths, load_params


@torch.inference_mode()
def backbone_features(
    backbone: torch.nn.Module,
    images: np.ndarray,
    batch_size: int,
    threads: int,
    size: int | None = None,
) -> np.ndarray:
    """Pooled ImageNet features [N, 1280] of uint8 [N, S, S, 3] photos (no fine-tuning).

    `size` resizes the photos first: features at 160 px cost half of 224 px and judge
    a photo's class nearly as well. Batch norms are folded into the convolutions.
    """
    torch.set_num_threads(threads)
    model = backbone.eval()
    net = fold_batch_norms(model.net)
    chunks = []
    for start in tqdm(range(0, len(images), batch_size), desc="review: features", unit="batch"):
        batch = torch.from_numpy(np.asarray(images[start : start + batch_size]))
        x = batch.permute(0, 3, 1, 2).float().div_(255.0)
        if size and size != x.shape[-1]:
            x = torch.nn.functional.interpolate(
                x, size=(size, size), mode="bilinear", antialias=True
            )
        x = ((x - model.mean) / model.std).contiguous(memory_format=torch.channels_last)
        chunks.append(net.forward_head(net.forward_features(x), pre_logits=True).numpy())
    return np.concatenate(chunks)


def out_of_fold_probabilities(
    features: np.ndarray, labels: np.ndarray, folds: int, seed: int, logistic_c: float
) -> np.ndarray:
    """Class probabilities for each photo from a model fitted on the other folds only."""
    model = make_pipeline(StandardScaler(), LogisticRegression(C=logistic_c, max_iter=2000))
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return cross_val_predict(model, features, labels, cv=splitter, method="predict_proba")


def disputed_table(
    manifest: pd.DataFrame, probs: np.ndarray, classes: list[str], raw: Path, threshold: float
) -> pd.DataFrame:
    """Every photo whose out-of-fold prediction contradicts its label with >= threshold."""
    given = manifest["label"].map(classes.index).to_numpy()
    predicted = probs.argmax(1)
    table = pd.DataFrame(
        {
            "file": [str(raw / f) for f in manifest["file"]],
            "split": manifest["split"],
            "given_label": manifest["label"],
            "predicted_label": [classes[i] for i in predicted],
            "confidence": probs.max(1).round(4),
            "row": np.arange(len(manifest)),
        }
    )
    disputed = table[(predicted != given) & (table["confidence"] >= threshold)]
    return disputed.sort_values("confidence", ascending=False, kind="stable")


def draw_gallery(table: pd.DataFrame, images: np.ndarray, path: Path, limit: int) -> None:
    """The most confidently disputed photos, captioned with filed and predicted labels."""
    picks = table.head(limit)
    gallery.draw_gallery(
        [images[row] for row in picks["row"]],
        [
            f"{Path(r.file).name}\nfiled {r.given_label}, looks {r.predicted_label} "
            f"({r.confidence:.0%})"
            for r in picks.itertuples()
        ],
        "Labels most confidently disputed (out-of-fold)",
        "no disputed labels",
        path,
    )


def main() -> None:
    reuse_freed_memory()
    params = load_params()
    cfg, paths = params.review_labels, Paths.from_params(params)
    classes = json.loads(paths.meta.read_text())["classes"]
    manifest = pd.read_csv(paths.manifest)
    manifest["split"] = pd.Categorical(manifest["split"], SPLITS, ordered=True)
    manifest = manifest.sort_values(["split", "index"], kind="stable").reset_index(drop=True)
    images = np.concatenate([np.load(paths.split_images(split), mmap_mode="r") for split in SPLITS])
    labels = manifest["label"].map(classes.index).to_numpy()
    features = backbone_features(
        instantiate(cfg.backbone),
        images,
        int(cfg.batch_size),
        int(params.trainer.threads),
        cfg.get("image_size"),
    )
    probs = out_of_fold_probabilities(
        features, labels, int(cfg.folds), int(params.seed), float(cfg.logistic_c)
    )
    table = disputed_table(manifest, probs, classes, paths.raw, float(cfg.min_confidence))

    out = paths.plots / "review"
    out.mkdir(parents=True, exist_ok=True)
    table.drop(columns="row").to_csv(out / "disputed_labels.csv", index=False)
    draw_gallery(table, images, out / "disputed_labels.png", int(cfg.gallery_size))
    summary = {
        "photos": len(labels),
        "out_of_fold_accuracy": round(float((probs.argmax(1) == labels).mean()), 6),
        "disputed": len(table),
        "disputed_by_split": {s: int((table["split"] == s).sum()) for s in SPLITS},
    }
    (paths.metrics / "review_labels.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(
        f"review_labels: {summary['disputed']} of {summary['photos']} labels disputed with "
        f">= {float(cfg.min_confidence):.0%} confidence (out-of-fold accuracy "
        f"{summary['out_of_fold_accuracy']:.4f}); see {out / 'disputed_labels.csv'}"
    )


if __name__ == "__main__":
    main()
