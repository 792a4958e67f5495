"""Prometheus metrics of the service, in their own registry.

Label values are bounded: routes are templates (`/v2/models/{name}/infer`, never a raw
path), reasons and classes come from fixed lists. docs/serving.md lists every name.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from serving.cpu_stages import StageCpu

# `*_created` series double the output and no dashboard uses them.
disable_created_metrics()

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
INFERENCE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
CONFIDENCE_BUCKETS = (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 0.99, 1.0)
SHADOW_DROP_REASONS = ("queue_full", "store", "error", "stopping")
MODEL_INFO_LABELS = (
    "version", "name", "data_version", "git_revision",
    "promoted", "registry_name", "registry_version", "alias",
)  # fmt: skip


class StageCpuCollector(Collector):
    """`stage_cpu_seconds_total{stage}`, read from the StageCpu at scrape time."""

    def __init__(self, cpu: StageCpu) -> None:
        self.cpu = cpu

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(
            "stage_cpu_seconds", "CPU seconds spent per request-path stage.", labels=["stage"]
        )
        for stage, seconds in self.cpu.totals().items():
            family.add_metric([stage], seconds)
        yield family


class ServiceMetrics:
    """Every metric the service exports; one instance per app (tests build many apps)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "http_requests", "HTTP requests by route template, method and status.",
            ["route", "method", "status"], registry=r,
        )  # fmt: skip
        self.request_duration = Histogram(
            "http_request_duration_seconds", "Time from request start to response end.",
            ["route"], buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.in_flight = Gauge("http_requests_in_flight", "Requests being handled now.", registry=r)
        self.inference_duration = Histogram(
            "inference_duration_seconds", "ONNX Runtime time per batch.",
            buckets=INFERENCE_BUCKETS, registry=r,
        )  # fmt: skip
        self.batch_size = Histogram(
            "inference_batch_size", "Images per ONNX Runtime call.",
            buckets=BATCH_BUCKETS, registry=r,
        )  # fmt: skip
        self.predictions = Counter(
            "predictions", "Predictions by predicted class.", ["label"], registry=r
        )
        self.confidence = Histogram(
            "prediction_confidence", "Probability of the predicted class.",
            buckets=CONFIDENCE_BUCKETS, registry=r,
        )  # fmt: skip
        self.rejected = Counter(
            "rejected_inputs", "Inputs refused, by reason.", ["reason"], registry=r
        )
        self.model_info = Gauge(
            "model_info", "The loaded model bundle and its registry record (value 1).",
            list(MODEL_INFO_LABELS), registry=r,
        )  # fmt: skip
        self._live_gauges(r)
        self._estimate_gauges(r)
        self._shadow_metrics(r)
        self.feedback = Counter(
            "feedback", "Feedback records stored, by true label.", ["label"], registry=r
        )
        self.stage_cpu = StageCpu()
        r.register(StageCpuCollector(self.stage_cpu))

    def _live_gauges(self, r: CollectorRegistry) -> None:
        """What the store's window of recent traffic says: drift and live accuracy."""
        self.drift_psi = Gauge(
            "model_drift_psi", "Population stability index of recent traffic vs the reference.",
            ["feature"], registry=r,
        )  # fmt: skip
        self.live_accuracy = Gauge(
            "model_live_accuracy", "Accuracy on feedback received since start (NaN: none).",
            registry=r,
        )  # fmt: skip
        self.live_accuracy.set(float("nan"))
        self.live_accuracy_by_client = Gauge(
            "model_live_accuracy_by_client",
            "Live accuracy on the same labels, by the API key name that asked (API_KEYS).",
            ["client"], registry=r,
        )  # fmt: skip

    def _estimate_gauges(self, r: CollectorRegistry) -> None:
        """What the window says before labels: estimated accuracy and the OOD share."""
        self.estimated_accuracy = Gauge(
            "model_estimated_accuracy",
            "Accuracy estimated from recent confidences, before labels (NaN: too few).",
            registry=r,
        )
        self.estimated_accuracy_lower = Gauge(
            "model_estimated_accuracy_lower",
            "Lower end of the estimated accuracy's 95 % interval (NaN: too few).",
            registry=r,
        )
        self.ood_flagged_share = Gauge(
            "model_ood_flagged_share",
            "Share of recent predictions flagged out-of-distribution (NaN: too few scored).",
            registry=r,
        )
        for gauge in (self.estimated_accuracy, self.estimated_accuracy_lower):
            gauge.set(float("nan"))
        self.ood_flagged_share.set(float("nan"))

    def _shadow_metrics(self, r: CollectorRegistry) -> None:
        """Shadow scoring (CHALLENGER_MODEL_DIR): present, and empty, when it is off."""
        self.shadow_predictions = Counter(
            "shadow_predictions",
            "Photos the challenger scored, by whether its label agrees with the served one.",
            ["outcome"], registry=r,
        )  # fmt: skip
        self.shadow_dropped = Counter(
            "shadow_dropped",
            "Photos sampled for the challenger but not scored or not stored, by reason.",
            ["reason"], registry=r,
        )  # fmt: skip
        for reason in SHADOW_DROP_REASONS:
            self.shadow_dropped.labels(reason=reason)
        self.shadow_agreement = Gauge(
            "shadow_agreement",
            "Share of the recent shadow-scored photos (RECENT_WINDOW) where the challenger's "
            "label equals the served one (NaN: none yet).", registry=r,
        )  # fmt: skip
        self.shadow_agreement.set(float("nan"))
        self.shadow_queue = Gauge("shadow_queue", "Photos waiting for the challenger.", registry=r)

    def observe_batch(self, size: int, seconds: float) -> None:
        """One ONNX Runtime call (called from the inference thread)."""
        self.batch_size.observe(size)
        self.inference_duration.observe(seconds)
