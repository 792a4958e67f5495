"""Request and response shapes, for validation and for the OpenAPI page at /docs."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, Field, StrictFloat, StrictInt, StrictStr


class ErrorOut(BaseModel):
    error: str = Field(description="What went wrong, for people.")
    reason: str = Field(description="Stable machine-readable code, e.g. `too_large`.")
    request_id: str | None = None


class PredictionOut(BaseModel):
    label: str
    probabilities: dict[str, float] = Field(description="Probability of each class.")
    confidence: float = Field(description="Probability of the predicted class.")
    model_version: str
    request_id: str
    inference_ms: float = Field(description="ONNX Runtime time of the batch it ran in.")
    ood_score: float | None = Field(
        None,
        description="Out-of-distribution score: how unlike the training photos this one is "
        "(higher = stranger); null when the bundle has no OOD reference.",
    )
    ood_flag: bool | None = Field(
        None,
        description="True when the score is above the bundle's threshold (95 % of validation "
        "cats and dogs pass): probably neither cat nor dog, do not trust the label.",
    )
    feedback_token: str = Field(
        description="Send it with `request_id` to `/feedback`: only the asker can label."
    )


class ImageIn(BaseModel):
    image: str = Field(
        description="Base64 of the encoded image; a `data:image/...;base64,` prefix is accepted."
    )


class BatchItemOut(BaseModel):
    index: int
    filename: str | None
    ok: bool
    request_id: str | None = None
    feedback_token: str | None = None
    label: str | None = None
    probabilities: dict[str, float] | None = None
    confidence: float | None = None
    inference_ms: float | None = None
    model_version: str | None = None
    ood_score: float | None = None
    ood_flag: bool | None = None
    error: str | None = None
    reason: str | None = None
    status: int | None = Field(None, description="HTTP status this photo alone would get.")


class BatchOut(BaseModel):
    request_id: str
    model_version: str
    count: int
    results: list[BatchItemOut]


class ExplanationOut(BaseModel):
    method: str = "occlusion"
    target: str = Field(description="The class explained (the predicted one).")
    grid_size: int
    cell_px: float
    base_probability: float
    grid: list[list[float]] = Field(
        description="Drop of the target's probability when each cell is greyed out (row-major)."
    )
    overlay_png_base64: str = Field(description="The model input with the heat overlaid, PNG.")


class ExplainOut(PredictionOut):
    explanation: ExplanationOut


class HealthOut(BaseModel):
    status: str
    model_loaded: bool
    model_version: str | None
    timestamp: str
    error: str | None = None


class FeedbackIn(BaseModel):
    request_id: str = Field(min_length=1, max_length=128)
    feedback_token: str = Field(
        min_length=1, max_length=128, description="The prediction's `feedback_token`."
    )
    label: str = Field(min_length=1, max_length=64)


class FeedbackOut(BaseModel):
    request_id: str
    label: str
    predicted_label: str
    correct: bool
    stored: bool = Field(description="False when the same feedback was already stored.")


class StatsOut(BaseModel):
    predictions: int
    per_class: dict[str, int]
    average_confidence: float | None
    average_inference_ms: float | None
    uptime_s: float
    model_version: str | None
    queued_images: int


class RegistryOut(BaseModel):
    """The promotion record (registry.json) of the served bundle."""

    name: str
    version: str
    alias: str | None
    bundle_version: str
    data_version: str | None
    git_revision: str | None
    run_id: str | None
    promoted_at: str
    promoted_by: str
    reason: str


class ShadowOut(BaseModel):
    """The challenger scored in the shadow of the served model, when one is loaded."""

    name: str
    version: str
    share: float
    queue_max: int


class ModelInfoOut(BaseModel):
    name: str
    version: str
    architecture: str | None
    classes: list[str]
    input: dict[str, Any]
    output: dict[str, Any] | None
    metrics: dict[str, Any]
    data_version: str | None
    git_revision: str | None
    mlflow_run_id: str | None
    created_at: str | None
    sha256: str | None
    promoted: bool = False  # a trusted registry.json is beside the bundle
    registry: RegistryOut | None = None
    registry_error: str | None = None  # a registry.json present but not trusted
    shadow: ShadowOut | None = None


class LiveOut(BaseModel):
    status: str


class ReadyOut(BaseModel):
    status: str
    why: str | None = None


# -- Open Inference Protocol V2 (the subset served; see serving/routes/v2.py) ----------


class TensorIn(BaseModel):
    name: str = Field(max_length=64)
    shape: list[int] = Field(max_length=8)
    datatype: str = Field(max_length=16)
    data: (
        Annotated[list[StrictFloat | StrictInt], Field(fail_fast=True)]
        | Annotated[list[StrictStr], Field(fail_fast=True)]
        | None
    ) = Field(
        None,
        description="Row-major values, one flat list: numbers (FP32) or base64 strings (BYTES); "
        "absent when `parameters.binary_data_size` is set.",
        union_mode="left_to_right",
    )
    parameters: dict[str, Any] | None = None


class OutputIn(BaseModel):
    name: str = Field(max_length=64)
    parameters: dict[str, Any] | None = None


class InferIn(BaseModel):
    id: str | None = Field(None, max_length=256)
    inputs: list[TensorIn] = Field(min_length=1, max_length=1)
    outputs: list[OutputIn] | None = Field(None, max_length=8)
    parameters: dict[str, Any] | None = None


class TensorOut(BaseModel):
    name: str
    datatype: str
    shape: list[int]
    data: list[float] | list[str] | None = Field(
        None, description="Absent when the output is sent as binary data."
    )
    parameters: dict[str, Any] | None = Field(
        None, description="`binary_data_size` of an output sent as binary data."
    )


class InferOut(BaseModel):
    model_name: str
    model_version: str
    id: str | None = None
    outputs: list[TensorOut]


class ServerMetadataOut(BaseModel):
    name: str
    version: str
    extensions: list[str]


class TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int]


class ModelMetadataOut(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]
    parameters: dict[str, Any]


class ServerLiveOut(BaseModel):
    live: bool


class ServerReadyOut(BaseModel):
    ready: bool


class ModelReadyOut(BaseModel):
    name: str
    ready: bool
