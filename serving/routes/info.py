"""GET /model-info, /stats and /metrics: what is served, and how it is going."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from serving import drift, schemas
from serving.dependencies import EngineDep, ReadyModel, State

log = logging.getLogger("serving.info")
router = APIRouter(tags=["info"])


@router.get("/model-info", responses={503: {"model": schemas.ErrorOut}})
async def model_info(model: ReadyModel) -> schemas.ModelInfoOut:
    """The loaded bundle's manifest: identity, classes, input, real test metrics, lineage."""
    m = model.manifest
    return schemas.ModelInfoOut(
        name=m.name,
        version=m.version,
        architecture=m.architecture,
        classes=m.classes,
        input=m.input.model_dump(),
        output=m.output.model_dump(),
        metrics=m.metrics,
        data_version=m.data_version,
        git_revision=m.git_revision,
        mlflow_run_id=m.mlflow_run_id,
        created_at=m.created_at,
        sha256=m.sha256,
    )


@router.get("/stats")
async def stats(state: State, engine: EngineDep) -> schemas.StatsOut:
    """Predictions since start: count, per class, average confidence and inference time."""
    return schemas.StatsOut(
        **state.stats.as_dict(),
        model_version=engine.model.manifest.version if engine.model else None,
        queued_images=engine.batcher.queued_images if engine.batcher else 0,
    )


@router.get("/metrics", response_class=Response)
async def metrics(state: State) -> Response:
    """Prometheus text format; drift gauges are computed now, at scrape time."""
    publish_drift(state)
    state.metrics.live_accuracy.set(state.recorder.accuracy)
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)


def publish_drift(state: State) -> None:
    """Population stability of the recent window against the bundle's reference."""
    model, recent = state.engine.model, state.recorder.recent
    if model is None or not recent:
        return
    try:
        labels, confidences, brightness = (list(col) for col in zip(*recent, strict=True))
        report = drift.drift_report(
            reference=model.manifest.reference.model_dump(),
            labels=labels,
            confidences=confidences,
            brightness=brightness,
            classes=model.classes,
        )
        # Only this report's features: one left out (too few samples) must not go stale.
        state.metrics.drift_psi.clear()
        for feature, value in report.items():
            state.metrics.drift_psi.labels(feature=str(feature)).set(float(value))
    except Exception:  # monitoring must never break a scrape
        log.warning("Drift report failed", exc_info=True)
