"""The V2 binary tensor data extension: a JSON header, then raw tensor bytes.

A body whose `Inference-Header-Content-Length` header is set holds that many bytes of
JSON, then each input's data in input order, `parameters.binary_data_size` bytes each.
Answers do the same for outputs asked for with `binary_data: true` (or all of them, with
the request's `binary_data_output: true`), which is what Triton's and KServe's clients
send by default. Without the header the whole body is JSON, whatever its Content-Type
(Triton's client declares none). Raw tensor bytes are sliced, never copied or parsed.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Response
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from serving import schemas
from serving.json_limits import check_containers
from serving.refusals import Refused

HEADER = "inference-header-content-length"


@dataclass(frozen=True)
class InferRequest:
    """A parsed infer body: its JSON part, and each input's binary data (None for JSON)."""

    body: schemas.InferIn
    binary: list[memoryview | None]


def parse_request(body: bytes, header_length: str | None) -> InferRequest:
    """Split and validate a body; a malformed one is refused before any tensor is read."""
    json_end = len(body) if header_length is None else json_length(header_length, len(body))
    check_containers(memoryview(body)[:json_end])
    try:
        request = schemas.InferIn.model_validate_json(
            body if json_end == len(body) else body[:json_end]
        )
    except ValidationError as exc:  # the app's handler answers 422 with a reason
        errors = exc.errors(include_url=False, include_input=False)
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in errors]) from None
    return InferRequest(request, split_binary(request.inputs, memoryview(body)[json_end:]))


def json_length(value: str, body_length: int) -> int:
    """`Inference-Header-Content-Length` as a byte count within the body."""
    if not value.isdigit() or len(value) > 18 or int(value) > body_length:
        raise Refused(
            "invalid_request",
            f"Inference-Header-Content-Length {value[:20]!r} is not a byte count within the "
            f"{body_length}-byte body.",
        )
    return int(value)


def split_binary(inputs: list[schemas.TensorIn], tail: memoryview) -> list[memoryview | None]:
    """Each input's slice of the binary tail; every byte must belong to one input."""
    parts: list[memoryview | None] = []
    offset = 0
    for tensor in inputs:
        size = binary_size(tensor.parameters, f"Input {tensor.name!r}")
        if size is None:
            if tensor.data is None:
                raise Refused("invalid_tensor", f"Input {tensor.name!r} has no data.")
            parts.append(None)
            continue
        if tensor.data is not None:
            raise Refused("invalid_tensor", f"Input {tensor.name!r} has both data and binary data.")
        if offset + size > len(tail):
            raise Refused(
                "invalid_tensor", f"Input {tensor.name!r} claims {size} bytes of binary data; "
                f"the body has {len(tail) - offset} left.",
            )  # fmt: skip
        parts.append(tail[offset : offset + size])
        offset += size
    if offset != len(tail):
        raise Refused(
            "invalid_tensor", f"{len(tail) - offset} bytes of binary data belong to no input "
            "(missing Inference-Header-Content-Length or binary_data_size?).",
        )  # fmt: skip
    return parts


def binary_size(parameters: dict | None, what: str) -> int | None:
    """`binary_data_size` when present: a non-negative integer (never a bool)."""
    size = (parameters or {}).get("binary_data_size")
    if size is None:
        return None
    if type(size) is not int or size < 0:
        raise Refused("invalid_tensor", f"{what}: binary_data_size must be a byte count.")
    return size


def binary_outputs(request: schemas.InferIn, names: set[str]) -> set[str]:
    """Which of the answered outputs `names` go back as binary data."""
    default = flag((request.parameters or {}).get("binary_data_output"), "binary_data_output")
    chosen = {o.name: o.parameters or {} for o in request.outputs or []}
    if any(parameters.get("classification") for parameters in chosen.values()):
        raise Refused("invalid_tensor", "The classification extension is not supported.")
    return {
        name
        for name in names
        if flag(chosen.get(name, {}).get("binary_data"), f"{name}.binary_data", default)
    }


def flag(value: object, what: str, default: bool = False) -> bool:
    if value is None:
        return default
    if not isinstance(value, bool):
        raise Refused("invalid_tensor", f"Parameter {what} must be true or false.")
    return value


def respond(answer: schemas.InferOut, binary: dict[str, bytes]) -> Response:
    """JSON, or a JSON header followed by the binary outputs in the header's order."""
    header = answer.model_dump_json(exclude_none=True).encode()
    if not binary:
        return Response(header, media_type="application/json")
    tail = [binary[o.name] for o in answer.outputs if o.name in binary]
    return Response(
        b"".join([header, *tail]),
        media_type="application/octet-stream",
        headers={HEADER: str(len(header))},
    )
