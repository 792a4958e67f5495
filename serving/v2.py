"""A subset of the Open Inference Protocol (V2), as KServe and Triton clients speak it.

Input `image` is either FP32 `[N, 3, H, W]` in [0, 1] (already preprocessed), or BYTES
`[N]` of base64-encoded image files (decoded with the image contract). Outputs:
`probabilities` FP32 `[N, C]` and `label` BYTES `[N]`. Errors are `{"error": "..."}`
(plus `reason`), as the protocol asks.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from serving.api import decode_base64_image, service_of
from serving.errors import ApiError
from serving.imaging import ImageError
from serving.service import Prepared, Service

router = APIRouter(prefix="/v2", tags=["open inference protocol v2"])


class TensorIn(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    data: list[Any]
    parameters: dict[str, Any] | None = None


class InferRequest(BaseModel):
    id: str | None = None
    inputs: list[TensorIn] = Field(min_length=1)
    outputs: list[dict[str, Any]] | None = None
    parameters: dict[str, Any] | None = None


def model_for(service: Service, name: str):
    model = service.model
    if model is None or name != model.manifest.name:
        raise ApiError(404, "unknown_model", f"Unknown model {name!r}.")
    return model


@router.get("")
async def server_metadata(request: Request) -> dict[str, Any]:
    model = service_of(request).model
    return {
        "name": "cats-dogs-serving",
        "version": model.manifest.version if model else "unloaded",
        "extensions": [],
    }


@router.get("/health/live")
async def server_live() -> dict[str, bool]:
    return {"live": True}


@router.get("/health/ready")
async def server_ready(request: Request) -> JSONResponse:
    ready = service_of(request).ready
    return JSONResponse({"ready": ready}, status_code=200 if ready else 503)


@router.get("/models/{name}")
async def model_metadata(request: Request, name: str) -> dict[str, Any]:
    model = model_for(service_of(request), name)
    s = model.size
    return {
        "name": model.manifest.name,
        "versions": [model.manifest.version],
        "platform": "onnxruntime_onnx",
        "inputs": [
            {"name": model.input_name, "datatype": "FP32", "shape": [-1, 3, s, s]},
            {"name": model.input_name, "datatype": "BYTES", "shape": [-1]},
        ],
        "outputs": [
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, len(model.classes)]},
            {"name": "label", "datatype": "BYTES", "shape": [-1]},
        ],
        "parameters": {"classes": model.classes},
    }


@router.get("/models/{name}/ready")
async def model_ready(request: Request, name: str) -> JSONResponse:
    service = service_of(request)
    model_for(service, name)
    return JSONResponse(
        {"name": name, "ready": service.ready}, status_code=200 if service.ready else 503
    )


def fp32_images(tensor: TensorIn, size: int) -> np.ndarray:
    """An FP32 [N, 3, S, S] tensor in [0, 1] -> uint8 [N, S, S, 3] for the batcher."""
    shape = tensor.shape
    if len(shape) != 4 or shape[1:] != [3, size, size] or shape[0] < 1:
        raise ApiError(400, "invalid_tensor", f"FP32 input must have shape [N, 3, {size}, {size}].")
    try:
        flat = np.asarray(tensor.data, dtype=np.float32).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise ApiError(400, "invalid_tensor", f"FP32 data is not numeric: {exc}") from exc
    if flat.size != int(np.prod(shape)):
        raise ApiError(
            400, "invalid_tensor", f"Data has {flat.size} values; shape needs {np.prod(shape)}."
        )
    if not np.isfinite(flat).all() or flat.min() < 0.0 or flat.max() > 1.0:
        raise ApiError(400, "invalid_tensor", "FP32 values must be finite and in [0, 1].")
    return flat.reshape(shape)


@router.post("/models/{name}/infer")
async def infer(request: Request, name: str, body: InferRequest) -> JSONResponse:
    """Run the model on one input tensor: FP32 pixels or BYTES of encoded images."""
    service = service_of(request)
    model = model_for(service, name)
    service.require_ready()
    if len(body.inputs) != 1:
        raise ApiError(400, "invalid_tensor", "Send exactly one input tensor.")
    tensor = body.inputs[0]
    deadline = request.state.started + service.settings.request_timeout_s
    datatype = tensor.datatype.upper()
    prepared: list[Prepared] = []
    if datatype == "FP32":
        pixels = fp32_images(tensor, model.size)
        # Exact FP32 values cannot join uint8 micro-batches; they run alone, in the same
        # inference thread.
        probs = await service.infer_tensor(np.ascontiguousarray(pixels), deadline)
    elif datatype == "BYTES":
        if len(tensor.shape) != 1 or tensor.shape[0] != len(tensor.data) or not tensor.data:
            raise ApiError(400, "invalid_tensor", "BYTES input must have shape [N] with N items.")
        max_files = service.settings.max_batch_files
        if len(tensor.data) > max_files:
            raise ApiError(413, "too_many_files", f"At most {max_files} images per request.")
        blobs = []
        for item in tensor.data:
            if not isinstance(item, str):
                raise ApiError(400, "invalid_tensor", "BYTES items must be base64 strings.")
            blobs.append(decode_base64_image(item))
        try:
            prepared = [await service.prepare_with_deadline(b, deadline) for b in blobs]
        except ImageError as exc:
            raise ApiError.from_image_error(exc) from exc
        probs, inference_ms = await service.infer(np.stack([p.pixels for p in prepared]), deadline)
        rid, started = request.state.request_id, request.state.started
        for i, (item, row) in enumerate(zip(prepared, probs, strict=True)):
            service.record(f"{rid}.{i}", item, row, inference_ms, started)
    else:
        raise ApiError(400, "invalid_tensor", f"Datatype {tensor.datatype} is not FP32 or BYTES.")
    labels = [model.classes[int(i)] for i in probs.argmax(axis=1)]
    outputs = [
        {
            "name": "probabilities",
            "datatype": "FP32",
            "shape": list(probs.shape),
            "data": [round(float(v), 6) for v in probs.reshape(-1)],
        },
        {"name": "label", "datatype": "BYTES", "shape": [len(labels)], "data": labels},
    ]
    if body.outputs:
        wanted = {o.get("name") for o in body.outputs}
        outputs = [o for o in outputs if o["name"] in wanted]
    answer: dict[str, Any] = {
        "model_name": model.manifest.name,
        "model_version": model.manifest.version,
        "outputs": outputs,
    }
    if body.id is not None:
        answer["id"] = body.id
    return JSONResponse(answer)
