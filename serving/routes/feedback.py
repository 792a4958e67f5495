"""POST /feedback: the true label of an earlier prediction (kept by the recorder)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter

from serving import schemas
from serving.dependencies import MetricsDep, ReadyModel, RecorderDep
from serving.routes.json_route import JSONRoute
from serving.routes.predictions import ERRORS

router = APIRouter(tags=["monitor"], route_class=JSONRoute)


@router.post("/feedback", responses=ERRORS)
async def feedback(
    payload: schemas.FeedbackIn, _: ReadyModel, recorder: RecorderDep, metrics: MetricsDep
) -> schemas.FeedbackOut:
    """Record the true label of an earlier prediction (stored once per id and label)."""
    result = await asyncio.to_thread(recorder.add_feedback, payload.request_id, payload.label)
    if result["stored"]:
        metrics.feedback.labels(label=payload.label).inc()
        metrics.live_accuracy.set(recorder.accuracy)
    return schemas.FeedbackOut.model_validate(result)
