"""POST /explain: a prediction and the occlusion heatmap of what drove it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, Request

from serving import schemas
from serving.dependencies import CurrentCall, ReadyPredictor, SignerDep, State
from serving.refusals import Refused
from serving.routes.predictions import ERRORS, note_prediction, signed
from serving.routes.uploads import RAW_IMAGE_BODY, uploaded_image

router = APIRouter(tags=["predict"])


async def explain_slot(state: State) -> AsyncIterator[None]:
    """One of `EXPLAIN_MAX_CONCURRENT` slots, taken before the upload is read; none free:
    503 with Retry-After at once. Each explanation is ~50 inferences, so a few at once
    would starve `/predict`."""
    slots = state.explain_slots
    if slots.locked():
        raise Refused(
            "explain_busy",
            f"{state.settings.explain_max_concurrent} explanation(s) are running; retry shortly.",
            state.settings.retry_after_s,
        )
    await slots.acquire()  # free: returns without waiting
    try:
        yield
    finally:
        slots.release()


@router.post("/explain", responses=ERRORS, openapi_extra=RAW_IMAGE_BODY)
async def explain_image(
    _: Annotated[None, Depends(explain_slot)],
    request: Request,
    data: Annotated[bytes, Depends(uploaded_image)],
    predictor: ReadyPredictor,
    call: CurrentCall,
    signer: SignerDep,
) -> schemas.ExplainOut:
    """Predict and show which regions drove it (occlusion heatmap, no torch needed)."""
    result = await predictor.explain(data, call)
    note_prediction(request, result.prediction)
    explanation = schemas.ExplanationOut(
        target=result.prediction.label,
        grid_size=result.grid_size,
        cell_px=round(result.cell_px, 3),
        base_probability=round(result.base_probability, 6),
        grid=[[float(v) for v in row] for row in result.drops],
        overlay_png_base64=result.png_base64,
    )
    return schemas.ExplainOut(**signed(result.prediction, signer), explanation=explanation)
