"""How an image arrives in a request: multipart field, raw `image/*` body, or base64."""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any

from fastapi import File, Request, UploadFile

from serving.refusals import Refused

# OpenAPI: the one-image routes also take the photo as a raw image/* body.
RAW_IMAGE_BODY: dict[str, Any] = {
    "requestBody": {"content": {"image/*": {"schema": {"type": "string", "format": "binary"}}}}
}


async def uploaded_image(
    request: Request,
    file: Annotated[
        UploadFile | None, File(description="The photo (JPEG, PNG, WebP, ...).")
    ] = None,
) -> bytes:
    """The uploaded image: multipart field `file`, or the raw body sent as `image/*`."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "multipart/form-data":
        if file is None:
            raise Refused("missing_field", "The form has no image in field 'file'.")
        return await file.read()
    if content_type.startswith("image/"):
        return await request.body()
    raise Refused(
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
            raise Refused("bad_base64", "A data URL must be `data:image/...;base64,...`.")
        if not mime.startswith("image/"):
            raise Refused("unsupported_media_type", f"The data URL holds {mime}, not image.")
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise Refused("bad_base64", f"The image is not valid base64: {exc}") from exc


def printable_filename(name: str | None) -> str | None:
    """A client's file name, safe to put in JSON (lone surrogates become U+FFFD)."""
    if name is None:
        return None
    return name.encode("utf-8", "replace").decode("utf-8", "replace")[:256]
