"""POST /feedback: the true label of an earlier prediction, kept in the shared store."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter

from serving import schemas
from serving.dependencies import MetricsDep, ReadyModel, RecorderDep, SignerDep
from serving.feedback import unknown_id
from serving.routes.json_route import JSONRoute
from serving.routes.predictions import ERRORS

router = APIRouter(tags=["monitor"], route_class=JSONRoute)


@router.post("/feedback", responses=ERRORS)
async def feedback(
    payload: schemas.FeedbackIn,
    _: ReadyModel,
    recorder: RecorderDep,
    metrics: MetricsDep,
    signer: SignerDep,
) -> schemas.FeedbackOut:
    """Store the one true label of an earlier prediction, made by any replica.

    Needs the prediction's `feedback_token`: a wrong token and an unknown id get the same
    404 at once, so ids cannot be probed. The same label again: 200 with `stored: false`;
    another label: 409; the store down or full: 503 with Retry-After, and nothing stored.
    """
    if not signer.valid(payload.request_id, payload.feedback_token):
        raise unknown_id()
    result = await asyncio.to_thread(recorder.add_feedback, payload.request_id, payload.label)
    if result["stored"]:
        metrics.feedback.labels(label=payload.label).inc()
    return schemas.FeedbackOut.model_validate(result)
