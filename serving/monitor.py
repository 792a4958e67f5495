"""Monitoring report: live performance and drift from the service's prediction and feedback logs.

    python -m serving.monitor --since 24h

Reads the prediction log (the current file and its rotated siblings), joins the feedback
log's true labels by request id, and writes a JSON report: counts, accuracy, precision,
recall, F1, confusion matrix, latency percentiles, prediction class shares, confidence and
brightness histograms, PSI drift against the bundle's reference, and the alerts that fire.
It appends one summary line to a history file and draws accuracy and drift over that
history as a PNG. NumPy only (the serving image has no pandas); matplotlib is imported
lazily and the PNG is skipped, not the report, where it is missing.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from serving import drift
from serving.settings import Settings

# Report files go to `reports/` beside the prediction log (the pod's log volume), so a
# run in the repository leaves no files in the working tree.
REPORT_NAME = "monitor.json"
HISTORY_NAME = "monitor-history.jsonl"
PLOT_NAME = "monitor-history.png"


# ---------------------------------------------------------------- reading the logs


@dataclass
class LogRead:
    """Records read from a JSON-lines log, and how many lines had to be skipped."""

    records: list[dict] = field(default_factory=list)
    skipped: int = 0


def log_files(path: Path) -> list[Path]:
    """The log and its size-rotated siblings (`x.jsonl.1`, `x.jsonl.2`, ...), oldest first.

    Rotation renames the current file to `.1` and older ones upwards, so a higher number
    is older; reading oldest first keeps records in time order.
    """
    rotated: list[tuple[int, Path]] = []
    if path.parent.is_dir():
        pattern = re.compile(re.escape(path.name) + r"\.(\d+)$")
        for sibling in path.parent.iterdir():
            match = pattern.match(sibling.name)
            if match and sibling.is_file():
                rotated.append((int(match.group(1)), sibling))
    files = [p for _, p in sorted(rotated, reverse=True)]
    if path.is_file():
        files.append(path)
    return files


def read_jsonl(paths: Iterable[Path]) -> LogRead:
    """All JSON objects in `paths`; blank lines are ignored, damaged lines counted.

    A line cut short by a crash or a rotation mid-write must not stop the report.
    """
    out = LogRead()
    for path in paths:
        with path.open(encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    out.skipped += 1
                    continue
                if isinstance(record, dict):
                    out.records.append(record)
                else:
                    out.skipped += 1
    return out


def parse_time(text: str) -> datetime:
    """ISO 8601 to an aware UTC datetime; a naive time is taken as UTC."""
    moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_moment(text: str, now: datetime) -> datetime:
    """A time bound: ISO 8601, or a duration before `now` such as `30m`, `24h`, `7d`."""
    match = _DURATION.match(text.strip())
    if match:
        return now - timedelta(seconds=float(match.group(1)) * _UNIT_SECONDS[match.group(2)])
    return parse_time(text)


def select_predictions(
    records: Iterable[dict],
    since: datetime | None = None,
    until: datetime | None = None,
    model_version: str | None = None,
) -> tuple[list[dict], int]:
    """Predictions inside [since, until) (and of one model version, if given).

    Returns the kept records, one per request id (the first seen), and how many records
    were skipped for a missing or unreadable time or label.
    """
    kept: list[dict] = []
    seen: set[str] = set()
    bad = 0
    for record in records:
        try:
            moment = parse_time(str(record["time"]))
            label = record["label"]
        except (KeyError, ValueError, TypeError):
            bad += 1
            continue
        if not isinstance(label, str):
            bad += 1
            continue
        if since is not None and moment < since:
            continue
        if until is not None and moment >= until:
            continue
        if model_version is not None and record.get("model_version") != model_version:
            continue
        request_id = record.get("request_id")
        if request_id is not None:
            if request_id in seen:
                continue
            seen.add(request_id)
        kept.append(record)
    return kept, bad


def true_labels(records: Iterable[dict]) -> dict[str, str]:
    """Request id to true label from feedback records, in log order: the last one wins.

    The service stores a (request id, label) pair once, but a different label for the same
    id is stored too: a later record is a correction, so it replaces the earlier one.
    """
    labels: dict[str, str] = {}
    for record in records:
        request_id, label = record.get("request_id"), record.get("label")
        if isinstance(request_id, str) and isinstance(label, str):
            labels[request_id] = label
    return labels


# ---------------------------------------------------------------- the figures


def classification_metrics(
    y_true: Sequence[str], y_pred: Sequence[str], classes: Sequence[str]
) -> dict:
    """Accuracy, per-class and macro precision/recall/F1, and the confusion matrix.

    Rows of the matrix are true classes, columns predicted ones, both in `classes` order.
    A precision or recall with a zero denominator is 0 (scikit-learn's default); a class
    neither true nor predicted in the window gets null and stays out of the macro averages
    (as scikit-learn's, over the labels present), so a one-class window is not halved.
    """
    index = {name: i for i, name in enumerate(classes)}
    matrix = np.zeros((len(classes), len(classes)), dtype=np.int64)
    for truth, pred in zip(y_true, y_pred, strict=True):
        if truth in index and pred in index:
            matrix[index[truth], index[pred]] += 1
    total = int(matrix.sum())
    tp = np.diag(matrix).astype(np.float64)
    predicted = matrix.sum(axis=0).astype(np.float64)
    actual = matrix.sum(axis=1).astype(np.float64)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, actual, out=np.zeros_like(tp), where=actual > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    present = (predicted + actual) > 0

    def per_class(values: np.ndarray) -> dict[str, float | None]:
        return {
            c: float(v) if seen else None
            for c, v, seen in zip(classes, values, present, strict=True)
        }

    def macro(values: np.ndarray) -> float | None:
        return float(values[present].mean()) if total else None

    return {
        "n": total,
        "accuracy": float(tp.sum() / total) if total else None,
        "precision": per_class(precision),
        "recall": per_class(recall),
        "f1": per_class(f1),
        "support": {c: int(v) for c, v in zip(classes, actual, strict=True)},
        "precision_macro": macro(precision),
        "recall_macro": macro(recall),
        "f1_macro": macro(f1),
        "confusion_matrix": {
            "classes": list(classes),
            "rows": "true",
            "columns": "predicted",
            "matrix": matrix.tolist(),
        },
    }


def latency_summary(latencies: Iterable[float | None]) -> dict[str, float | None]:
    """p50/p95/p99 (linear interpolation between order statistics), mean and max, in ms."""
    values = drift.finite(latencies)
    if values.size == 0:
        return {"n": 0, "p50": None, "p95": None, "p99": None, "mean": None, "max": None}
    p50, p95, p99 = np.percentile(values, [50, 95, 99])
    return {
        "n": int(values.size),
        "p50": float(p50),
        "p95": float(p95),
        "p99": float(p99),
        "mean": float(values.mean()),
        "max": float(values.max()),
    }


def _confidence_edges(reference: dict, n_classes: int) -> list[float]:
    hist = reference.get("confidence_histogram") or {}
    if hist.get("edges"):
        return [float(e) for e in hist["edges"]]
    return np.linspace(1.0 / max(n_classes, 2), 1.0, 11).tolist()


def _brightness_edges(reference: dict) -> list[float]:
    hist = reference.get("brightness_histogram") or {}
    if hist.get("edges"):
        return [float(e) for e in hist["edges"]]
    return np.linspace(0.0, 1.0, 11).tolist()


def _median(values: np.ndarray) -> float | None:
    return float(np.median(values)) if values.size else None


def build_report(
    predictions: list[dict],
    feedback: dict[str, str],
    manifest: dict,
    *,
    min_samples: int = drift.MIN_SAMPLES,
    psi_warn: float = drift.PSI_WARN,
    psi_alert: float = drift.PSI_ALERT,
    accuracy_alert: float = drift.ACCURACY_ALERT,
    min_labelled: int = drift.MIN_LABELLED,
) -> dict:
    """The report's figures from selected predictions, true labels and the bundle manifest."""
    classes = list(manifest.get("classes") or sorted({p["label"] for p in predictions}))
    reference = manifest.get("reference") or {}

    labelled = [p for p in predictions if p.get("request_id") in feedback]
    y_true = [feedback[p["request_id"]] for p in labelled]
    y_pred = [p["label"] for p in labelled]
    unknown_truth = sum(1 for t in y_true if t not in classes)
    performance = classification_metrics(y_true, y_pred, classes)

    labels = [p["label"] for p in predictions]
    confidences = [p.get("confidence") for p in predictions]
    images = [p.get("image") or {} for p in predictions]
    brightness = [img.get("brightness") for img in images]
    widths, heights = (
        drift.finite(i.get("width") for i in images),
        drift.finite(i.get("height") for i in images),
    )
    shares = drift.class_counts(labels, classes)
    n_pred = len(predictions)

    psi = drift.drift_report(
        reference, labels, confidences, brightness, classes, min_samples=min_samples
    )
    noise = _noise_levels(reference, classes, psi, shares, confidences, brightness)
    alerts = []
    for feature, value in psi.items():
        if value > psi_alert:
            # Same rule as Prometheus; `within_noise` tells a reader the window is too small
            # to tell this figure from sampling noise.
            alerts.append(
                {
                    "alert": "CatsDogsModelDrift",
                    "feature": feature,
                    "value": value,
                    "threshold": psi_alert,
                    "within_noise": bool(noise.get(feature) and value <= noise[feature]),
                }
            )
    accuracy = performance["accuracy"]
    if accuracy is not None and performance["n"] >= min_labelled and accuracy < accuracy_alert:
        alerts.append(
            {
                "alert": "CatsDogsLiveAccuracyLow",
                "value": accuracy,
                "threshold": accuracy_alert,
                "labelled": performance["n"],
            }
        )
    levels = {k: drift.level(v, psi_warn, psi_alert) for k, v in psi.items()}
    status = "alert" if alerts else ("warn" if "warn" in levels.values() else "ok")

    versions: dict[str, int] = {}
    for p in predictions:
        version = str(p.get("model_version"))
        versions[version] = versions.get(version, 0) + 1

    return {
        "status": status,
        "alerts": alerts,
        "model": {
            "name": manifest.get("name"),
            "version": manifest.get("version"),
            "classes": classes,
            "test_metrics": manifest.get("metrics"),
            "versions_in_window": versions,
        },
        "counts": {
            "predictions": n_pred,
            "labelled": len(labelled),
            "unlabelled": n_pred - len(labelled),
            "labelled_share": len(labelled) / n_pred if n_pred else None,
            "feedback_with_unknown_label": unknown_truth,
        },
        "performance": performance,
        "latency_ms": latency_summary(p.get("latency_ms") for p in predictions),
        "predictions": {
            "class_shares": {
                c: (int(k) / n_pred if n_pred else None)
                for c, k in zip(classes, shares, strict=True)
            },
            "class_counts": {c: int(k) for c, k in zip(classes, shares, strict=True)},
            "confidence_mean": _mean(drift.finite(confidences)),
            "confidence_histogram": _hist(confidences, _confidence_edges(reference, len(classes))),
            "brightness_mean": _mean(drift.finite(brightness)),
            "brightness_histogram": _hist(brightness, _brightness_edges(reference)),
            "image_width_median": _median(widths),
            "image_height_median": _median(heights),
        },
        "reference": {
            "n": reference.get("n"),
            "class_shares": reference.get("class_shares"),
            "confidence_histogram": reference.get("confidence_histogram"),
            "brightness_histogram": reference.get("brightness_histogram"),
        },
        "drift": {
            "method": "population stability index, half-count smoothing per bin",
            "psi": psi,
            "levels": levels,
            "noise_p95": noise,
            "min_samples": min_samples,
            "not_computed": [f for f in drift.FEATURES if f not in psi],
        },
        "thresholds": {
            "psi_warn": psi_warn,
            "psi_alert": psi_alert,
            "accuracy_alert": accuracy_alert,
            "min_labelled": min_labelled,
        },
    }


def _noise_levels(
    reference: dict,
    classes: list[str],
    psi: dict[str, float],
    class_counts: np.ndarray,
    confidences: list,
    brightness: list,
) -> dict[str, float | None]:
    """Per computed feature, the PSI sampling alone exceeds 5 % of the time."""
    out: dict[str, float | None] = {}
    if "class_share" in psi:
        shares = reference.get("class_shares") or {}
        n_ref = float(reference.get("n") or drift.REFERENCE_N_DEFAULT)
        ref = [float(shares.get(c, 0.0)) * n_ref for c in classes]
        out["class_share"] = drift.noise_level(ref, int(class_counts.sum()))
    for feature, values in (("confidence", confidences), ("brightness", brightness)):
        if feature in psi:
            ref = reference[f"{feature}_histogram"]["counts"]
            out[feature] = drift.noise_level(ref, int(drift.finite(values).size))
    return out


def _mean(values: np.ndarray) -> float | None:
    return float(values.mean()) if values.size else None


def _hist(values: Iterable[float | None], edges: list[float]) -> dict:
    return {"edges": edges, "counts": drift.histogram(values, edges).tolist()}


# ---------------------------------------------------------------- history and plot


def summary_line(report: dict) -> dict:
    """The one-line summary appended to the history file."""
    psi = report["drift"]["psi"]
    return {
        "generated_at": report["generated_at"],
        "since": report["window"]["since"],
        "until": report["window"]["until"],
        "model_version": report["model"]["version"],
        "predictions": report["counts"]["predictions"],
        "labelled": report["counts"]["labelled"],
        "accuracy": report["performance"]["accuracy"],
        "f1_macro": report["performance"]["f1_macro"],
        "latency_p95_ms": report["latency_ms"]["p95"],
        **{f"psi_{feature}": psi.get(feature) for feature in drift.FEATURES},
        "status": report["status"],
    }


def plot_history(history: list[dict], path: Path, thresholds: dict) -> bool:
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
    ax_acc.axhline(thresholds["accuracy_alert"], color="red", linestyle="--", label="alert")
    ax_acc.set_ylabel("accuracy")
    ax_acc.set_ylim(0, 1.02)
    ax_acc.legend(loc="lower left")
    for feature in drift.FEATURES:
        values = [h.get(f"psi_{feature}") for h in history]
        ax_psi.plot(x, [np.nan if v is None else v for v in values], marker="o", label=feature)
    ax_psi.axhline(thresholds["psi_warn"], color="orange", linestyle="--", label="warn")
    ax_psi.axhline(thresholds["psi_alert"], color="red", linestyle="--", label="alert")
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


# ---------------------------------------------------------------- the command


def load_manifest(model_dir: Path | None, reference: Path | None) -> dict:
    """The bundle's model.json (from `reference` if given, else `model_dir`); {} if absent."""
    path = reference or (model_dir / "model.json" if model_dir else None)
    if path is None or not path.is_file():
        return {}
    return json.loads(path.read_text(encoding="utf-8"))


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    # The service's own settings give the defaults, so both read the same files.
    service = Settings.from_env()
    ap = argparse.ArgumentParser(
        prog="python -m serving.monitor",
        description="Live performance and drift report from the service's logs.",
    )
    ap.add_argument(
        "--predictions",
        type=Path,
        default=Path(service.prediction_log),
        help="prediction log; rotated siblings (.1, .2, ...) are read too [env PREDICTION_LOG]",
    )
    ap.add_argument(
        "--feedback",
        type=Path,
        default=Path(service.feedback_log),
        help="feedback log [env FEEDBACK_LOG]",
    )
    ap.add_argument(
        "--model-dir",
        type=Path,
        default=service.model_dir,
        help="bundle folder holding model.json [env MODEL_DIR]",
    )
    ap.add_argument(
        "--reference",
        type=Path,
        default=None,
        help="a model.json to compare with, instead of MODEL_DIR's",
    )
    ap.add_argument(
        "--since",
        default=None,
        help="window start: ISO 8601 time or a duration back from now (30m, 24h, 7d)",
    )
    ap.add_argument("--until", default=None, help="window end (exclusive), same forms; default now")
    ap.add_argument("--model-version", default=None, help="only predictions of this model version")
    ap.add_argument(
        "--out", type=Path, default=None, help=f"JSON report [LOG_DIR/reports/{REPORT_NAME}]"
    )
    ap.add_argument(
        "--history",
        type=Path,
        default=None,
        help=f"JSON-lines history to append a summary to ('' to skip) [.../{HISTORY_NAME}]",
    )
    ap.add_argument(
        "--plot",
        type=Path,
        default=None,
        help=f"PNG of accuracy and drift over the history ('' to skip) [.../{PLOT_NAME}]",
    )
    ap.add_argument(
        "--min-samples",
        type=int,
        default=drift.MIN_SAMPLES,
        help="fewest predictions for a PSI figure",
    )
    ap.add_argument("--psi-warn", type=float, default=drift.PSI_WARN)
    ap.add_argument("--psi-alert", type=float, default=drift.PSI_ALERT)
    ap.add_argument("--accuracy-alert", type=float, default=drift.ACCURACY_ALERT)
    ap.add_argument(
        "--min-labelled",
        type=int,
        default=drift.MIN_LABELLED,
        help="fewest labelled predictions for an accuracy alert",
    )
    ap.add_argument(
        "--fail-on-alert",
        action="store_true",
        help="exit with status 2 when an alert fires (for cron or CI)",
    )
    args = ap.parse_args(argv)
    reports = args.predictions.parent / "reports"
    args.out = args.out or reports / REPORT_NAME
    args.history = reports / HISTORY_NAME if args.history is None else args.history
    args.plot = reports / PLOT_NAME if args.plot is None else args.plot
    return args


def run(args: argparse.Namespace, now: datetime | None = None) -> dict:
    """Build the report, write it, append the history line and draw the PNG."""
    now = now or datetime.now(UTC)
    since = parse_moment(args.since, now) if args.since else None
    until = parse_moment(args.until, now) if args.until else None
    pred_files = log_files(args.predictions)
    pred_log = read_jsonl(pred_files)
    fb_log = read_jsonl(log_files(args.feedback))
    predictions, bad = select_predictions(pred_log.records, since, until, args.model_version)
    manifest = load_manifest(args.model_dir, args.reference)

    report = build_report(
        predictions,
        true_labels(fb_log.records),
        manifest,
        min_samples=args.min_samples,
        psi_warn=args.psi_warn,
        psi_alert=args.psi_alert,
        accuracy_alert=args.accuracy_alert,
        min_labelled=args.min_labelled,
    )
    report = {
        "generated_at": now.isoformat(timespec="seconds"),
        "window": {
            "since": since.isoformat(timespec="seconds") if since else None,
            "until": until.isoformat(timespec="seconds") if until else None,
        },
        "sources": {
            "prediction_files": [str(p) for p in pred_files],
            "feedback_log": str(args.feedback),
            "manifest": str(args.reference or args.model_dir / "model.json") if manifest else None,
            "damaged_lines": pred_log.skipped + fb_log.skipped,
            "unusable_predictions": bad,
        },
        **report,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")

    artifacts = {"report": str(args.out), "history": None, "plot": None, "plot_skipped": False}
    report["artifacts"] = artifacts
    if str(args.history) not in ("", "."):
        args.history.parent.mkdir(parents=True, exist_ok=True)
        with args.history.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(summary_line(report)) + "\n")
        artifacts["history"] = str(args.history)
        if str(args.plot) not in ("", "."):
            history = read_jsonl([args.history]).records
            if plot_history(history, args.plot, report["thresholds"]):
                artifacts["plot"] = str(args.plot)
            else:
                artifacts["plot_skipped"] = True
    return report


def _fmt(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def describe(report: dict) -> Iterator[str]:
    """A few human-readable lines about the report, for the terminal."""
    counts, perf = report["counts"], report["performance"]
    yield (
        f"status {report['status'].upper()}: {counts['predictions']} predictions, "
        f"{counts['labelled']} labelled, accuracy {_fmt(perf['accuracy'])}, "
        f"F1 (macro) {_fmt(perf['f1_macro'])}, "
        f"latency p95 {_fmt(report['latency_ms']['p95'], 1)} ms"
    )
    psi = report["drift"]["psi"]
    noise = report["drift"]["noise_p95"]
    parts = [
        f"{k} {v:.3f} ({report['drift']['levels'][k]}; noise p95 {_fmt(noise.get(k), 2)})"
        for k, v in psi.items()
    ]
    missing = report["drift"]["not_computed"]
    yield (
        "drift PSI: "
        + (", ".join(parts) if parts else "none computed")
        + (f"; not computed: {', '.join(missing)}" if missing else "")
    )
    for alert in report["alerts"]:
        what = alert.get("feature", "accuracy")
        value, limit = alert["value"], alert["threshold"]
        note = " - within sampling noise: widen the window" if alert.get("within_noise") else ""
        yield f"ALERT {alert['alert']} {what}: {value:.3f} (threshold {limit}){note}"
    art = report["artifacts"]
    yield f"report: {art['report']}"
    if art["history"]:
        yield f"history: {art['history']}"
    if art["plot"]:
        yield f"plot: {art['plot']}"
    elif art["plot_skipped"]:
        yield "plot: skipped (matplotlib not installed)"


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    report = run(args)
    for line in describe(report):
        print(line)
    return 2 if args.fail_on_alert and report["alerts"] else 0


if __name__ == "__main__":
    sys.exit(main())
