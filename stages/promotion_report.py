"""The gate's outputs: metrics/promotion.json and a markdown report with the photos the two
models disagree on."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from stages import gallery
from stages.promotion import Comparison, Decision, Photos


def summary(comparison: Comparison, decision: Decision) -> dict:
    """metrics/promotion.json: the decision, its reasons and every figure behind it."""
    paired = asdict(comparison)
    paired.pop("disagreements")
    return {
        "decision": decision.outcome,
        "reasons": decision.reasons,
        **paired,
        "difference": round(comparison.difference, 6),
        "interval": {k: round(v, 6) for k, v in asdict(comparison.interval).items()},
        "disagreements": len(comparison.disagreements),
    }


def draw_disagreements(
    comparison: Comparison, photos: Photos, answers: tuple, path: Path, limit: int
) -> None:
    """The photos the two models label differently, captioned with truth and both answers;
    `answers` is (classes, champion probabilities, challenger probabilities)."""
    classes, old, new = answers
    picks = comparison.disagreements[:limit]
    captions = [
        f"{photos.names[i]}\ntrue {classes[photos.labels[i]]}\n"
        f"champion {classes[old[i].argmax()]}, challenger {classes[new[i].argmax()]}"
        for i in picks
    ]
    gallery.draw_gallery(
        [photos.images[i] for i in picks],
        captions,
        "Photos the champion and the challenger label differently",
        "they agree on every photo",
        path,
    )


def row(name: str, old, new) -> str:
    return f"| {name} | {old} | {new} |"


def markdown(comparison: Comparison, decision: Decision, gallery_file: str | None) -> str:
    """The report a reviewer reads (also the CI job summary)."""
    old, new = comparison.champion, comparison.challenger
    verdict = {"accept": "ACCEPTED", "refuse": "REFUSED", "no_change": "NO CHANGE"}
    lines = [
        f"# Promotion gate: {verdict[decision.outcome]}",
        "",
        *[f"- {reason}" for reason in decision.reasons],
        "",
        f"Scored on the same {comparison.photos} photos through the served graphs.",
        "",
        "| figure | champion | challenger |",
        "|---|---|---|",
        row("bundle version", old["bundle_version"], new["bundle_version"]),
        row("precision", old["precision"], new["precision"]),
        row("accuracy", old["accuracy"], new["accuracy"]),
        *[row(f"recall {k}", v, new["recall"].get(k)) for k, v in old["recall"].items()],
        row("log loss", old["log_loss"], new["log_loss"]),
        row("calibration error (ECE)", old["ece"], new["ece"]),
        row("ms per photo (1 thread)", old["ms_per_photo"], new["ms_per_photo"]),
        row("ONNX bytes", old["size_bytes"], new["size_bytes"]),
        "",
        f"Paired: {comparison.gained} photos only the challenger gets right, "
        f"{comparison.lost} only the champion; McNemar exact p = {comparison.p_value:.4g}; "
        f"accuracy difference {comparison.difference:+.4f}, bootstrap 95 % interval "
        f"[{comparison.interval.low:+.4f}, {comparison.interval.high:+.4f}]; "
        f"{len(comparison.disagreements)} photos labelled differently.",
    ]
    if gallery_file:
        lines += ["", f"![disagreements]({gallery_file})"]
    return "\n".join(lines) + "\n"


def write(out_json: Path, report: Path, comparison: Comparison, decision: Decision) -> None:
    out_json.parent.mkdir(parents=True, exist_ok=True)
    out_json.write_text(json.dumps(summary(comparison, decision), indent=2) + "\n")
    report.parent.mkdir(parents=True, exist_ok=True)
    figure = report.with_name("disagreements.png")
    report.write_text(markdown(comparison, decision, figure.name if figure.exists() else None))
