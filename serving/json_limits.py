"""Cheap checks on a JSON body before it is parsed, and parsing off the event loop.

Parsing builds an object per value: 16 MiB of `[],` is 5.6 million lists (about 28× the
body in memory) and freezes the event loop while it is built. No body the service takes
nests more than a few levels or holds more than a few dozen arrays and objects, so one
with more is refused before parsing (`bytes.count` runs at memory speed); what remains
is parsed in a worker thread when it is large.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

from serving.refusals import Refused

MAX_CONTAINERS = 256  # `[` and `{` in one JSON body (a V2 request has about ten)
INLINE_BYTES = 64 * 1024  # smaller bodies are parsed on the loop: a thread hop costs more

T = TypeVar("T")


def check_containers(body: bytes | memoryview) -> None:
    """Refuse a body with more arrays and objects than any real request has."""
    data = bytes(body) if isinstance(body, memoryview) else body
    count = data.count(b"[") + data.count(b"{")
    if count > MAX_CONTAINERS:
        raise Refused(
            "invalid_request",
            f"The JSON body has {count} arrays or objects; at most {MAX_CONTAINERS} are accepted "
            "(tensor data is one flat list).",
        )


async def off_loop(size: int, parse: Callable[[], T]) -> T:
    """`parse()`, in a worker thread when the body is large."""
    if size <= INLINE_BYTES:
        return parse()
    return await asyncio.to_thread(parse)
