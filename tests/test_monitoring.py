"""Monitoring: PSI drift, the report's figures from the shared store (SQLite and a real
PostgreSQL), the traffic simulator, and the whole loop (real server, real photos,
feedback, report, shifted traffic) end to end."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from contracts import drift
from contracts.classification import classification_metrics
from monitoring import cli, traffic
from monitoring.drift_stats import noise_level
from monitoring.timewindow import parse_moment, parse_time
from serving.store import LabelConflict, PredictionRecord, Store, StoreConfig, UnknownPrediction
from tests.helpers.photos import FULLRES_DIR, SAMPLE_DIR
from tests.helpers.postgres import new_database, running_postgres
from tests.helpers.servers import start_service

ROOT = Path(__file__).resolve().parents[1]
FULLRES = FULLRES_DIR
CATS_DOGS = SAMPLE_DIR


# ---------------------------------------------------------------- PSI


def test_psi_is_zero_for_equal_distributions_and_matches_hand_computation() -> None:
    assert drift.psi([10, 30, 60], [10, 30, 60]) == pytest.approx(0.0, abs=1e-12)
    # Same shape, different sample sizes: smoothing makes it nearly, not exactly, zero.
    assert drift.psi([100, 300, 600], [10, 30, 60]) < 0.01
    # reference [2, 8] -> +0.5 -> [2.5, 8.5] / 11 = [0.227273, 0.772727]
    # live      [2, 4] -> +0.5 -> [2.5, 4.5] / 7  = [0.357143, 0.642857]
    # PSI = 0.129870 * ln(0.357143 / 0.227273) + (-0.129870) * ln(0.642857 / 0.772727)
    #     = 0.129870 * 0.451985 + 0.129870 * 0.184004 = 0.082596
    assert drift.psi([2, 8], [2, 4]) == pytest.approx(0.082596, abs=1e-6)
    with pytest.raises(ValueError):
        drift.psi([1, 2], [1, 2, 3])


def test_histogram_counts_out_of_range_values_in_the_end_bins() -> None:
    # 1.0 sits on the last edge; 1.2 and -0.1 are clipped into the end bins; NaN/None dropped.
    counts = drift.histogram([0.1, 0.5, 1.0, 1.2, -0.1, float("nan"), None], [0.0, 0.5, 1.0])
    assert counts.tolist() == [2, 3]


REFERENCE = {
    "n": 1000,
    "class_shares": {"cat": 0.5, "dog": 0.5},
    "confidence_histogram": {
        "edges": np.linspace(0.5, 1.0, 11).round(2).tolist(),
        "counts": [5, 5, 5, 5, 10, 10, 20, 40, 100, 800],
    },
    "brightness_histogram": {
        "edges": np.linspace(0.0, 1.0, 11).round(1).tolist(),
        "counts": [10, 40, 120, 250, 280, 180, 80, 30, 10, 0],
    },
}


def _sample_like_reference(n: int, seed: int = 0) -> tuple[list[str], list[float], list[float]]:
    """Live values drawn from the reference's own histograms (uniform within a bin)."""
    rng = np.random.default_rng(seed)

    def draw(hist: dict) -> list[float]:
        edges, counts = np.asarray(hist["edges"]), np.asarray(hist["counts"], dtype=float)
        bins = rng.choice(len(counts), size=n, p=counts / counts.sum())
        return (edges[bins] + rng.random(n) * np.diff(edges)[bins]).tolist()

    labels = rng.choice(["cat", "dog"], size=n).tolist()
    return labels, draw(REFERENCE["confidence_histogram"]), draw(REFERENCE["brightness_histogram"])


def test_drift_report_is_small_for_traffic_like_the_reference_and_large_for_a_shift() -> None:
    labels, conf, bright = _sample_like_reference(400)
    same = drift.drift_report(REFERENCE, labels, conf, bright, ["cat", "dog"])
    assert set(same) == {"class_share", "confidence", "brightness"}
    assert all(v < drift.PSI_WARN for v in same.values()), same

    # Only cats, darkened to a third, less confident: every figure passes the alert line.
    shifted = drift.drift_report(
        REFERENCE,
        ["cat"] * 400,
        [0.5 + (c - 0.5) * 0.5 for c in conf],
        [b / 3 for b in bright],
        ["cat", "dog"],
    )
    assert all(v > drift.PSI_ALERT for v in shifted.values()), shifted


