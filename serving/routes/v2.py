"""A subset of the Open Inference Protocol (V2), as KServe and Triton clients speak it.

Input `image` is either FP32 `[N, 3, H, W]` in [0, 1] (already preprocessed), or BYTES
`[N]` of image files (base64 text in JSON, raw bytes in binary tensor data; decoded with
the image contract). Bodies are JSON or use the binary tensor data extension
(serving/routes/v2_binary.py), whatever their Content-Type. Every form goes through the
same limits, micro-batcher and deadline as uploads. Outputs: `probabilities` FP32
`[N, C]` and `label` BYTES `[N]`, each as JSON or binary data as asked. Errors are
`{"error": "..."}` (plus `reason`), as the protocol asks.
"""

from __future__ import annotations

from typing import Annotated

import numpy as np
from fastapi import APIRouter, Depends, Request, Response

from contracts.imaging import ImageError
from serving import schemas
from serving.dependencies import CurrentCall, EngineDep, ReadyPredictor
from serving.inference.onnx_model import Model
from serving.inference.prediction import Call
from serving.inference.predictor import Predictor
from serving.inference.tensors import (
    binary_bytes,
    bytes_count,
    bytes_from_binary,
    fp32_from_bytes,
    fp32_images,
)
from serving.json_limits import off_loop
from serving.refusals import Refused
from serving.routes import v2_binary
from serving.routes.json_route import JSONRoute
from serving.routes.uploads import decode_base64_image

router = APIRouter(prefix="/v2", tags=["open inference protocol v2"], route_class=JSONRoute)
OUTPUTS = ("probabilities", "label")
EXTENSIONS = ("binary_tensor_data",)


async def named_model(name: str, engine: EngineDep) -> Model:
    """The loaded model, if `name` (the path's `{name}`) is its name."""
    model = engine.model
    if model is None or name != model.manifest.name:
        raise Refused("unknown_model", f"Unknown model {name[:100]!r}.")
    return model


NamedModel = Annotated[Model, Depends(named_model)]


@router.get("")
async def server_metadata(engine: EngineDep) -> schemas.ServerMetadataOut:
    version = engine.model.manifest.version if engine.model else "unloaded"
    return schemas.ServerMetadataOut(
        name="cats-dogs-serving", version=version, extensions=list(EXTENSIONS)
    )


@router.get("/health/live")
async def server_live(engine: EngineDep, response: Response) -> schemas.ServerLiveOut:
    response.status_code = 200 if engine.live else 503
    return schemas.ServerLiveOut(live=engine.live)


@router.get("/health/ready")
async def server_ready(engine: EngineDep, response: Response) -> schemas.ServerReadyOut:
    response.status_code = 200 if engine.ready else 503
    return schemas.ServerReadyOut(ready=engine.ready)


@router.get("/models/{name}")
async def model_metadata(model: NamedModel) -> schemas.ModelMetadataOut:
    s, classes = model.size, model.classes
    tensor = schemas.TensorMetadata
    return schemas.ModelMetadataOut(
        name=model.manifest.name,
        versions=[model.manifest.version],
        platform="onnxruntime_onnx",
        inputs=[
            tensor(name=model.input_name, datatype="FP32", shape=[-1, 3, s, s]),
            tensor(name=model.input_name, datatype="BYTES", shape=[-1]),
        ],
        outputs=[
            tensor(name="probabilities", datatype="FP32", shape=[-1, len(classes)]),
            tensor(name="label", datatype="BYTES", shape=[-1]),
        ],
        parameters={"classes": classes},
    )


@router.get("/models/{name}/ready")
async def model_ready(
    model: NamedModel, engine: EngineDep, response: Response
) -> schemas.ModelReadyOut:
    response.status_code = 200 if engine.ready else 503
    return schemas.ModelReadyOut(name=model.manifest.name, ready=engine.ready)


async def versioned_model(name: str, version: str, engine: EngineDep) -> Model:
    """The loaded model, if the path names it and its version."""
    model = await named_model(name, engine)
    if version != model.manifest.version:
        raise Refused("unknown_model", f"Model {name!r} has no version {version[:100]!r}.")
    return model


VersionedModel = Annotated[Model, Depends(versioned_model)]


def inlined(schema: dict) -> dict:
    """A pydantic JSON schema with its `$defs` references inlined (none are recursive)."""
    defs = schema.pop("$defs", {})

    def walk(node: object) -> object:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return walk(defs[ref.removeprefix("#/$defs/")])
            return {k: walk(v) for k, v in node.items()}
        return [walk(v) for v in node] if isinstance(node, list) else node

    return walk(schema)  # type: ignore[return-value]


