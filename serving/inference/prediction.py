"""What one served prediction is: the public answer plus what monitoring keeps of it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from serving.inference.decoding import DecodedPhoto


@dataclass(frozen=True)
class Call:
    """One request as the core sees it: its ids and its deadline (perf_counter seconds)."""

    request_id: str  # made by the server
    started: float
    deadline: float
    correlation_id: str | None = None  # the client's X-Request-ID, if it sent one
    client: str | None = None  # the name of the API key it came with (None: no keys)


@dataclass(frozen=True)
class Prediction:
    """One photo's prediction, as answered and as recorded."""

    request_id: str
    correlation_id: str | None
    label: str
    probabilities: dict[str, float]
    confidence: float
    model_version: str
    inference_ms: float
    latency_ms: float
    time: str  # ISO 8601, UTC
    image: DecodedPhoto | None = None
    ood_score: float | None = None  # higher = less like the training photos
    ood_flag: bool | None = None  # True: neither cat nor dog, most likely; do not trust the label
    client: str | None = None

    def answer(self) -> dict[str, Any]:
        """The public fields (the JSON a client gets)."""
        return {
            "label": self.label,
            "probabilities": self.probabilities,
            "confidence": self.confidence,
            "model_version": self.model_version,
            "request_id": self.request_id,
            "inference_ms": self.inference_ms,
            "ood_score": self.ood_score,
            "ood_flag": self.ood_flag,
        }
