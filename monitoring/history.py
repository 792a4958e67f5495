"""The report history: one summary line per report, and its PNG of accuracy and drift.

matplotlib is imported lazily: where it is missing the PNG is skipped, not the report.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from contracts import drift
from monitoring.schema import Report, Thresholds


def summary_line(report: Report) -> dict:
    """The one-line summary appended to the history file."""
    figures = report.figures
    psi = figures.drift.psi
    return {
        "generated_at": report.generated_at,
        "since": report.window.since,
        "until": report.window.until,
        "model_version": figures.model.version,
        "predictions": figures.counts.predictions,
        "labelled": figures.counts.labelled,
        "accuracy": figures.performance.accuracy,
        "f1_macro": figures.performance.f1_macro,
        "estimated_accuracy": figures.estimated.accuracy.estimate
        if figures.estimated.accuracy
        else None,
        "ood_flagged_share": figures.estimated.ood_flagged_share,
        "latency_p95_ms": figures.latency_ms.p95,
        **{f"psi_{feature}": psi.get(feature) for feature in drift.FEATURES},
        "status": figures.status,
    }


def plot_history(history: list[dict], path: Path, thresholds: Thresholds) -> bool:
    """Accuracy and PSI per report over time, as a PNG. False when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    x = list(range(1, len(history) + 1))
    fig, (ax_acc, ax_psi) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    acc = [h.get("accuracy") if h.get("accuracy") is not None else np.nan for h in history]
    ax_acc.plot(x, acc, marker="o", label="live accuracy")
    ax_acc.axhline(thresholds.accuracy_alert, color="red", linestyle="--", label="alert")
    ax_acc.set_ylabel("accuracy")
    ax_acc.set_ylim(0, 1.02)
    ax_acc.legend(loc="lower left")
    for feature in drift.FEATURES:
        values = [h.get(f"psi_{feature}") for h in history]
        ax_psi.plot(x, [np.nan if v is None else v for v in values], marker="o", label=feature)
    ax_psi.axhline(thresholds.psi_warn, color="orange", linestyle="--", label="warn")
    ax_psi.axhline(thresholds.psi_alert, color="red", linestyle="--", label="alert")
    ax_psi.set_ylabel("PSI")
    ax_psi.set_yscale("symlog", linthresh=0.1)  # linear near the thresholds, log above
    highest = max([h.get(f"psi_{f}") or 0.0 for h in history for f in drift.FEATURES] + [0.3])
    ax_psi.set_ylim(0, highest * 1.5)
    ax_psi.set_xlabel("report (oldest first)")
    ax_psi.legend(loc="upper left", fontsize="small")
    labels = [str(h.get("generated_at", ""))[:19].replace("T", " ") for h in history]
    step = max(1, len(x) // 8)
    ax_psi.set_xticks(x[::step], labels[::step], rotation=20, fontsize="small")
    fig.suptitle("Model monitoring history")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def append_history(path: Path, report: Report) -> list[dict]:
    """Append the report's summary line; returns the whole history, oldest first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(summary_line(report)) + "\n")
    history = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by a crash must not stop the report
        if isinstance(entry, dict):
            history.append(entry)
    return history
