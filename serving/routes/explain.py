"""POST /explain: a prediction and the occlusion heatmap of what drove it."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request

from serving import schemas
from serving.dependencies import CurrentCall, ReadyPredictor
from serving.routes.predictions import ERRORS, note_prediction
from serving.routes.uploads import RAW_IMAGE_BODY, uploaded_image

router = APIRouter(tags=["predict"])


@router.post("/explain", responses=ERRORS, openapi_extra=RAW_IMAGE_BODY)
async def explain_image(
    request: Request,
    data: Annotated[bytes, Depends(uploaded_image)],
    predictor: ReadyPredictor,
    call: CurrentCall,
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
    return schemas.ExplainOut(**result.prediction.answer(), explanation=explanation)
