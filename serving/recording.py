"""Where a served prediction is kept: the seam between the request path and monitoring.

`Recorder.record(prediction)` is called once per served photo (serving/inference/
predictor.py) and is the only place that keeps predictions: today the JSON-lines
prediction log, the recent window behind the drift gauges, and the id -> label map that
feedback checks against. Replace this class to keep predictions elsewhere (a database);
the request path needs only `record`, `recent`, `add_feedback`, `accuracy` and `close`.
"""

from __future__ import annotations

from collections import deque

from serving.feedback import FeedbackStore
from serving.inference.prediction import Prediction
from serving.logs import JsonLinesLog
from serving.settings import Settings


class Recorder:
    """Prediction log, drift window and feedback of one app."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        # (label, confidence, brightness) of recent photos, for the drift gauges.
        self.recent: deque[tuple[str, float, float]] = deque(maxlen=settings.recent_window)
        # Files are opened in open(), so building the app touches nothing.
        self.prediction_log = JsonLinesLog("", 0, 0, "predictions")
        self.feedback: FeedbackStore | None = None

    def open(self, classes: list[str]) -> None:
        """Open the logs (blocking: reads the feedback already stored)."""
        s = self.settings
        self.prediction_log = JsonLinesLog(
            s.prediction_log, s.log_max_bytes, s.log_backups, "predictions"
        )
        self.feedback = FeedbackStore(
            JsonLinesLog(s.feedback_log, s.log_max_bytes, s.log_backups, "feedback"),
            self.prediction_log,
            classes,
            s.recent_ids,
        )
        self.feedback.load_seen()

    def record(self, prediction: Prediction) -> None:
        image = prediction.image
        if image is not None:
            self.recent.append((prediction.label, prediction.confidence, image.brightness))
        if self.feedback:
            self.feedback.remember(prediction.request_id, prediction.label)
        self.prediction_log.write(
            {
                "request_id": prediction.request_id,
                "correlation_id": prediction.correlation_id,
                "time": prediction.time,
                "label": prediction.label,
                "probabilities": prediction.probabilities,
                "confidence": prediction.confidence,
                "latency_ms": prediction.latency_ms,
                "inference_ms": prediction.inference_ms,
                "model_version": prediction.model_version,
                "image": image.describe() if image is not None else None,
            }
        )

    def add_feedback(self, request_id: str, label: str) -> dict[str, object]:
        """Store a true label (blocking: call from a worker thread)."""
        if self.feedback is None:
            raise RuntimeError("the recorder is not open")
        return self.feedback.record(request_id, label)

    @property
    def accuracy(self) -> float:
        return self.feedback.accuracy if self.feedback else float("nan")

    def close(self) -> None:
        self.prediction_log.close()
        if self.feedback:
            self.feedback.close()
