"""The report's estimated performance: what the probabilities say before the labels come,
set beside what the labels that did come say, and the share of photos flagged OOD."""

from __future__ import annotations

from collections.abc import Sequence

from contracts import estimate
from contracts.classification import classification_metrics
from monitoring.schema import EstimateAlert, Estimated, OodAlert, Thresholds
from serving.store import LabelledPrediction


def _usable(predictions: Sequence[LabelledPrediction], classes: list[str]) -> list:
    """Predictions whose probabilities cover the classes (older rows may lack them)."""
    return [
        p
        for p in predictions
        if p.record.label in classes and sum(p.record.probabilities.get(c, 0) for c in classes) > 0
    ]


def estimated_figures(predictions: Sequence[LabelledPrediction], classes: list[str]) -> Estimated:
    """The CBPE estimate over the window, the realised figures on its labelled part."""
    usable = _usable(predictions, classes)
    share, scored = estimate.flagged_share([p.record.ood_flag for p in predictions])
    labelled = [p for p in usable if p.true_label is not None]
    realised = classification_metrics(
        [str(p.true_label) for p in labelled], [p.record.label for p in labelled], classes
    )
    result = (
        estimate.estimate([p.record.probabilities for p in usable], [p.record.label for p in usable], classes)
        if usable
        else None
    )  # fmt: skip
    on_labelled = (
        estimate.estimate([p.record.probabilities for p in labelled], [p.record.label for p in labelled], classes, draws=1)
        if labelled
        else None
    )  # fmt: skip
    return Estimated(
        n=len(usable),
        method=result.method if result else "",
        accuracy=result.accuracy if result else None,
        f1_macro=result.f1_macro if result else None,
        f1=result.f1 if result else {},
        confusion_matrix=result.confusion_matrix if result else None,
        realised_accuracy=realised["accuracy"],
        realised_f1_macro=realised["f1_macro"],
        estimated_accuracy_of_labelled=on_labelled.accuracy.estimate if on_labelled else None,
        ood_scored=scored,
        ood_flagged_share=share if scored else None,
    )


def estimate_alerts(
    figures: Estimated, min_samples: int, t: Thresholds
) -> list[EstimateAlert | OodAlert]:
    """The same two rules as Prometheus, over the report's window."""
    alerts: list[EstimateAlert | OodAlert] = []
    accuracy = figures.accuracy
    if accuracy and figures.n >= min_samples and accuracy.estimate < t.estimated_accuracy_alert:
        alerts.append(EstimateAlert(accuracy.estimate, t.estimated_accuracy_alert, figures.n))
    share = figures.ood_flagged_share
    if share is not None and figures.ood_scored >= min_samples and share > t.ood_share_alert:
        alerts.append(OodAlert(share, t.ood_share_alert, figures.ood_scored))
    return alerts
