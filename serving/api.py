"""The service's own REST endpoints (the original project's plus batch, explain, feedback)."""

from __future__ import annotations

import asyncio
import base64
import binascii
import importlib
import logging
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, File, Request, UploadFile
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from serving import explain, schemas
from serving.errors import IMAGE_REASON_STATUS, ApiError
from serving.imaging import ImageError
from serving.logs import utc_now
from serving.service import Prepared, Service

log = logging.getLogger("serving.api")
router = APIRouter()

ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": schemas.ErrorOut} for code in (400, 401, 404, 413, 415, 422, 503, 504)
}
RAW_IMAGE_BODY = {
    "requestBody": {
        "content": {
            "image/*": {"schema": {"type": "string", "format": "binary"}},
        }
    }
}


def service_of(request: Request) -> Service:
    return request.app.state.service


def deadline_of(request: Request, service: Service) -> float:
    return request.state.started + service.settings.request_timeout_s


async def image_bytes(request: Request, file: UploadFile | None) -> bytes:
    """The uploaded image: multipart field `file`, or the raw body sent as `image/*`."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "multipart/form-data":
        if file is None:
            raise ApiError(422, "missing_field", "The form has no image in field 'file'.")
        return await file.read()
    if content_type.startswith("image/"):
        return await request.body()
    raise ApiError(
        415,
        "unsupported_media_type",
        f"Send the image as multipart field 'file' or as a raw image/* body, "
        f"not {content_type or 'no content type'}.",
    )


def decode_base64_image(text: str) -> bytes:
    """Base64 (optionally a data URL) to bytes; refuses non-image data URLs and bad padding."""
    text = text.strip()
    if text.startswith("data:"):
        header, sep, text = text.partition(",")
        mime = header[5:].split(";")[0].strip().lower()
        if not sep or ";base64" not in header:
            raise ApiError(400, "bad_base64", "A data URL must be `data:image/...;base64,...`.")
        if not mime.startswith("image/"):
            raise ApiError(415, "unsupported_media_type", f"The data URL holds {mime}, not image.")
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ApiError(400, "bad_base64", f"The image is not valid base64: {exc}") from exc


def note_prediction(request: Request, prepared: Prepared, result: dict[str, Any]) -> None:
    """Put what the access log line reports into the request state."""
    request.state.label = result["label"]
    request.state.confidence = result["confidence"]
    request.state.image = {
        "width": prepared.width,
        "height": prepared.height,
        "sha256": prepared.sha256,
    }


async def predict_bytes(request: Request, data: bytes) -> dict[str, Any]:
    service = service_of(request)
    service.require_ready()
    deadline = deadline_of(request, service)
    prepared = await service.prepare_with_deadline(data, deadline)
    probs, inference_ms = await service.infer(prepared.pixels[None], deadline)
    result = service.record(
        request.state.request_id, prepared, probs[0], inference_ms, request.state.started
    )
    note_prediction(request, prepared, result)
    return result


# -- health -------------------------------------------------------------------------


@router.get("/health", response_model=schemas.HealthOut, tags=["health"])
async def health(request: Request) -> JSONResponse:
    """Overall health: 200 only when the model is loaded, warmed up and not draining."""
    service = service_of(request)
    model = service.model
    if service.ready:
        status = "ok"
    elif service.draining:
        status = "draining"
    else:
        status = "unavailable"
    body = {
        "status": status,
        "model_loaded": model is not None and service.warmed,
        "model_version": model.manifest.version if model else None,
        "timestamp": utc_now(),
    }
    if service.load_error:
        body["error"] = service.load_error
    return JSONResponse(body, status_code=200 if service.ready else 503)


@router.get("/health/live", tags=["health"])
async def live() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "alive"}


@router.get("/health/ready", tags=["health"])
async def ready(request: Request) -> JSONResponse:
    """Readiness: bundle loaded, warm-up prediction passed, not draining."""
    service = service_of(request)
    if service.ready:
        return JSONResponse({"status": "ready"})
    why = "draining" if service.draining else (service.load_error or "loading")
    return JSONResponse({"status": "not_ready", "why": why}, status_code=503)


# -- predictions ----------------------------------------------------------------------


@router.post(
    "/predict",
    response_model=schemas.PredictionOut,
    responses=ERRORS,
    openapi_extra=RAW_IMAGE_BODY,
    tags=["predict"],
)
async def predict(
    request: Request,
    file: Annotated[
        UploadFile | None, File(description="The photo (JPEG, PNG, WebP, ...).")
    ] = None,
) -> JSONResponse:
    """Classify one photo sent as multipart field `file` or as a raw `image/*` body."""
    data = await image_bytes(request, file)
    return JSONResponse(await predict_bytes(request, data))


@router.post(
    "/predict-image", response_model=schemas.PredictionOut, responses=ERRORS, tags=["predict"]
)
async def predict_image(request: Request, payload: schemas.ImageIn) -> JSONResponse:
    """Classify one photo sent as base64 JSON (the original project's clients)."""
    data = decode_base64_image(payload.image)
    return JSONResponse(await predict_bytes(request, data))


@router.post("/predict/batch", response_model=schemas.BatchOut, responses=ERRORS, tags=["predict"])
async def predict_batch(
    request: Request,
    files: Annotated[list[UploadFile], File(description="Up to MAX_BATCH_FILES photos.")],
) -> JSONResponse:
    """Classify several photos; a bad photo gets its own error and does not fail the rest."""
    service = service_of(request)
    model = service.require_ready()
    limit = service.settings.max_batch_files
    if len(files) > limit:
        raise ApiError(413, "too_many_files", f"{len(files)} files sent; the limit is {limit}.")
    deadline = deadline_of(request, service)
    request_id = request.state.request_id
    blobs = [await f.read() for f in files]
    prepared = await asyncio.gather(
        *(service.prepare_with_deadline(b, deadline) for b in blobs), return_exceptions=True
    )
    for item in prepared:
        if isinstance(item, ApiError) and item.reason in ("timeout", "not_ready"):
            raise item
    good = [(i, p) for i, p in enumerate(prepared) if isinstance(p, Prepared)]
    probs = np.empty((0, len(model.classes)), dtype=np.float32)
    inference_ms = 0.0
    if good:
        probs, inference_ms = await service.infer(np.stack([p.pixels for _, p in good]), deadline)
    row_of = {i: row for row, (i, _) in enumerate(good)}
    results: list[dict[str, Any]] = []
    for i, (upload, item) in enumerate(zip(files, prepared, strict=True)):
        entry: dict[str, Any] = {"index": i, "filename": upload.filename}
        if isinstance(item, Prepared):
            result = service.record(
                f"{request_id}.{i}", item, probs[row_of[i]], inference_ms, request.state.started
            )
            entry.update(ok=True, **result)
        elif isinstance(item, ImageError):
            service.metrics.rejected.labels(reason=item.reason).inc()
            status = IMAGE_REASON_STATUS.get(item.reason, 400)
            entry.update(ok=False, error=item.message, reason=item.reason, status=status)
        else:
            raise item  # an unexpected failure is the server's, not the photo's
        results.append(entry)
    request.state.images = len(files)
    body = {
        "request_id": request_id,
        "model_version": model.manifest.version,
        "count": len(results),
        "results": results,
    }
    return JSONResponse(body)


@router.post(
    "/explain",
    response_model=schemas.ExplainOut,
    responses=ERRORS,
    openapi_extra=RAW_IMAGE_BODY,
    tags=["predict"],
)
async def explain_image(
    request: Request,
    file: Annotated[UploadFile | None, File(description="The photo to explain.")] = None,
) -> JSONResponse:
    """Predict and show which regions drove it (occlusion heatmap, no torch needed)."""
    service = service_of(request)
    model = service.require_ready()
    data = await image_bytes(request, file)
    deadline = deadline_of(request, service)
    prepared = await service.prepare_with_deadline(data, deadline)
    grid = max(2, service.settings.explain_grid)
    variants = explain.occlusion_variants(prepared.pixels, grid)
    probs, inference_ms = await service.infer(variants, deadline)
    result = service.record(
        request.state.request_id, prepared, probs[0], inference_ms, request.state.started
    )
    note_prediction(request, prepared, result)
    target = model.classes.index(result["label"])
    drops = explain.occlusion_grid(probs, target, grid)
    png = await service.off_loop(explain.overlay_png, prepared.pixels, drops)
    result["explanation"] = {
        "method": "occlusion",
        "target": result["label"],
        "grid_size": grid,
        "cell_px": round(model.size / grid, 3),
        "base_probability": round(float(probs[0, target]), 6),
        "grid": [[float(v) for v in row] for row in drops],
        "overlay_png_base64": explain.png_base64(png),
    }
    return JSONResponse(result)


# -- feedback -------------------------------------------------------------------------


@router.post("/feedback", response_model=schemas.FeedbackOut, responses=ERRORS, tags=["monitor"])
async def feedback(request: Request, payload: schemas.FeedbackIn) -> JSONResponse:
    """Record the true label of an earlier prediction (stored once per id and label)."""
    service = service_of(request)
    service.require_ready()
    assert service.feedback is not None
    result = await asyncio.to_thread(service.feedback.record, payload.request_id, payload.label)
    if result["stored"]:
        service.metrics.feedback.labels(label=payload.label).inc()
        service.metrics.live_accuracy.set(service.feedback.accuracy)
    return JSONResponse(result)


# -- information ----------------------------------------------------------------------


@router.get("/model-info", response_model=schemas.ModelInfoOut, responses=ERRORS, tags=["info"])
async def model_info(request: Request) -> JSONResponse:
    """The loaded bundle's manifest: identity, classes, input, real test metrics, lineage."""
    model = service_of(request).model
    if model is None:
        raise ApiError(503, "not_ready", "No model is loaded.")
    raw = model.manifest.model_dump()
    keys = ("architecture", "output", "data_version", "git_revision", "mlflow_run_id")
    body: dict[str, Any] = {
        "name": model.manifest.name,
        "version": model.manifest.version,
        "classes": model.classes,
        "input": raw.get("input", {}),
        "metrics": raw.get("metrics", {}),
        "created_at": raw.get("created_at"),
        "sha256": raw.get("sha256"),
        **{k: raw.get(k) for k in keys},
    }
    return JSONResponse(body)


@router.get("/stats", response_model=schemas.StatsOut, tags=["info"])
async def stats(request: Request) -> JSONResponse:
    """Predictions since start: count, per class, average confidence and inference time."""
    service = service_of(request)
    body = service.stats.as_dict()
    body["model_version"] = service.model.manifest.version if service.model else None
    body["queued_images"] = service.batcher.queued_images if service.batcher else 0
    return JSONResponse(body)


@router.get("/metrics", tags=["info"], response_class=Response)
async def metrics(request: Request) -> Response:
    """Prometheus text format; drift gauges are computed now, at scrape time."""
    service = service_of(request)
    publish_drift(service)
    if service.feedback is not None:
        service.metrics.live_accuracy.set(service.feedback.accuracy)
    return Response(generate_latest(service.metrics.registry), media_type=CONTENT_TYPE_LATEST)


def publish_drift(service: Service) -> None:
    """Call `serving.drift.drift_report` on the recent window, if that module exists."""
    if service.model is None or not service.recent:
        return
    try:
        drift = importlib.import_module("serving.drift")
    except ModuleNotFoundError as exc:
        if exc.name == "serving.drift":
            return  # drift monitoring is not installed
        log.warning("serving.drift cannot be imported", exc_info=True)
        return
    try:
        labels, confidences, brightness = (list(col) for col in zip(*service.recent, strict=True))
        report = drift.drift_report(
            reference=service.model.manifest.reference.model_dump(),
            labels=labels,
            confidences=confidences,
            brightness=brightness,
            classes=service.model.classes,
        )
        # Only this report's features: one left out (too few samples) must not go stale.
        service.metrics.drift_psi.clear()
        for feature, value in report.items():
            service.metrics.drift_psi.labels(feature=str(feature)).set(float(value))
    except Exception:  # monitoring must never break a scrape
        log.warning("Drift report failed", exc_info=True)