# The body is read raw (binary tensor data, or JSON with no Content-Type): documented here.
INFER_BODY = {
    "requestBody": {
        "required": True,
        "description": "JSON, or with `Inference-Header-Content-Length: n` a JSON header of "
        "n bytes followed by each input's binary data (`parameters.binary_data_size`).",
        "content": {
            "application/json": {"schema": inlined(schemas.InferIn.model_json_schema())},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}


@router.post("/models/{name}/infer", response_model=schemas.InferOut, openapi_extra=INFER_BODY)
async def infer(
    model: NamedModel, request: Request, predictor: ReadyPredictor, call: CurrentCall
) -> Response:
    """Run the model on one input tensor: FP32 pixels or BYTES of encoded images, as JSON
    or as binary tensor data."""
    return await answer(model, request, predictor, call)


@router.post(
    "/models/{name}/versions/{version}/infer",
    response_model=schemas.InferOut,
    openapi_extra=INFER_BODY,
)
async def infer_version(
    model: VersionedModel, request: Request, predictor: ReadyPredictor, call: CurrentCall
) -> Response:
    """The same, for clients that name the model's version."""
    return await answer(model, request, predictor, call)


async def answer(model: Model, request: Request, predictor: Predictor, call: Call) -> Response:
    """Body -> tensor -> model -> outputs, each as JSON or binary as the client asked."""
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding != "identity":
        raise Refused("unsupported_media_type", f"Content-Encoding {encoding[:20]!r} is "
                      "not accepted; send the body uncompressed.")  # fmt: skip
    raw, header = await request.body(), request.headers.get(v2_binary.HEADER)
    parsed = await off_loop(len(raw), lambda: v2_binary.parse_request(raw, header))
    body = parsed.body
    wanted = requested_outputs(body)
    binary = v2_binary.binary_outputs(body, wanted)
    probs, labels = await run_tensor(body.inputs[0], parsed.binary[0], model, predictor, call)
    outputs, raw = encode_outputs(probs, labels, [n for n in OUTPUTS if n in wanted], binary)
    out = schemas.InferOut(model_name=model.manifest.name, model_version=model.manifest.version,
                           id=body.id, outputs=outputs)  # fmt: skip
    return v2_binary.respond(out, raw)


def encode_outputs(
    probs: np.ndarray, labels: list[str], names: list[str], binary: set[str]
) -> tuple[list[schemas.TensorOut], dict[str, bytes]]:
    """The outputs `names`: JSON data, or binary data (returned apart) for those in `binary`."""
    shapes = {"probabilities": list(probs.shape), "label": [len(labels)]}
    outputs, raw = [], {}
    for name in names:
        datatype = "FP32" if name == "probabilities" else "BYTES"
        tensor = schemas.TensorOut(name=name, datatype=datatype, shape=shapes[name])
        if name in binary:
            raw[name] = probs.astype("<f4").tobytes() if name == "probabilities" else (
                binary_bytes(labels))  # fmt: skip
            tensor.parameters = {"binary_data_size": len(raw[name])}
        else:
            tensor.data = (
                [round(float(v), 6) for v in probs.ravel()] if name == "probabilities" else labels
            )
        outputs.append(tensor)
    return outputs, raw


async def run_tensor(
    tensor: schemas.TensorIn,
    raw: memoryview | None,
    model: Model,
    predictor: Predictor,
    call: Call,
) -> tuple[np.ndarray, list[str]]:
    """FP32 pixels or BYTES of encoded images, as JSON or binary -> (probabilities, labels)."""
    limit = predictor.max_images
    datatype = tensor.datatype.upper()
    if tensor.name != model.input_name:
        raise Refused("invalid_tensor", f"The model's input is {model.input_name!r}, "
                      f"not {tensor.name!r}.")  # fmt: skip
    if datatype == "FP32":
        if raw is None:
            images = fp32_images(tensor.shape, tensor.data or [], model.size, limit)
        else:
            images = fp32_from_bytes(tensor.shape, raw, model.size, limit)
        probs = await predictor.predict_tensor(images, call)
        return probs, [model.classes[int(i)] for i in probs.argmax(axis=1)]
    if datatype == "BYTES":
        if raw is None:
            items = bytes_items(tensor, limit)
        else:
            items = bytes_from_binary(tensor.shape, raw, limit)
        return await predict_files(items, model, predictor, call)
    raise Refused("invalid_tensor", f"Datatype {tensor.datatype} is not FP32 or BYTES.")


async def predict_files(
    items: list[bytes], model: Model, predictor: Predictor, call: Call
) -> tuple[np.ndarray, list[str]]:
    """Encoded image files through the image contract; one bad file refuses the request."""
    predictions = []
    for result in await predictor.predict_many(items, call):
        if isinstance(result, ImageError):
            raise result
        predictions.append(result)
    rows = [[p.probabilities[c] for c in model.classes] for p in predictions]
    return np.asarray(rows, dtype=np.float32), [p.label for p in predictions]


def requested_outputs(body: schemas.InferIn) -> set[str]:
    """The outputs asked for (all when none are named); unknown names are refused."""
    if not body.outputs:
        return set(OUTPUTS)
    names = {o.name for o in body.outputs}
    unknown = names - set(OUTPUTS)
    if unknown:
        raise Refused("invalid_tensor", f"Unknown output(s) {sorted(unknown)[:4]}; "
                      f"the model has {list(OUTPUTS)}.")  # fmt: skip
    return names


def bytes_items(tensor: schemas.TensorIn, max_items: int) -> list[bytes]:
    """BYTES input as JSON: shape [N] and N base64 strings, at most `max_items`."""
    data = tensor.data or []
    if bytes_count(tensor.shape, max_items) != len(data):
        raise Refused("invalid_tensor", "BYTES input must have shape [N] with N items.")
    if not all(isinstance(item, str) for item in data):
        raise Refused("invalid_tensor", "BYTES items must be base64 strings.")
    return [decode_base64_image(item) for item in data]
