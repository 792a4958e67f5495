"""Feedback: the one true label of an earlier prediction, stored in the shared store.

Any replica can take feedback for any prediction (the store is shared); the request id is
found by primary key, never by scanning logs. The first label stored for a prediction is
its true label: the same label again is an idempotent 200 (`stored: false`), another
label is refused with 409. When the store is down or full nothing is stored and the
client gets 503 with Retry-After, so a retry is safe.
"""

from __future__ import annotations

from serving.refusals import Refused
from serving.store import LabelConflict, Store, StoreError, UnknownPrediction


def unknown_id() -> Refused:
    """The one answer for an unknown id and for a token that does not match it."""
    return Refused(
        "unknown_request_id", "No prediction with this request id and feedback token is known."
    )


def record_feedback(
    store: Store, classes: list[str], request_id: str, label: str, retry_after_s: int
) -> dict[str, object]:
    """Store feedback and return the public answer (blocking: call from a worker thread)."""
    if label not in classes:
        raise Refused("unknown_label", f"Label {label!r} is not one of {', '.join(classes)}.")
    try:
        outcome = store.add_feedback(request_id, label)
    except UnknownPrediction as exc:
        raise unknown_id() from exc
    except LabelConflict as exc:
        raise Refused(
            "label_conflict",
            f"Prediction {request_id!r} already has the true label {exc.existing!r}; "
            "a prediction has one true label.",
        ) from exc
    except StoreError as exc:
        raise Refused(
            "store_full" if exc.reason == "full" else "store_unavailable",
            f"Feedback cannot be stored now ({exc.reason}); nothing was stored, retry later.",
            retry_after_s=retry_after_s,
        ) from exc
    return {
        "request_id": outcome.request_id,
        "label": outcome.label,
        "predicted_label": outcome.predicted_label,
        "correct": outcome.correct,
        "stored": outcome.stored,
    }
