"""POST /explain: a prediction and the occlusion heatmap of what drove it."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request

from serving import schemas
from serving.dependencies import CurrentCall, ReadyPredictor, SettingsDep
from serving.inference import explain
from serving.routes.predictions import ERRORS, note_prediction
from serving.routes.uploads import RAW_IMAGE_BODY, uploaded_image

router = APIRouter(tags=["predict"])


@router.post("/explain", responses=ERRORS, openapi_extra=RAW_IMAGE_BODY)
async def explain_image(
    request: Request,
    data: Annotated[bytes, Depends(uploaded_image)],
    predictor: ReadyPredictor,
    call: CurrentCall,
    settings: SettingsDep,
) -> schemas.ExplainOut:
    """Predict and show which regions drove it (occlusion heatmap, no torch needed)."""
    photo = await predictor.decode(data, call)
    grid = max(2, settings.explain_grid)
    variants = explain.occlusion_variants(photo.pixels, grid)
    probs, inference_ms = await predictor.infer(variants, call)
    prediction = predictor.finish(call, call.request_id, probs[0], inference_ms, photo)
    note_prediction(request, prediction)
    model = predictor.engine.require_model()
    target = model.classes.index(prediction.label)
    drops = explain.occlusion_grid(probs, target, grid)
    assert predictor.engine.decoder is not None
    png = await predictor.engine.decoder.run(explain.overlay_png, photo.pixels, drops)
    explanation = schemas.ExplanationOut(
        target=prediction.label,
        grid_size=grid,
        cell_px=round(model.size / grid, 3),
        base_probability=round(float(probs[0, target]), 6),
        grid=[[float(v) for v in row] for row in drops],
        overlay_png_base64=explain.png_base64(png),
    )
    return schemas.ExplainOut(**prediction.answer(), explanation=explanation)