def test_drift_report_leaves_out_what_it_cannot_compute() -> None:
    labels, conf, bright = _sample_like_reference(40)
    # The whole manifest is accepted as well as its `reference` section.
    full = drift.drift_report(
        {"reference": REFERENCE}, labels, conf, bright, ["cat", "dog"], min_samples=40
    )
    assert set(full) == {"class_share", "confidence", "brightness"}
    # Too few live samples: nothing rather than noise.
    assert drift.drift_report(REFERENCE, labels, conf, bright, ["cat", "dog"], min_samples=41) == {}
    # A reference without brightness, and live brightness missing (None) for most requests.
    no_bright = {k: v for k, v in REFERENCE.items() if k != "brightness_histogram"}
    found = drift.drift_report(no_bright, labels, conf, bright, ["cat", "dog"], min_samples=40)
    assert set(found) == {"class_share", "confidence"}
    sparse = bright[:5] + [None] * 35
    found = drift.drift_report(REFERENCE, labels, conf, sparse, ["cat", "dog"], min_samples=40)
    assert set(found) == {"class_share", "confidence"}
    assert drift.drift_report({}, labels, conf, bright, ["cat", "dog"], min_samples=1) == {}


def test_noise_level_is_what_pure_sampling_noise_rarely_exceeds() -> None:
    ref = REFERENCE["brightness_histogram"]["counts"]
    shares = np.asarray(ref) / sum(ref)
    rng = np.random.default_rng(7)  # fresh draws, not the function's own
    levels = []
    for n in (30, 100, 300):
        level = noise_level(ref, n)
        levels.append(level)
        noise = [
            drift.psi(rng.multinomial(sum(ref), shares), rng.multinomial(n, shares))
            for _ in range(300)
        ]
        assert 0.01 <= np.mean(np.asarray(noise) > level) <= 0.12, n
    assert levels[0] > levels[1] > levels[2]
    assert noise_level(ref, 0) is None


def test_min_samples_defaults_to_100_and_the_environment_overrides_it() -> None:
    code = "from contracts import drift; print(drift.MIN_SAMPLES)"
    for value, expected in [("", "100"), ("30", "30")]:
        env = {**os.environ, "DRIFT_MIN_SAMPLES": value}
        done = subprocess.run(
            [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True
        )
        assert done.stdout.strip() == expected, done.stderr


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
    report = cli.run(args)
    assert json.loads((tmp_path / "out" / "report.json").read_text()) == {
        k: v for k, v in report.items() if k != "artifacts"
    }
    assert report["counts"]["predictions"] == 6  # r1..r6; r0 outside, r3 once
    assert report["counts"]["labelled"] == 5
    assert report["counts"]["unlabelled"] == 1
    assert report["sources"]["store"] == f"sqlite:{small_store['store']}"

    perf = report["performance"]
    # Rows true, columns predicted: true cat -> r1 cat, r4 dog; true dog -> r2 cat, r3, r5 dog.
    assert perf["confusion_matrix"]["matrix"] == [[1, 1], [1, 2]]
    assert perf["accuracy"] == pytest.approx(3 / 5)  # r1, r3, r5 right
    # precision: cat 1 / (1 + 1) = 0.5; dog 2 / (1 + 2) = 0.6667
    assert perf["precision"] == pytest.approx({"cat": 0.5, "dog": 2 / 3})
    # recall: cat 1 / 2 = 0.5; dog 2 / 3
    assert perf["recall"] == pytest.approx({"cat": 0.5, "dog": 2 / 3})
    # F1 = 2PR / (P + R): cat 0.5, dog 2/3; macro (0.5 + 0.6667) / 2 = 0.58333
    assert perf["f1"] == pytest.approx({"cat": 0.5, "dog": 2 / 3})
    assert perf["f1_macro"] == pytest.approx(7 / 12)

    # Latencies 10, 20, 30, 40, 50, 100 (linear interpolation, positions q * (6 - 1)):
    # p50 at 2.5 -> 30 + 0.5 * 10 = 35; p95 at 4.75 -> 50 + 0.75 * 50 = 87.5;
    # p99 at 4.95 -> 50 + 0.95 * 50 = 97.5
    lat = report["latency_ms"]
    assert (lat["p50"], lat["p95"], lat["p99"]) == pytest.approx((35.0, 87.5, 97.5))

    live = report["predictions"]
    assert live["class_shares"] == {"cat": 0.5, "dog": 0.5}  # r1, r2, r6 cat of six
    # confidences 0.90 0.80 0.95 0.70 0.99 0.60 in [0.5, 0.75) and [0.75, 1.0]: 2 and 4
    assert live["confidence_histogram"]["counts"] == [2, 4]
    assert live["brightness_histogram"]["counts"] == [4, 2]  # 0.15 .. 0.45 | 0.55, 0.65

    psi = report["drift"]["psi"]
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
    assert report["drift"]["levels"] == {"class_share": "alert", "confidence": "ok",
                                         "brightness": "ok"}  # fmt: skip

    # Sampling noise at six predictions and a ten-photo reference is large: the class-share
    # PSI of 0.33 is within it, which the report says next to the figure.
    noise = report["drift"]["noise_p95"]
    assert set(noise) == {"class_share", "confidence", "brightness"}
    assert noise["class_share"] > psi["class_share"]

    alerts = {(a["alert"], a.get("feature")) for a in report["alerts"]}
    assert alerts == {("CatsDogsModelDrift", "class_share"), ("CatsDogsLiveAccuracyLow", None)}
    assert report["alerts"][0]["within_noise"] is True
    assert report["status"] == "alert"


def test_metrics_agree_with_scikit_learn() -> None:
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    rng = np.random.default_rng(1)
    classes = ["cat", "dog", "fox"]
    y_true = rng.choice(classes, 200).tolist()
    y_pred = [t if rng.random() < 0.7 else rng.choice(classes) for t in y_true]
    ours = classification_metrics(y_true, y_pred, classes)
    p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, labels=classes, zero_division=0)
    assert [ours["precision"][c] for c in classes] == pytest.approx(p.tolist())
    assert [ours["recall"][c] for c in classes] == pytest.approx(r.tolist())
    assert [ours["f1"][c] for c in classes] == pytest.approx(f.tolist())
    cm = confusion_matrix(y_true, y_pred, labels=classes)
    assert ours["confusion_matrix"]["matrix"] == cm.tolist()

    # A window where no fox is true or predicted: fox is null and out of the macro averages,
    # as in scikit-learn over the labels present.
    pairs = [(t, p) for t, p in zip(y_true, y_pred, strict=True) if "fox" not in (t, p)]
    y_true, y_pred = [t for t, _ in pairs], [p for _, p in pairs]
    ours = classification_metrics(y_true, y_pred, classes)
    assert ours["f1"]["fox"] is None and ours["precision"]["fox"] is None
    p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, average="macro")
    assert (ours["precision_macro"], ours["recall_macro"], ours["f1_macro"]) == pytest.approx(
        (p, r, f)
    )


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


