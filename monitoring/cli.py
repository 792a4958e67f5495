"""`python -m monitoring report|simulate`: live performance and drift from the shared store.

Reads the predictions and true labels of every replica from the store (SQLite file or
DATABASE_URL, as the service does), writes a JSON report, appends a summary line to a
history file and draws that history as a PNG.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

from contracts import drift
from monitoring import traffic
from monitoring.history import append_history, plot_history
from monitoring.report import build_report, thresholds
from monitoring.source import read_window
from monitoring.timewindow import parse_moment
from serving.store import StoreConfig

REPORT_NAME = "monitor.json"
HISTORY_NAME = "monitor-history.jsonl"
PLOT_NAME = "monitor-history.png"


def load_manifest(model_dir: Path | None, reference: Path | None) -> dict:
    """The bundle's model.json (from `reference` if given, else `model_dir`); {} if absent."""
    path = reference or (model_dir / "model.json" if model_dir else None)
    if path is None or not path.is_file():
        return {}
    return json.loads(path.read_text(encoding="utf-8"))


def _report_parser(sub: argparse._SubParsersAction) -> None:
    store = StoreConfig.from_env()
    ap = sub.add_parser("report", help="performance and drift over a time window")
    ap.add_argument("--database-url", default=store.database_url,
                    help="PostgreSQL store: postgresql://user:pass@host:port/db [env DATABASE_URL]")  # fmt: skip
    ap.add_argument("--store", type=Path, default=store.path,
                    help="SQLite store file, when no database URL is given [env STORE_PATH]")  # fmt: skip
    ap.add_argument("--model-dir", type=Path, default=Path(os.environ.get("MODEL_DIR") or "models/export"),
                    help="bundle folder holding model.json [env MODEL_DIR]")  # fmt: skip
    ap.add_argument("--reference", type=Path, default=None,
                    help="a model.json to compare with, instead of MODEL_DIR's")  # fmt: skip
    ap.add_argument("--since", default=None,
                    help="window start: ISO 8601 time or a duration back from now (30m, 24h, 7d)")  # fmt: skip
    ap.add_argument("--until", default=None, help="window end (exclusive), same forms; default now")
    ap.add_argument("--model-version", default=None, help="only predictions of this model version")
    ap.add_argument(
        "--out", type=Path, default=None, help=f"JSON report [.../reports/{REPORT_NAME}]"
    )
    ap.add_argument("--history", type=Path, default=None,
                    help=f"JSON-lines history to append to ('' to skip) [.../reports/{HISTORY_NAME}]")  # fmt: skip
    ap.add_argument("--plot", type=Path, default=None,
                    help=f"PNG of accuracy and drift over the history ('' to skip) [.../reports/{PLOT_NAME}]")  # fmt: skip
    ap.add_argument("--min-samples", type=int, default=int(os.environ.get("DRIFT_MIN_SAMPLES") or drift.MIN_SAMPLES),
                    help="fewest predictions for a PSI figure [env DRIFT_MIN_SAMPLES]")  # fmt: skip
    ap.add_argument("--psi-warn", type=float, default=drift.PSI_WARN)
    ap.add_argument("--psi-alert", type=float, default=drift.PSI_ALERT)
    ap.add_argument("--accuracy-alert", type=float, default=drift.ACCURACY_ALERT)
    ap.add_argument("--min-labelled", type=int, default=drift.MIN_LABELLED,
                    help="fewest labelled predictions for an accuracy alert")  # fmt: skip
    ap.add_argument("--fail-on-alert", action="store_true",
                    help="exit with status 2 when an alert fires (for cron or CI)")  # fmt: skip


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m monitoring", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    _report_parser(sub)
    simulate_parser = traffic.add_parser(sub)
    args = ap.parse_args(argv)
    if args.command == "simulate":
        traffic.check_args(simulate_parser, args)
        return args
    reports = args.store.parent / "reports"
    args.out = args.out or reports / REPORT_NAME
    args.history = reports / HISTORY_NAME if args.history is None else args.history
    args.plot = reports / PLOT_NAME if args.plot is None else args.plot
    return args


def run(args: argparse.Namespace, now: datetime | None = None) -> dict:
    """Build the report, write it, append the history line and draw the PNG."""
    now = now or datetime.now(UTC)
    since = parse_moment(args.since, now) if args.since else None
    until = parse_moment(args.until, now) if args.until else None
    config = StoreConfig.from_env(database_url=args.database_url, path=args.store)
    window = read_window(config, since, until, args.model_version)
    manifest = load_manifest(args.model_dir, args.reference)
    limits = thresholds(args.psi_warn, args.psi_alert, args.accuracy_alert, args.min_labelled)
    figures = build_report(
        window.predictions, window.truths, manifest, min_samples=args.min_samples, limits=limits
    )
    report = {
        "generated_at": now.isoformat(timespec="seconds"),
        "window": {
            "since": since.isoformat(timespec="seconds") if since else None,
            "until": until.isoformat(timespec="seconds") if until else None,
        },
        "sources": {
            "store": config.describe(),
            "manifest": str(args.reference or args.model_dir / "model.json") if manifest else None,
        },
        **figures,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    artifacts = {"report": str(args.out), "history": None, "plot": None, "plot_skipped": False}
    report["artifacts"] = artifacts
    if str(args.history) not in ("", "."):
        history = append_history(args.history, report)
        artifacts["history"] = str(args.history)
        if str(args.plot) not in ("", "."):
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
    psi, noise = report["drift"]["psi"], report["drift"]["noise_p95"]
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
        note = " - within sampling noise: widen the window" if alert.get("within_noise") else ""
        yield (
            f"ALERT {alert['alert']} {what}: {alert['value']:.3f} "
            f"(threshold {alert['threshold']}){note}"
        )
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
    if args.command == "simulate":
        stats = traffic.simulate(args)
        print(json.dumps(stats, indent=2))
        return 1 if stats["answered"] == 0 else 0
    report = run(args)
    for line in describe(report):
        print(line)
    return 2 if args.fail_on_alert and report["alerts"] else 0


if __name__ == "__main__":
    sys.exit(main())
