"""GET /model-info, /stats and /metrics: what is served, and how it is going."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from serving import schemas
from serving.dependencies import EngineDep, ReadyModel, State
from serving.state import AppState
from serving.store.live import LiveGauges, publish_live

router = APIRouter(tags=["info"])


@router.get("/model-info", responses={503: {"model": schemas.ErrorOut}})
async def model_info(model: ReadyModel, state: State) -> schemas.ModelInfoOut:
    """The loaded bundle's manifest (identity, classes, input, real test metrics, lineage)
    and its registry record: which promoted version and alias this is, if any."""
    m, lineage = model.manifest, state.lineage
    record = lineage.record
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
        promoted=lineage.promoted,
        registry=schemas.RegistryOut(**record.model_dump()) if record else None,
        registry_error=lineage.error,
        shadow=shadow_info(state),
    )


def shadow_info(state: AppState) -> schemas.ShadowOut | None:
    """The challenger scored in the shadow, when one is loaded."""
    scorer = state.shadow.scorer
    if scorer is None:
        return None
    m = scorer.model.manifest
    return schemas.ShadowOut(
        name=m.name, version=m.version, share=scorer.share, queue_max=scorer.queue_max
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
    """Prometheus text format; drift and live accuracy are read from the store now."""
    model = state.engine.model
    if model is not None:
        m = state.metrics
        gauges = LiveGauges(
            m.drift_psi, m.live_accuracy, m.estimated_accuracy, m.estimated_accuracy_lower,
            m.ood_flagged_share,
        )  # fmt: skip
        await asyncio.to_thread(
            publish_live, state.recorder.store, model.manifest.reference.model_dump(),
            model.classes, gauges, state.settings.drift_min_samples,
            (m.live_accuracy_by_client, state.clients.names),
        )  # fmt: skip
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