def test_report_reads_a_postgres_store_the_same_way(small_store: dict, tmp_path: Path) -> None:
    with running_postgres() as server:
        url = new_database(server)
        _fill(StoreConfig(database_url=url, flush_ms=10))
        args = _monitor_args(small_store, tmp_path / "pg", "--min-samples", "5")
        args[args.index("--database-url") + 1] = url
        from_pg = cli.run(cli.parse_args(args))
    from_sqlite = cli.run(cli.parse_args(_monitor_args(small_store, tmp_path / "lite",
                                                       "--min-samples", "5")))  # fmt: skip
    assert from_pg["sources"]["store"].startswith("postgresql://store@127.0.0.1:")
    assert "store-pass" not in json.dumps(from_pg)  # the password never reaches a report
    for key in ("counts", "performance", "latency_ms", "predictions", "drift", "alerts"):
        assert from_pg[key] == from_sqlite[key], key


def test_report_on_an_empty_store_says_so(tmp_path: Path) -> None:
    args = cli.parse_args(["report", "--store", str(tmp_path / "new.sqlite3"),
                           "--database-url", "", "--out", str(tmp_path / "r.json"),
                           "--history", ""])  # fmt: skip
    report = cli.run(args)
    assert report["counts"]["predictions"] == 0 and report["status"] == "ok"
    assert report["performance"]["accuracy"] is None


def test_time_bounds_accept_iso_times_and_durations() -> None:
    now = parse_time("2026-11-26T12:00:00Z")
    assert parse_moment("90m", now) == parse_time("2026-11-26T10:30:00+00:00")
    assert parse_moment("1d", now).isoformat() == "2026-11-25T12:00:00+00:00"
    assert parse_moment("2026-11-26T11:00:00", now).hour == 11  # naive is UTC


# ---------------------------------------------------------------- the simulator's inputs


