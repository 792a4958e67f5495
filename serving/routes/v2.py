"""A subset of the Open Inference Protocol (V2), as KServe and Triton clients speak it.

Input `image` is either FP32 `[N, 3, H, W]` in [0, 1] (already preprocessed), or BYTES
`[N]` of base64-encoded image files (decoded with the image contract). Both go through
the same limits, micro-batcher and deadline as uploads. Outputs: `probabilities` FP32
`[N, C]` and `label` BYTES `[N]`. Errors are `{"error": "..."}` (plus `reason`), as the
protocol asks.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Response

from contracts.imaging import ImageError
from serving import schemas
from serving.dependencies import CurrentCall, EngineDep, ReadyPredictor
from serving.inference.onnx_model import Model
from serving.inference.prediction import Call
from serving.inference.predictor import Predictor
from serving.inference.tensors import fp32_images
from serving.refusals import Refused
from serving.routes.json_route import JSONRoute
from serving.routes.uploads import decode_base64_image

router = APIRouter(prefix="/v2", tags=["open inference protocol v2"], route_class=JSONRoute)
OUTPUTS = ("probabilities", "label")


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
    return schemas.ServerMetadataOut(name="cats-dogs-serving", version=version, extensions=[])


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


@router.post("/models/{name}/infer")
async def infer(
    model: NamedModel, body: schemas.InferIn, predictor: ReadyPredictor, call: CurrentCall
) -> schemas.InferOut:
    """Run the model on one input tensor: FP32 pixels or BYTES of encoded images."""
    wanted = requested_outputs(body)
    probs, labels = await run_tensor(body.inputs[0], model, predictor, call)
    outputs = [
        schemas.TensorOut(
            name="probabilities", datatype="FP32", shape=[len(labels), len(model.classes)],
            data=[round(float(v), 6) for row in probs for v in row],
        ),
        schemas.TensorOut(name="label", datatype="BYTES", shape=[len(labels)], data=labels),
    ]  # fmt: skip
    return schemas.InferOut(
        model_name=model.manifest.name,
        model_version=model.manifest.version,
        id=body.id,
        outputs=[o for o in outputs if o.name in wanted],
    )


async def run_tensor(
    tensor: schemas.TensorIn, model: Model, predictor: Predictor, call: Call
) -> tuple[list[list[float]], list[str]]:
    """FP32 pixels or BYTES of encoded images -> (probability rows, labels)."""
    limit = predictor.max_images
    datatype = tensor.datatype.upper()
    if datatype == "FP32":
        images = fp32_images(tensor.shape, tensor.data, model.size, limit)
        probs = await predictor.predict_tensor(images, call)
        return probs.tolist(), [model.classes[int(i)] for i in probs.argmax(axis=1)]
    if datatype == "BYTES":
        results = await predictor.predict_many(bytes_items(tensor, limit), call)
        predictions = []
        for result in results:
            if isinstance(result, ImageError):
                raise result
            predictions.append(result)
        rows = [[p.probabilities[c] for c in model.classes] for p in predictions]
        return rows, [p.label for p in predictions]
    raise Refused("invalid_tensor", f"Datatype {tensor.datatype} is not FP32 or BYTES.")


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
    """BYTES input: shape [N] and N base64 strings, at most `max_items`."""
    if len(tensor.shape) != 1 or tensor.shape[0] != len(tensor.data) or not tensor.data:
        raise Refused("invalid_tensor", "BYTES input must have shape [N] with N items.")
    if len(tensor.data) > max_items:
        raise Refused("too_many_files", f"At most {max_items} images per request.")
    if not all(isinstance(item, str) for item in tensor.data):
        raise Refused("invalid_tensor", "BYTES items must be base64 strings.")
    return [decode_base64_image(item) for item in tensor.data]
