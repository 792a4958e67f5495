"""The monitoring report as typed records; `Report.to_json()` is the JSON it writes.

Dataclasses rather than a nested dict, so the CLI, the history line and the tests read
fields that a type checker knows, and a renamed field fails loudly. The JSON keeps the
shape docs/monitoring.md describes (each record's fields, in order, as an object).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from contracts import drift, estimate


@dataclass(frozen=True)
class Thresholds:
    """When a PSI warns or alerts, and when live accuracy alerts (same as Prometheus)."""

    psi_warn: float = drift.PSI_WARN
    psi_alert: float = drift.PSI_ALERT
    accuracy_alert: float = drift.ACCURACY_ALERT
    min_labelled: int = drift.MIN_LABELLED
    estimated_accuracy_alert: float = estimate.ESTIMATED_ACCURACY_ALERT
    ood_share_alert: float = estimate.OOD_SHARE_ALERT


@dataclass(frozen=True)
class Histogram:
    edges: list[float]
    counts: list[int]


@dataclass(frozen=True)
class Latency:
    """Request latency in ms: p50/p95/p99 (linear interpolation), mean and max."""

    n: int = 0
    p50: float | None = None
    p95: float | None = None
    p99: float | None = None
    mean: float | None = None
    max: float | None = None


@dataclass(frozen=True)
class ConfusionMatrix:
    classes: list[str]
    rows: str
    columns: str
    matrix: list[list[int]]


@dataclass(frozen=True)
class Performance:
    """contracts.classification's metrics on the labelled predictions of the window."""

    n: int
    accuracy: float | None
    precision: dict[str, float | None]
    recall: dict[str, float | None]
    f1: dict[str, float | None]
    support: dict[str, int]
    precision_macro: float | None
    recall_macro: float | None
    f1_macro: float | None
    confusion_matrix: ConfusionMatrix

    @classmethod
    def from_metrics(cls, metrics: dict[str, Any]) -> Performance:
        return cls(
            **{**metrics, "confusion_matrix": ConfusionMatrix(**metrics["confusion_matrix"])}
        )


@dataclass(frozen=True)
class ModelSummary:
    """The bundle the window is compared with, and the versions that answered in it."""

    name: str | None
    version: str | None
    classes: list[str]
    test_metrics: dict[str, Any] | None
    versions_in_window: dict[str, int]


@dataclass(frozen=True)
class Counts:
    predictions: int
    labelled: int
    unlabelled: int
    labelled_share: float | None
    feedback_with_unknown_label: int


@dataclass(frozen=True)
class Traffic:
    """What the window's predictions look like: class shares, confidence, brightness, sizes."""

    class_shares: dict[str, float | None]
    class_counts: dict[str, int]
    confidence_mean: float | None
    confidence_histogram: Histogram
    brightness_mean: float | None
    brightness_histogram: Histogram
    image_width_median: float | None
    image_height_median: float | None


@dataclass(frozen=True)
class ReferenceSummary:
    """The reference statistics copied from model.json (None where it has none)."""

    n: int | None = None
    class_shares: dict[str, float] | None = None
    confidence_histogram: dict[str, Any] | None = None
    brightness_histogram: dict[str, Any] | None = None


@dataclass(frozen=True)
class Drift:
    method: str
    psi: dict[str, float]
    levels: dict[str, str]
    noise_p95: dict[str, float | None]
    min_samples: int
    not_computed: list[str]


@dataclass(frozen=True)
class DriftAlert:
    """A feature's PSI above the alert threshold; `within_noise`: the window is too small
    to tell it from sampling noise."""

    alert: str = field(default="CatsDogsModelDrift", init=False)
    feature: str
    value: float
    threshold: float
    within_noise: bool


@dataclass(frozen=True)
class AccuracyAlert:
    """Live accuracy below the threshold, on at least `min_labelled` labelled predictions."""

    alert: str = field(default="CatsDogsLiveAccuracyLow", init=False)
    value: float
    threshold: float
    labelled: int


@dataclass(frozen=True)
class Estimated:
    """Performance estimated from the probabilities alone (contracts/estimate.py), beside
    the realised figures on the window's labelled predictions; the OOD-flagged share."""

    n: int
    method: str
    accuracy: estimate.Interval | None
    f1_macro: estimate.Interval | None
    f1: dict[str, float | None]
    confusion_matrix: list[list[float]] | None
    realised_accuracy: float | None  # on the labelled predictions (None: no labels)
    realised_f1_macro: float | None
    estimated_accuracy_of_labelled: float | None  # the estimate over the same labelled rows
    ood_scored: int
    ood_flagged_share: float | None


@dataclass(frozen=True)
class EstimateAlert:
    """Estimated accuracy (no labels needed) below the threshold, on at least min_samples."""

    alert: str = field(default="CatsDogsEstimatedAccuracyLow", init=False)
    value: float
    threshold: float
    predictions: int


@dataclass(frozen=True)
class OodAlert:
    """The OOD-flagged share above the threshold, on at least min_samples scored photos."""

    alert: str = field(default="CatsDogsOodShareHigh", init=False)
    value: float
    threshold: float
    scored: int


@dataclass(frozen=True)
class ShadowSummary:
    """One challenger scored in the shadow: how often it agrees with the served model, and
    both models' accuracy on the same labelled photos (None: no labels yet)."""

    challenger_version: str
    served_versions: list[str]
    n: int
    agreement: float | None
    labelled: int
    served_accuracy: float | None
    challenger_accuracy: float | None
    # labelled photos only one of the two got right (McNemar's discordant pairs)
    only_served_right: int
    only_challenger_right: int


@dataclass(frozen=True)
class Figures:
    """Everything computed from the window's predictions, labels and model.json."""

    status: str  # "ok", "warn" or "alert"
    alerts: list[DriftAlert | AccuracyAlert | EstimateAlert | OodAlert]
    model: ModelSummary
    counts: Counts
    performance: Performance
    estimated: Estimated
    latency_ms: Latency
    predictions: Traffic
    reference: ReferenceSummary
    drift: Drift
    thresholds: Thresholds
    shadow: list[ShadowSummary] = field(default_factory=list)


@dataclass(frozen=True)
class Period:
    """The report's time bounds as ISO 8601 text (None: open)."""

    since: str | None
    until: str | None


@dataclass(frozen=True)
class Sources:
    store: str  # where the store is, without a password
    manifest: str | None  # the model.json compared with, None when absent


@dataclass(frozen=True)
class Report:
    """One report: when, over which window, from what, and the figures."""

    generated_at: str
    window: Period
    sources: Sources
    figures: Figures

    def to_json(self) -> dict[str, Any]:
        """The JSON object written to disk: the figures' fields sit at the top level."""
        head = asdict(self)
        return {**{k: v for k, v in head.items() if k != "figures"}, **head["figures"]}


@dataclass(frozen=True)
class Artifacts:
    """What a run wrote: the report, and the history and PNG unless skipped."""

    report: Path
    history: Path | None = None
    plot: Path | None = None
    plot_skipped: bool = False  # matplotlib is not installed