def test_simulator_reads_flat_and_class_folder_layouts(tmp_path: Path) -> None:
    flat = traffic.collect_photos(FULLRES)
    assert len(flat) == 50
    assert {p.label for p in flat} == {"cat", "dog"}
    assert sum(p.label == "cat" for p in flat) == 25

    # Class subfolders, named in any case; non-images and unlabelled flat files are skipped.
    for folder, src in [("Cat", "cat.1.jpg"), ("DOG", "dog.1.jpg")]:
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "a.jpg").write_bytes((FULLRES / src).read_bytes())
        (tmp_path / folder / "notes.txt").write_text("not a photo")
    (tmp_path / "photo.jpg").write_bytes((FULLRES / "cat.2.jpg").read_bytes())
    (tmp_path / "cat.7.jpg").write_bytes((FULLRES / "cat.2.jpg").read_bytes())
    found = sorted((p.label, p.path.name) for p in traffic.collect_photos(tmp_path))
    assert found == [("cat", "a.jpg"), ("cat", "cat.7.jpg"), ("dog", "a.jpg")]

    planned = traffic.plan(flat, count=30, only_class="CAT", seed=0)
    assert len(planned) == 30 and {p.label for p in planned} == {"cat"}
    assert len({p.path for p in planned}) == 25  # cycles after all 25 cats


def _mean_pixels(data: bytes) -> np.ndarray:
    import io

    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img.convert("RGB"), dtype=np.float64)


def test_simulated_shifts_change_the_photo_as_described() -> None:
    data = (FULLRES / "dog.3.jpg").read_bytes()
    original = _mean_pixels(data)
    dark = _mean_pixels(traffic.shift_image(data, grayscale=False, darken=0.35))
    assert dark.mean() == pytest.approx(original.mean() * 0.35, rel=0.05)
    gray = _mean_pixels(traffic.shift_image(data, grayscale=True, darken=None))
    assert np.abs(gray[..., 0] - gray[..., 1]).max() <= 3  # channels equal up to JPEG noise
    assert not math.isclose(np.abs(original[..., 0] - original[..., 2]).mean(), 0, abs_tol=3)


# ---------------------------------------------------------------- end to end

API_KEY = "monitoring-test-key"


@pytest.fixture(scope="module")
def live_service(bundle_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """A real server (tests.helpers: free port, stopped by PID) with its own store and an
    API key.

    RECENT_WINDOW=40 makes the drift gauge describe the last 40 predictions only, so a
    shifted run of 40 requests shows on /metrics by itself; DRIFT_MIN_SAMPLES=30 lets the
    service and the report (run with the same environment) compute PSI on such windows.
    """
    work = tmp_path_factory.mktemp("monitoring")
    env = {
        "MODEL_DIR": str(bundle_dir),
        "STORE_PATH": str(work / "store" / "store.sqlite3"),
        "DATABASE_URL": "",
        "STORE_WINDOW_TTL_S": "0.01",
        "API_KEY": API_KEY,
        "RECENT_WINDOW": "40",
        "DRIFT_MIN_SAMPLES": "30",
    }
    server = start_service(bundle_dir, work, **env)
    try:
        yield {"url": server.url, "work": work, "env": {**os.environ, **env}}
    finally:
        assert server.stop() == 0


def _stored_feedback(service: dict) -> dict[str, str]:
    """Request id -> true label, read from the service's store as the report reads it."""
    from monitoring.source import read_window

    config = StoreConfig(path=Path(service["env"]["STORE_PATH"]))
    return read_window(config).truths


@pytest.mark.slow
def test_feedback_endpoint_edge_cases(live_service: dict) -> None:
    headers = {"X-API-Key": API_KEY}
    with httpx.Client(base_url=live_service["url"], timeout=30) as client:
        photo = (FULLRES / "dog.5.jpg").read_bytes()
        answer = client.post("/predict", files={"file": ("d.jpg", photo)}, headers=headers)
        assert answer.status_code == 200, answer.text
        rid = answer.json()["request_id"]

        # API key required for feedback as for predictions.
        assert client.post("/feedback", json={"request_id": rid, "label": "dog"}).status_code == 401
        unknown_id = client.post(
            "/feedback", json={"request_id": "no-such-request", "label": "dog"}, headers=headers
        )
        assert unknown_id.status_code == 404
        unknown_label = client.post(
            "/feedback", json={"request_id": rid, "label": "fox"}, headers=headers
        )
        assert unknown_label.status_code == 422

        before = len(_stored_feedback(live_service))
        for stored in (True, False):  # the same label twice: stored once
            answer = client.post(
                "/feedback", json={"request_id": rid, "label": "dog"}, headers=headers
            )
            assert answer.status_code == 200 and answer.json()["stored"] is stored, answer.text
        other = client.post("/feedback", json={"request_id": rid, "label": "cat"}, headers=headers)
        assert other.status_code == 409  # one true label per prediction
        truths = _stored_feedback(live_service)
        assert truths[rid] == "dog" and len(truths) == before + 1


def _simulate(service: dict, *args: str) -> dict:
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "simulate_traffic.py"),
         "--url", service["url"], "--api-key", API_KEY, "--rate", "0", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr + done.stdout
    return json.loads(done.stdout)


