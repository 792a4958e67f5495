"""The report's figures from the shared store (SQLite and a real PostgreSQL), and its CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from monitoring import cli
from monitoring.report import build_report
from monitoring.timewindow import parse_time
from serving.store import (
    LabelConflict,
    LabelledPrediction,
    PredictionRecord,
    ShadowRecord,
    Store,
    StoreConfig,
    UnknownPrediction,
)
from tests.helpers.photos import FULLRES_DIR, SAMPLE_DIR
from tests.helpers.postgres import new_database, running_postgres

ROOT = Path(__file__).resolve().parents[2]
FULLRES = FULLRES_DIR
CATS_DOGS = SAMPLE_DIR


# ---------------------------------------------------------------- the report, by hand

T = "2026-11-26T10:0{}:00+00:00"
MANIFEST = {
    "name": "cats-dogs-classifier",
    "version": "abc123def456",
    "classes": ["cat", "dog"],
    "reference": {
        "n": 10,
        "class_shares": {"cat": 0.8, "dog": 0.2},
        "confidence_histogram": {"edges": [0.5, 0.75, 1.0], "counts": [2, 8]},
        "brightness_histogram": {"edges": [0.0, 0.5, 1.0], "counts": [5, 5]},
    },
}


def _prediction(rid: str, minute: int, label: str, conf: float, ms: float, bright: float):
    other = "dog" if label == "cat" else "cat"
    return PredictionRecord(
        request_id=rid,
        ts=parse_time(T.format(minute)).timestamp(),
        label=label,
        confidence=conf,
        probabilities={label: conf, other: round(1 - conf, 6)},
        model_version="abc123def456",
        latency_ms=ms,
        width=400,
        height=300,
        brightness=bright,
        sha256="0" * 64,
    )


def _fill(config: StoreConfig) -> None:
    """Six predictions in the window, feedback for five of them, through the real store.

    id  label conf  latency  brightness  true label
    r1  cat   0.90   10      0.15        cat
    r2  cat   0.80   20      0.25        dog
    r3  dog   0.95   30      0.35        dog
    r4  dog   0.70   40      0.45        cat   (a later, different label is refused: 409)
    r5  dog   0.99   50      0.55        dog   (sent twice: stored once)
    r6  cat   0.60  100      0.65        -
    r0 is before the window; a second write of r3 (a retried batch) is stored once.
    """
    store = Store(config)
    store.open()
    r0 = _prediction("r0", 0, "cat", 0.99, 5000, 0.9)
    r0 = PredictionRecord(**{**r0.__dict__, "ts": parse_time("2026-11-26T09:00:00Z").timestamp()})
    rows = [
        r0,
        _prediction("r1", 0, "cat", 0.90, 10, 0.15),
        _prediction("r2", 1, "cat", 0.80, 20, 0.25),
        _prediction("r3", 2, "dog", 0.95, 30, 0.35),
        _prediction("r3", 2, "dog", 0.95, 30, 0.35),
        _prediction("r4", 3, "dog", 0.70, 40, 0.45),
        _prediction("r5", 4, "dog", 0.99, 50, 0.55),
        _prediction("r6", 5, "cat", 0.60, 100, 0.65),
    ]
    try:
        for row in rows:
            store.record(row)
        for rid, label in [("r1", "cat"), ("r2", "dog"), ("r4", "cat"), ("r3", "dog")]:
            assert store.add_feedback(rid, label).stored
        with pytest.raises(LabelConflict):
            store.add_feedback("r4", "dog")
        assert store.add_feedback("r5", "dog").stored
        assert not store.add_feedback("r5", "dog").stored
        with pytest.raises(UnknownPrediction):
            store.add_feedback("unknown-id", "cat")
    finally:
        store.close()


@pytest.fixture
def small_store(tmp_path: Path) -> dict[str, Path]:
    """The hand-computed case in a SQLite store, and a bundle folder with its model.json."""
    store = tmp_path / "store.sqlite3"
    _fill(StoreConfig(path=store, flush_ms=10))
    model_dir = tmp_path / "bundle"
    model_dir.mkdir()
    (model_dir / "model.json").write_text(json.dumps(MANIFEST), encoding="utf-8")
    return {"store": store, "model_dir": model_dir}


def _monitor_args(src: dict[str, Path], out_dir: Path, *extra: str) -> list[str]:
    return [
        "report",
        "--store", str(src["store"]),
        "--database-url", "",
        "--model-dir", str(src["model_dir"]),
        "--since", "2026-11-26T09:30:00Z",
        "--until", "2026-11-26T11:00:00Z",
        "--out", str(out_dir / "report.json"),
        "--history", str(out_dir / "history.jsonl"),
        "--plot", str(out_dir / "history.png"),
        *extra,
    ]  # fmt: skip


def test_report_figures_match_a_hand_computed_case(small_store: dict, tmp_path: Path) -> None:
    args = cli.parse_args(
        _monitor_args(small_store, tmp_path / "out", "--min-samples", "5", "--min-labelled", "5")
    )
    report, artifacts = cli.run(args)
    assert artifacts.report == tmp_path / "out" / "report.json"
    assert json.loads(artifacts.report.read_text()) == report.to_json()
    figures = report.figures
    assert figures.counts.predictions == 6  # r1..r6; r0 outside, r3 once
    assert figures.counts.labelled == 5
    assert figures.counts.unlabelled == 1
    assert report.sources.store == f"sqlite:{small_store['store']}"

    perf = figures.performance
    # Rows true, columns predicted: true cat -> r1 cat, r4 dog; true dog -> r2 cat, r3, r5 dog.
    assert perf.confusion_matrix.matrix == [[1, 1], [1, 2]]
    assert perf.accuracy == pytest.approx(3 / 5)  # r1, r3, r5 right
    # precision: cat 1 / (1 + 1) = 0.5; dog 2 / (1 + 2) = 0.6667
    assert perf.precision == pytest.approx({"cat": 0.5, "dog": 2 / 3})
    # recall: cat 1 / 2 = 0.5; dog 2 / 3
    assert perf.recall == pytest.approx({"cat": 0.5, "dog": 2 / 3})
    # F1 = 2PR / (P + R): cat 0.5, dog 2/3; macro (0.5 + 0.6667) / 2 = 0.58333
    assert perf.f1 == pytest.approx({"cat": 0.5, "dog": 2 / 3})
    assert perf.f1_macro == pytest.approx(7 / 12)

    # Latencies 10, 20, 30, 40, 50, 100 (linear interpolation, positions q * (6 - 1)):
    # p50 at 2.5 -> 30 + 0.5 * 10 = 35; p95 at 4.75 -> 50 + 0.75 * 50 = 87.5;
    # p99 at 4.95 -> 50 + 0.95 * 50 = 97.5
    lat = figures.latency_ms
    assert (lat.p50, lat.p95, lat.p99) == pytest.approx((35.0, 87.5, 97.5))

    live = figures.predictions
    assert live.class_shares == {"cat": 0.5, "dog": 0.5}  # r1, r2, r6 cat of six
    # confidences 0.90 0.80 0.95 0.70 0.99 0.60 in [0.5, 0.75) and [0.75, 1.0]: 2 and 4
    assert live.confidence_histogram.counts == [2, 4]
    assert live.brightness_histogram.counts == [4, 2]  # 0.15 .. 0.45 | 0.55, 0.65

    psi = figures.drift.psi
    # confidence: reference [2, 8], live [2, 4] -> 0.082596 (see the PSI test above)
    assert psi["confidence"] == pytest.approx(0.082596, abs=1e-6)
    # brightness: ref [5, 5] +0.5 -> [0.5, 0.5]; live [4, 2] +0.5 -> [4.5, 2.5] / 7
    #   = [0.642857, 0.357143]; PSI = 0.142857 * ln(1.285714) - 0.142857 * ln(0.714286)
    #   = 0.142857 * (0.251314 + 0.336472) = 0.083970
    assert psi["brightness"] == pytest.approx(0.083970, abs=1e-6)
    # class share: reference 0.8/0.2 of n=10 -> counts [8, 2] +0.5 -> [8.5, 2.5] / 11
    #   = [0.772727, 0.227273]; live [3, 3] -> [0.5, 0.5]
    #   PSI = -0.272727 * ln(0.5 / 0.772727) + 0.272727 * ln(0.5 / 0.227273)
    #       = 0.272727 * (0.435318 + 0.788457) = 0.333757
    assert psi["class_share"] == pytest.approx(0.333757, abs=1e-6)
    assert figures.drift.levels == {"class_share": "alert", "confidence": "ok",
                                         "brightness": "ok"}  # fmt: skip

    # Sampling noise at six predictions and a ten-photo reference is large: the class-share
    # PSI of 0.33 is within it, which the report says next to the figure.
    noise = figures.drift.noise_p95
    assert set(noise) == {"class_share", "confidence", "brightness"}
    assert noise["class_share"] > psi["class_share"]

    # Estimated from the probabilities alone: mean confidence 4.94 / 6 = 0.823333; over
    # the five labelled rows 4.34 / 5 = 0.868, beside their realised 0.6 (a small test case
    # is not calibrated). Expected confusion (rows true): the cat column r1, r2, r6 holds
    # cat 0.9 + 0.8 + 0.6 = 2.3, dog 0.7; the dog column r3, r4, r5 cat 0.36, dog 2.64.
    # F1 cat = 2 * 2.3 / (3.0 predicted + 2.66 true) = 0.812721; dog 5.28 / 6.34 = 0.832808.
    est = figures.estimated
    assert est.n == 6
    assert est.accuracy.estimate == pytest.approx(4.94 / 6)
    assert est.estimated_accuracy_of_labelled == pytest.approx(0.868)
    assert est.realised_accuracy == pytest.approx(0.6)
    assert np.allclose(est.confusion_matrix, [[2.3, 0.36], [0.7, 2.64]])
    assert est.f1 == pytest.approx({"cat": 4.6 / 5.66, "dog": 5.28 / 6.34})
    assert (est.ood_scored, est.ood_flagged_share) == (0, None)  # no bundle OOD yet

    alerts = {(a.alert, getattr(a, "feature", None)) for a in figures.alerts}
    assert alerts == {
        ("CatsDogsModelDrift", "class_share"), ("CatsDogsLiveAccuracyLow", None),
        ("CatsDogsEstimatedAccuracyLow", None),
    }  # fmt: skip
    assert figures.alerts[0].within_noise is True
    assert figures.status == "alert"

    # The JSON keeps the shape docs/monitoring.md describes.
    written = report.to_json()
    assert list(written)[:4] == ["generated_at", "window", "sources", "status"]
    assert written["alerts"][0] == {
        "alert": "CatsDogsModelDrift", "feature": "class_share", "value": psi["class_share"],
        "threshold": 0.2, "within_noise": True,
    }  # fmt: skip
    assert written["performance"]["confusion_matrix"]["matrix"] == [[1, 1], [1, 2]]
    assert written["thresholds"]["min_labelled"] == 5


def test_cli_appends_history_and_draws_the_plot(small_store: dict, tmp_path: Path) -> None:
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "monitoring", *_monitor_args(small_store, out)]
    for _ in range(2):
        done = subprocess.run(
            [*cmd, "--min-labelled", "5"], cwd=ROOT, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
    assert "status ALERT" in done.stdout and "CatsDogsLiveAccuracyLow" in done.stdout
    history = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    assert len(history) == 2
    assert history[-1]["accuracy"] == pytest.approx(0.6)
    # Default --min-samples (100) is more than six predictions: no PSI, said so.
    assert history[-1]["psi_class_share"] is None
    assert "not computed: class_share, confidence, brightness" in done.stdout
    assert (out / "history.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # --fail-on-alert makes the alert an exit status, for cron jobs...
    failing = subprocess.run(
        [*cmd, "--min-labelled", "5", "--fail-on-alert"], cwd=ROOT, capture_output=True
    )
    assert failing.returncode == 2
    # ...and with the default 20 labels needed, five labels raise no accuracy alert.
    quiet = subprocess.run([*cmd, "--fail-on-alert"], cwd=ROOT, capture_output=True, text=True)
    assert quiet.returncode == 0, quiet.stdout
    assert "status OK" in quiet.stdout


def test_cli_without_matplotlib_still_writes_the_report(small_store: dict, tmp_path: Path) -> None:
    # The serving image has no matplotlib: shadow it with a package that fails to import.
    shadow = tmp_path / "shadow" / "matplotlib"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('not in this image')\n")
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "monitoring", *_monitor_args(small_store, out)],
        cwd=ROOT,
        env={"PYTHONPATH": f"{shadow.parent}:{ROOT}", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "plot: skipped (matplotlib not installed)" in done.stdout
    assert json.loads((out / "report.json").read_text())["performance"]["accuracy"] == 0.6
    assert not (out / "history.png").exists()


@pytest.mark.slow  # a PostgreSQL server
def test_report_reads_a_postgres_store_the_same_way(small_store: dict, tmp_path: Path) -> None:
    with running_postgres() as server:
        url = new_database(server)
        _fill(StoreConfig(database_url=url, flush_ms=10))
        args = _monitor_args(small_store, tmp_path / "pg", "--min-samples", "5")
        args[args.index("--database-url") + 1] = url
        from_pg, _ = cli.run(cli.parse_args(args))
    from_sqlite, _ = cli.run(cli.parse_args(_monitor_args(small_store, tmp_path / "lite",
                                                          "--min-samples", "5")))  # fmt: skip
    assert from_pg.sources.store.startswith("postgresql://store@127.0.0.1:")
    assert "store-pass" not in json.dumps(from_pg.to_json())  # no password in a report
    assert from_pg.figures.counts.predictions == 6
    assert from_pg.figures == from_sqlite.figures


def test_report_on_an_empty_store_says_so(tmp_path: Path) -> None:
    args = cli.parse_args(["report", "--store", str(tmp_path / "new.sqlite3"),
                           "--database-url", "", "--out", str(tmp_path / "r.json"),
                           "--history", ""])  # fmt: skip
    report, _ = cli.run(args)
    assert report.figures.counts.predictions == 0 and report.figures.status == "ok"
    assert report.figures.performance.accuracy is None
    assert not (tmp_path / "new.sqlite3").exists()  # a report creates no store


def test_ood_flagged_share_alerts_over_the_window() -> None:
    """Three of five scored photos flagged (one unscored row is left out): 0.6 > 0.15."""
    flags = [True, True, False, True, False, None]
    predictions = [
        LabelledPrediction(
            PredictionRecord(
                **{
                    **_prediction(f"o{i}", 1, "cat", 0.97, 10, 0.5).__dict__,
                    "ood_score": 1.0 + i,
                    "ood_flag": flag,
                }
            ),
            None,
        )
        for i, flag in enumerate(flags)
    ]
    figures = build_report(predictions, MANIFEST, min_samples=5)
    assert figures.estimated.ood_flagged_share == pytest.approx(0.6)
    assert figures.estimated.ood_scored == 5
    (ood,) = [a for a in figures.alerts if a.alert == "CatsDogsOodShareHigh"]
    assert (ood.value, ood.threshold, ood.scored) == (pytest.approx(0.6), 0.15, 5)
    # Confident predictions: no estimated-accuracy alert (0.97 > 0.9).
    assert "CatsDogsEstimatedAccuracyLow" not in {a.alert for a in figures.alerts}
    # Fewer scored photos than min_samples: no alert, the share is still reported.
    quiet = build_report(predictions, MANIFEST, min_samples=6)
    assert "CatsDogsOodShareHigh" not in {a.alert for a in quiet.alerts}


# ---------------------------------------------------------------- shadow scoring


def test_report_shows_the_challengers_agreement_and_both_accuracies(
    small_store: dict, tmp_path: Path
) -> None:
    """Challenger "c0ffee" scored the hand-computed case in the shadow:

    id  served  challenger  true
    r1  cat     cat         cat    both right
    r2  cat     dog         dog    only the challenger right
    r3  dog     dog         dog    both right
    r4  dog     cat         cat    only the challenger right
    r5  dog     cat         dog    only the served model right
    r6  cat     cat         -      agrees, unlabelled
    r0 (before the window) is scored too, and must not count.
    """
    store = Store(StoreConfig(path=small_store["store"], flush_ms=10))
    store.open()
    challenger = {"r0": "dog", "r1": "cat", "r2": "dog", "r3": "dog", "r4": "cat", "r5": "cat",
                  "r6": "cat"}  # fmt: skip
    try:
        store.record_shadow([
            ShadowRecord(rid, "c0ffee", label, 0.9, {label: 0.9}, 0.0)
            for rid, label in challenger.items()
        ])  # fmt: skip
    finally:
        store.close()
    args = cli.parse_args(_monitor_args(small_store, tmp_path / "out"))
    report, artifacts = cli.run(args)
    (shadow,) = report.figures.shadow
    assert shadow.challenger_version == "c0ffee"
    assert shadow.served_versions == ["abc123def456"]
    assert (shadow.n, shadow.agreement) == (6, 0.5)  # r1, r3, r6 agree
    assert shadow.labelled == 5
    assert shadow.served_accuracy == pytest.approx(3 / 5)  # r1, r3, r5
    assert shadow.challenger_accuracy == pytest.approx(4 / 5)  # r1, r2, r3, r4
    assert (shadow.only_served_right, shadow.only_challenger_right) == (1, 2)
    assert report.figures.counts.predictions == 6  # the challenger is not in the window
    assert json.loads(artifacts.report.read_text())["shadow"][0]["agreement"] == 0.5
    lines = list(cli.describe(report, artifacts))
    assert any(line.startswith("shadow c0ffee: 6 photos, agreement 0.500") for line in lines)


def test_a_store_never_shadowed_reports_no_challenger(small_store: dict, tmp_path: Path) -> None:
    report, _ = cli.run(cli.parse_args(_monitor_args(small_store, tmp_path / "out")))
    assert report.figures.shadow == []
