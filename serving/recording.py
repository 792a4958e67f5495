"""Where a served prediction is kept: the seam between the request path and monitoring.

`Recorder.record(prediction)` is called once per served photo (serving/inference/
predictor.py) and hands it to the shared store (serving/store/): a bounded queue that a
writer thread commits in batches, so recording never blocks or fails a request. Feedback,
the live accuracy and the drift window are read from the same store, so they cover every
replica's traffic.
"""

from __future__ import annotations

from dataclasses import replace

from prometheus_client import CollectorRegistry

from serving.cpu_stages import StageCpu
from serving.feedback import record_feedback
from serving.inference.prediction import Prediction
from serving.settings import Settings
from serving.store import PredictionRecord, RecentWindow, Store, StoreConfig


def as_record(prediction: Prediction) -> PredictionRecord:
    """What the store keeps of a prediction (the image's description, never its bytes)."""
    image = prediction.image.describe() if prediction.image is not None else {}
    return PredictionRecord.from_answer(
        prediction.answer(),
        prediction.time,
        prediction.latency_ms,
        image,
        correlation_id=prediction.correlation_id,
        client=prediction.client,
    )


def store_config(settings: Settings) -> StoreConfig:
    """The store's settings; the window's per-client share applies only with two or more
    API keys (a single client, or none named, may fill the whole window)."""
    config = StoreConfig.of(settings)
    return config if len(settings.clients) > 1 else replace(config, client_share=1.0)


class Recorder:
    """The app's handle on the store: record predictions, take feedback, read the window."""

    def __init__(
        self,
        settings: Settings,
        registry: CollectorRegistry | None = None,
        cpu: StageCpu | None = None,
    ) -> None:
        self.settings = settings
        self.cpu = cpu
        # Connections and the writer thread start in open(): building the app touches nothing.
        self.store = Store(store_config(settings), registry, cpu)
        self.classes: list[str] = []

    def open(self, classes: list[str]) -> None:
        """Start the writer and create the schema (blocking: call from a worker thread)."""
        self.classes = list(classes)
        self.store.open()

    def record(self, prediction: Prediction) -> None:
        if self.cpu is None:
            self.store.record(as_record(prediction))
            return
        with self.cpu.measure("recording"):  # on the event loop: its thread's clock
            self.store.record(as_record(prediction))

    def add_feedback(self, request_id: str, label: str) -> dict[str, object]:
        """Store a true label (blocking: call from a worker thread); raises Refused."""
        return record_feedback(
            self.store, self.classes, request_id, label, self.settings.retry_after_s
        )

    def window(self) -> RecentWindow:
        """The newest predictions and labels of all replicas (blocking, cached briefly)."""
        return self.store.window()

    def close(self) -> None:
        """Write what is queued, then close (blocking: call from a worker thread)."""
        self.store.close()
