"""POST /predict, /predict-image and /predict/batch: photos in, labels out."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Request, UploadFile

from contracts.imaging import ImageError
from serving import schemas
from serving.dependencies import CurrentCall, MetricsDep, ReadyPredictor, SignerDep
from serving.errors import status_of
from serving.inference.prediction import Prediction
from serving.routes.json_route import JSONRoute
from serving.routes.uploads import (
    RAW_IMAGE_BODY,
    decode_base64_image,
    printable_filename,
    uploaded_image,
)
from serving.tokens import FeedbackSigner

router = APIRouter(tags=["predict"], route_class=JSONRoute)

ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": schemas.ErrorOut} for code in (400, 401, 404, 408, 413, 415, 422, 503, 504)
}


def signed(prediction: Prediction, signer: FeedbackSigner) -> dict[str, Any]:
    """The public answer with the feedback token only this client receives."""
    return {**prediction.answer(), "feedback_token": signer.token(prediction.request_id)}


def note_prediction(request: Request, prediction: Prediction) -> None:
    """Put what the access log line reports into the request state."""
    request.state.label = prediction.label
    request.state.confidence = prediction.confidence
    if prediction.image is not None:
        image = prediction.image
        request.state.image = {"width": image.width, "height": image.height, "sha256": image.sha256}


@router.post("/predict", responses=ERRORS, openapi_extra=RAW_IMAGE_BODY)
async def predict(
    request: Request,
    data: Annotated[bytes, Depends(uploaded_image)],
    predictor: ReadyPredictor,
    call: CurrentCall,
    signer: SignerDep,
) -> schemas.PredictionOut:
    """Classify one photo sent as multipart field `file` or as a raw `image/*` body."""
    prediction, _ = await predictor.predict_one(data, call)
    note_prediction(request, prediction)
    return schemas.PredictionOut(**signed(prediction, signer))


@router.post("/predict-image", responses=ERRORS)
async def predict_image(
    request: Request,
    payload: schemas.ImageIn,
    predictor: ReadyPredictor,
    call: CurrentCall,
    signer: SignerDep,
) -> schemas.PredictionOut:
    """Classify one photo sent as base64 JSON (the original project's clients)."""
    prediction, _ = await predictor.predict_one(decode_base64_image(payload.image), call)
    note_prediction(request, prediction)
    return schemas.PredictionOut(**signed(prediction, signer))


@router.post("/predict/batch", responses=ERRORS)
async def predict_batch(
    request: Request,
    files: Annotated[list[UploadFile], File(description="Up to MAX_BATCH_FILES photos.")],
    predictor: ReadyPredictor,
    call: CurrentCall,
    metrics: MetricsDep,
    signer: SignerDep,
) -> schemas.BatchOut:
    """Classify several photos; a bad photo gets its own error and does not fail the rest."""
    predictor.check_count(len(files))
    blobs = [await f.read() for f in files]
    results = await predictor.predict_many(blobs, call)
    request.state.images = len(files)
    for result in results:
        if isinstance(result, ImageError):
            metrics.rejected.labels(reason=result.reason).inc()
    items = [
        batch_item(i, printable_filename(upload.filename), result, signer)
        for i, (upload, result) in enumerate(zip(files, results, strict=True))
    ]
    version = predictor.engine.require_model().manifest.version
    return schemas.BatchOut(
        request_id=call.request_id, model_version=version, count=len(items), results=items
    )


def batch_item(
    index: int, filename: str | None, result: Prediction | ImageError, signer: FeedbackSigner
) -> schemas.BatchItemOut:
    if isinstance(result, ImageError):
        return schemas.BatchItemOut(
            index=index, filename=filename, ok=False, error=result.message,
            reason=result.reason, status=status_of(result.reason),
        )  # fmt: skip
    return schemas.BatchItemOut(index=index, filename=filename, ok=True, **signed(result, signer))
