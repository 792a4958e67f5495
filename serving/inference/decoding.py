"""Upload bytes -> model-input pixels, in a bounded pool of decode threads.

Decoding is the costliest CPU work a request brings, so it runs off the event loop in
`DecodePool`, whose queue is bounded: when it is full, the request is refused at once
(`decode_queue_full`, retry later) instead of waiting into its deadline.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
from PIL import Image

from contracts import imaging
from serving.cpu_stages import StageCpu
from serving.refusals import Refused

T = TypeVar("T")

# EXIF orientations that swap width and height (rotations by 90 or 270 degrees).
_TRANSPOSING_ORIENTATIONS = {5, 6, 7, 8}


@dataclass(frozen=True)
class DecodedPhoto:
    """One decoded photo: model-input pixels plus what logs and drift monitoring need."""

    pixels: np.ndarray  # uint8 [S, S, 3]
    width: int  # upright size of the upload, before any resizing
    height: int
    sha256: str
    brightness: float  # mean of the model-input pixels in [0, 1]

    def describe(self) -> dict[str, Any]:
        return {
            "width": self.width,
            "height": self.height,
            "brightness": round(self.brightness, 4),
            "sha256": self.sha256,
        }


def upright_size(data: bytes) -> tuple[int, int]:
    """The upload's size as a person sees it (EXIF rotation applied); reads the header only."""
    with Image.open(io.BytesIO(data)) as img:
        width, height = img.size
        try:
            orientation = img.getexif().get(0x0112)
        except Exception:  # a broken EXIF block does not make the photo unusable
            orientation = None
    return (height, width) if orientation in _TRANSPOSING_ORIENTATIONS else (width, height)


def decode_photo(data: bytes, limits: imaging.Limits, size: int, draft: bool) -> DecodedPhoto:
    """Bytes to model input through the image contract (raises ImageError)."""
    img = imaging.decode(data, limits, draft_size=size if draft else None)
    pixels = np.asarray(imaging.fit(img, size), dtype=np.uint8)
    width, height = upright_size(data)
    return DecodedPhoto(
        pixels=pixels,
        width=width,
        height=height,
        sha256=hashlib.sha256(data).hexdigest(),
        # The exact mean, from an integer sum (faster than float64 accumulation).
        brightness=float(pixels.sum(dtype=np.uint64)) / pixels.size / 255.0,
    )


class DecodePool:
    """Decode threads with a bounded queue: `run` refuses when `max_pending` jobs wait."""

    def __init__(
        self, threads: int, max_pending: int, retry_after_s: int, cpu: StageCpu | None = None
    ) -> None:
        self._executor = ThreadPoolExecutor(
            max_workers=max(1, threads), thread_name_prefix="decode"
        )
        self.max_pending = max(1, max_pending)
        self.retry_after_s = retry_after_s
        self.pending = 0  # submitted and not finished (touched on the event loop only)
        self._cpu = cpu  # every job's CPU time counts as "decode"

    async def run(self, func: Callable[..., T], *args: Any) -> T:
        """Run `func` in a decode thread; a cancelled caller frees its slot if not started."""
        if self.pending >= self.max_pending:
            raise Refused(
                "decode_queue_full",
                f"{self.pending} uploads are already waiting to be decoded; retry shortly.",
                self.retry_after_s,
            )
        loop = asyncio.get_running_loop()
        work = self._cpu.timed("decode", func) if self._cpu else func
        job = self._executor.submit(work, *args)
        self.pending += 1
        # The slot frees when the thread is done, not when a timed-out caller gives up.
        job.add_done_callback(lambda _: loop.call_soon_threadsafe(self._finished))
        return await asyncio.wrap_future(job)

    def _finished(self) -> None:
        self.pending -= 1

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