def _report(service: dict, since: str, until: str, name: str) -> dict:
    out = service["work"] / "reports"
    done = subprocess.run(
        [sys.executable, "-m", "monitoring", "report",
         "--since", since, "--until", until,
         "--out", str(out / f"{name}.json"),
         "--history", str(out / "history.jsonl"),
         "--plot", str(out / "history.png")],
        cwd=ROOT, env=service["env"], capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    print(done.stdout)
    return json.loads((out / f"{name}.json").read_text())


def _now() -> str:
    return datetime.now(UTC).isoformat()


@pytest.mark.slow
def test_simulated_traffic_then_report_shows_accuracy_and_drift(live_service: dict) -> None:
    # Normal traffic: each of the 50 full-size photos once, all labelled.
    t0 = _now()
    normal = _simulate(live_service, "--data", str(FULLRES))
    t1 = _now()
    assert normal["answered"] == 50 and normal["feedback_sent"] == 50, normal
    report = _report(live_service, t0, t1, "normal")
    assert report["counts"] == {
        "predictions": 50, "labelled": 50, "unlabelled": 0, "labelled_share": 1.0,
        "feedback_with_unknown_label": 0,
    }  # fmt: skip
    perf = report["performance"]
    # The report's accuracy is exactly what the client saw, and the bundle is a real model.
    assert perf["accuracy"] == pytest.approx(normal["accuracy_seen"])
    assert perf["accuracy"] >= 0.7
    assert perf["support"] == {"cat": 25, "dog": 25}
    assert sum(map(sum, perf["confusion_matrix"]["matrix"])) == 50
    assert report["latency_ms"]["p50"] > 0
    normal_psi = report["drift"]["psi"]
    assert set(normal_psi) == {"class_share", "confidence", "brightness"}
    assert normal_psi["class_share"] < drift.PSI_WARN  # 25 cats and 25 dogs, mostly right

    # Shifted traffic: only cats, darkened to 30 %, from the class-folder photo set.
    # Half of them get a true label.
    shifted = _simulate(
        live_service, "--data", str(CATS_DOGS), "--only-class", "cat", "--darken", "0.3",
        "--count", "40", "--feedback-share", "0.5",
    )  # fmt: skip
    t2 = _now()
    assert shifted["answered"] == 40, shifted
    assert 5 < shifted["feedback_sent"] < 35 and shifted["feedback_errors"] == 0, shifted
    report = _report(live_service, t1, t2, "shifted")
    assert report["sources"]["store"] == f"sqlite:{live_service['env']['STORE_PATH']}"
    assert report["counts"]["labelled"] == shifted["feedback_sent"]
    assert report["counts"]["unlabelled"] == 40 - shifted["feedback_sent"]
    assert report["performance"]["support"]["dog"] == 0
    psi = report["drift"]["psi"]
    assert psi["class_share"] > drift.PSI_ALERT
    assert psi["brightness"] > drift.PSI_ALERT
    assert psi["brightness"] > normal_psi["brightness"]
    assert psi["brightness"] > report["drift"]["noise_p95"]["brightness"]  # real, not noise
    assert {a["feature"] for a in report["alerts"] if "feature" in a} >= {
        "class_share", "brightness"
    }  # fmt: skip
    assert report["status"] == "alert"
    history = (live_service["work"] / "reports" / "history.jsonl").read_text().splitlines()
    assert len(history) == 2

    # The service publishes the same figures: its drift window is the last 40 predictions.
    metrics = httpx.get(f"{live_service['url']}/metrics", headers={"X-API-Key": API_KEY}).text
    gauges = {
        m.group(1): float(m.group(2))
        for m in re.finditer(r'^model_drift_psi\{feature="(\w+)"\} (\S+)$', metrics, re.M)
    }
    assert gauges["class_share"] > drift.PSI_ALERT
    assert gauges["brightness"] > drift.PSI_ALERT
    # Same code, same 40 predictions: the gauge and the report agree (the store keeps the
    # rounded confidence and brightness the answer and the image description give).
    for feature, value in psi.items():
        assert gauges[feature] == pytest.approx(value, rel=0.05, abs=0.01), feature


def test_the_request_path_never_imports_monitoring() -> None:
    code = "import serving.app, sys; print(sorted(m for m in sys.modules if m.startswith('monitoring')))"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
