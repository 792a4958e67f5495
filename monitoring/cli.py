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
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

from contracts import drift, estimate
from monitoring import traffic
from monitoring.history import append_history, plot_history
from monitoring.report import build_report
from monitoring.schema import (
    AccuracyAlert,
    Artifacts,
    Drift,
    DriftAlert,
    EstimateAlert,
    Estimated,
    OodAlert,
    Period,
    Report,
    ShadowSummary,
    Sources,
    Thresholds,
)
from monitoring.timewindow import parse_moment
from serving.store import StoreConfig, TimeRange, read_predictions, read_shadow

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
    ap.add_argument("--estimated-accuracy-alert", type=float, default=estimate.ESTIMATED_ACCURACY_ALERT,
                    help="alert when the estimated accuracy (no labels) is below this")  # fmt: skip
    ap.add_argument("--ood-share-alert", type=float, default=estimate.OOD_SHARE_ALERT,
                    help="alert when the OOD-flagged share is above this")  # fmt: skip
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


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat(timespec="seconds") if moment else None


def build(args: argparse.Namespace, now: datetime | None = None) -> Report:
    """Read the window from the store (read-only) and compute the report."""
    now = now or datetime.now(UTC)
    since = parse_moment(args.since, now) if args.since else None
    until = parse_moment(args.until, now) if args.until else None
    config = StoreConfig.from_env(database_url=args.database_url, path=args.store)
    span = TimeRange(since, until, args.model_version)
    predictions = read_predictions(config, span)
    shadow = read_shadow(config, span)
    manifest = load_manifest(args.model_dir, args.reference)
    limits = Thresholds(
        args.psi_warn, args.psi_alert, args.accuracy_alert, args.min_labelled,
        args.estimated_accuracy_alert, args.ood_share_alert,
    )  # fmt: skip
    figures = build_report(
        predictions, manifest, min_samples=args.min_samples, limits=limits, shadow=shadow
    )
    manifest_path = args.reference or args.model_dir / "model.json"
    return Report(
        generated_at=_iso(now) or "",
        window=Period(since=_iso(since), until=_iso(until)),
        sources=Sources(store=config.describe(), manifest=str(manifest_path) if manifest else None),
        figures=figures,
    )


def _given(path: Path) -> bool:
    """False for `--history ''` or `--plot ''` (argparse makes '' the path '.')."""
    return str(path) not in ("", ".")


def write(report: Report, args: argparse.Namespace) -> Artifacts:
    """Write the JSON report, append the history line and draw the PNG (unless skipped)."""
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report.to_json(), indent=2) + "\n", encoding="utf-8")
    if not _given(args.history):
        return Artifacts(report=args.out)
    history = append_history(args.history, report)
    if not _given(args.plot):
        return Artifacts(report=args.out, history=args.history)
    drawn = plot_history(history, args.plot, report.figures.thresholds)
    return Artifacts(
        report=args.out,
        history=args.history,
        plot=args.plot if drawn else None,
        plot_skipped=not drawn,
    )


def run(args: argparse.Namespace, now: datetime | None = None) -> tuple[Report, Artifacts]:
    """Build the report and write it, its history line and the PNG."""
    report = build(args, now)
    return report, write(report, args)


def _fmt(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _alert_line(alert: DriftAlert | AccuracyAlert | EstimateAlert | OodAlert) -> str:
    what = {DriftAlert: "", AccuracyAlert: "accuracy", EstimateAlert: "estimated accuracy",
            OodAlert: "OOD share"}[type(alert)] or getattr(alert, "feature", "")  # fmt: skip
    noisy = isinstance(alert, DriftAlert) and alert.within_noise
    note = " - within sampling noise: widen the window" if noisy else ""
    return f"ALERT {alert.alert} {what}: {alert.value:.3f} (threshold {alert.threshold}){note}"


def _drift_line(d: Drift) -> str:
    parts = [
        f"{k} {v:.3f} ({d.levels[k]}; noise p95 {_fmt(d.noise_p95.get(k), 2)})"
        for k, v in d.psi.items()
    ]
    missing = f"; not computed: {', '.join(d.not_computed)}" if d.not_computed else ""
    return "drift PSI: " + (", ".join(parts) if parts else "none computed") + missing


def _estimate_line(e: Estimated) -> str:
    """Estimated (no labels) beside realised accuracy, and the OOD-flagged share."""
    if e.accuracy is None:
        return "estimated accuracy: n/a (no predictions)"
    return (
        f"estimated accuracy {e.accuracy.estimate:.3f} [{e.accuracy.lower:.3f}, "
        f"{e.accuracy.upper:.3f}] on {e.n} predictions, F1 (macro) "
        f"{_fmt(e.f1_macro.estimate if e.f1_macro else None)}; realised accuracy "
        f"{_fmt(e.realised_accuracy)} (estimate over the same labelled rows "
        f"{_fmt(e.estimated_accuracy_of_labelled)}); OOD flagged "
        f"{_fmt(e.ood_flagged_share)} of {e.ood_scored} scored"
    )


def _shadow_line(s: ShadowSummary) -> str:
    return (
        f"shadow {s.challenger_version}: {s.n} photos, agreement {_fmt(s.agreement)}; "
        f"{s.labelled} labelled: served accuracy {_fmt(s.served_accuracy)}, challenger "
        f"{_fmt(s.challenger_accuracy)} (only served right {s.only_served_right}, "
        f"only challenger right {s.only_challenger_right})"
    )


def describe(report: Report, artifacts: Artifacts) -> Iterator[str]:
    """A few human-readable lines about the report, for the terminal."""
    f = report.figures
    yield (
        f"status {f.status.upper()}: {f.counts.predictions} predictions, "
        f"{f.counts.labelled} labelled, accuracy {_fmt(f.performance.accuracy)}, "
        f"F1 (macro) {_fmt(f.performance.f1_macro)}, "
        f"latency p95 {_fmt(f.latency_ms.p95, 1)} ms"
    )
    yield _estimate_line(f.estimated)
    yield _drift_line(f.drift)
    yield from (_alert_line(alert) for alert in f.alerts)
    yield from (_shadow_line(s) for s in f.shadow)
    yield f"report: {artifacts.report}"
    if artifacts.history:
        yield f"history: {artifacts.history}"
    if artifacts.plot:
        yield f"plot: {artifacts.plot}"
    elif artifacts.plot_skipped:
        yield "plot: skipped (matplotlib not installed)"


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.command == "simulate":
        tally = traffic.simulate(args)
        print(json.dumps(asdict(tally), indent=2))
        return 1 if tally.answered == 0 else 0
    report, artifacts = run(args)
    for line in describe(report, artifacts):
        print(line)
    return 2 if args.fail_on_alert and report.figures.alerts else 0


if __name__ == "__main__":
    sys.exit(main())
