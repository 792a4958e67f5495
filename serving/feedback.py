"""Feedback: the true label of an earlier prediction, for live accuracy and monitoring.

A prediction is found by its request id in a bounded in-memory map of recent ones, or
else in the prediction log (so feedback may arrive after a restart). The same
(request id, label) pair is stored once.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from serving.logs import JsonLinesLog, utc_now
from serving.refusals import Refused


class FeedbackStore:
    """Recent predictions, stored feedback, and accuracy since the process started."""

    def __init__(
        self,
        log: JsonLinesLog,
        prediction_log: JsonLinesLog,
        classes: list[str],
        max_recent: int,
    ) -> None:
        self.log = log
        self.prediction_log = prediction_log
        self.classes = classes
        self.max_recent = max(1, max_recent)
        self._recent: OrderedDict[str, str] = OrderedDict()
        self._seen: set[tuple[str, str]] = set()
        self._lock = threading.Lock()
        self.correct = 0
        self.total = 0

    def load_seen(self) -> None:
        """Read the feedback already stored, so a repeat after a restart is still a repeat."""
        for entry in self.log.entries():
            rid, label = entry.get("request_id"), entry.get("label")
            if isinstance(rid, str) and isinstance(label, str):
                self._seen.add((rid, label))

    def remember(self, request_id: str, label: str) -> None:
        self._recent[request_id] = label
        if len(self._recent) > self.max_recent:
            self._recent.popitem(last=False)

    def predicted_label(self, request_id: str) -> str | None:
        """The label the service gave `request_id`: memory first, then the prediction log."""
        label = self._recent.get(request_id)
        if label is not None:
            return label
        for entry in self.prediction_log.entries():
            if entry.get("request_id") == request_id and isinstance(entry.get("label"), str):
                return entry["label"]
        return None

    def record(self, request_id: str, label: str) -> dict[str, object]:
        """Store feedback (blocking file reads possible: call from a worker thread)."""
        if label not in self.classes:
            raise Refused(
                "unknown_label", f"Label {label!r} is not one of {', '.join(self.classes)}."
            )
        predicted = self.predicted_label(request_id)
        if predicted is None:
            raise Refused(
                "unknown_request_id", f"No prediction with request id {request_id!r} is known."
            )
        with self._lock:
            duplicate = (request_id, label) in self._seen
            if not duplicate:
                self._seen.add((request_id, label))
                self.log.write({"request_id": request_id, "label": label, "time": utc_now()})
                self.total += 1
                self.correct += int(predicted == label)
        return {
            "request_id": request_id,
            "label": label,
            "predicted_label": predicted,
            "correct": predicted == label,
            "stored": not duplicate,
        }

    @property
    def accuracy(self) -> float:
        return self.correct / self.total if self.total else float("nan")

    def close(self) -> None:
        self.log.close()
