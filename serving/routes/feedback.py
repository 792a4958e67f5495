"""POST /feedback: the true label of an earlier prediction, kept in the shared store."""

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
    """Store the one true label of an earlier prediction, made by any replica.

    The same label again: 200 with `stored: false`; another label: 409; unknown id: 404;
    the store down or full: 503 with Retry-After, and nothing stored.
    """
    result = await asyncio.to_thread(recorder.add_feedback, payload.request_id, payload.label)
    if result["stored"]:
        metrics.feedback.labels(label=payload.label).inc()
    return schemas.FeedbackOut.model_validate(result)
