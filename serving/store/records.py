"""What the store keeps per prediction and per feedback, as plain typed records."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True)
class PredictionRecord:
    """One answered prediction, as the monitoring report needs it (no image bytes)."""

    request_id: str
    ts: float  # UNIX seconds
    label: str
    confidence: float
    probabilities: dict[str, float]
    model_version: str
    latency_ms: float | None = None
    inference_ms: float | None = None
    width: int | None = None
    height: int | None = None
    brightness: float | None = None
    sha256: str | None = None
    correlation_id: str | None = None
    replica: str | None = None
    ood_score: float | None = None
    ood_flag: bool | None = None
    client: str | None = None  # the API key's name (None: no keys configured)

    COLUMNS = (
        "request_id", "correlation_id", "ts", "label", "confidence", "probabilities",
        "latency_ms", "inference_ms", "model_version", "width", "height", "brightness",
        "sha256", "replica", "ood_score", "ood_flag", "client",
    )  # fmt: skip

    def row(self) -> tuple:
        """Values in `COLUMNS` order (probabilities as JSON text, the flag as 0/1)."""
        values = {**self.__dict__, "probabilities": json.dumps(self.probabilities)}
        if self.ood_flag is not None:  # INTEGER in both databases (PostgreSQL: no bool cast)
            values["ood_flag"] = int(self.ood_flag)
        return tuple(values[name] for name in self.COLUMNS)

    @classmethod
    def from_answer(
        cls,
        answer: dict,
        time_iso: str,
        latency_ms: float,
        image: dict | None = None,
        correlation_id: str | None = None,
        client: str | None = None,
    ) -> PredictionRecord:
        """From the service's public answer, its time and the upload's description."""
        image = image or {}
        return cls(
            request_id=answer["request_id"],
            ts=datetime.fromisoformat(time_iso).timestamp(),
            label=answer["label"],
            confidence=answer["confidence"],
            probabilities=answer["probabilities"],
            model_version=answer["model_version"],
            latency_ms=latency_ms,
            inference_ms=answer.get("inference_ms"),
            width=image.get("width"),
            height=image.get("height"),
            brightness=image.get("brightness"),
            sha256=image.get("sha256"),
            correlation_id=correlation_id,
            ood_score=answer.get("ood_score"),
            ood_flag=answer.get("ood_flag"),
            client=client,
        )

    @classmethod
    def from_row(cls, row: tuple) -> PredictionRecord:
        values = dict(zip(cls.COLUMNS, row, strict=True))
        values["probabilities"] = json.loads(values["probabilities"] or "{}")
        if values["ood_flag"] is not None:  # stored as INTEGER 0/1
            values["ood_flag"] = bool(values["ood_flag"])
        return cls(**values)


@dataclass(frozen=True)
class FeedbackOutcome:
    """What /feedback answers: the stored (or already stored) true label of a prediction."""

    request_id: str
    label: str
    predicted_label: str
    stored: bool  # False: the same label was already stored (idempotent repeat)

    @property
    def correct(self) -> bool:
        return self.label == self.predicted_label


@dataclass
class RecentWindow:
    """The newest predictions (all replicas) and labelled ones, for live gauges."""

    labels: list[str] = field(default_factory=list)
    confidences: list[float] = field(default_factory=list)
    brightness: list[float | None] = field(default_factory=list)
    ood_flags: list[bool | None] = field(default_factory=list)
    labelled: int = 0
    correct: int = 0
    # client name (None: no key) -> (labelled, correct) among the same newest labels
    by_client: dict[str | None, tuple[int, int]] = field(default_factory=dict)

    @property
    def accuracy(self) -> float:
        return self.correct / self.labelled if self.labelled else float("nan")


@dataclass(frozen=True)
class ShadowRecord:
    """A challenger's answer for a photo the service served (the `shadow_predictions` row)."""

    request_id: str
    model_version: str
    label: str
    confidence: float
    probabilities: dict[str, float]
    ts: float  # UNIX seconds
    replica: str | None = None

    COLUMNS = (
        "request_id", "model_version", "label", "confidence", "probabilities", "ts", "replica",
    )  # fmt: skip

    def row(self) -> tuple:
        values = {**self.__dict__, "probabilities": json.dumps(self.probabilities)}
        return tuple(values[name] for name in self.COLUMNS)
