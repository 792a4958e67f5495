"""JSON bodies parsed by pydantic-core's Rust parser instead of `json.loads`.

A V2 FP32 tensor is a JSON list of 150,528 numbers per image; `json.loads` takes about
five times longer to parse it, on the event loop. Every router uses `JSONRoute`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any

import pydantic_core
from fastapi import Request, Response
from fastapi.routing import APIRoute


class JSONRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            try:
                self._json = pydantic_core.from_json(body)
            except ValueError as exc:  # FastAPI answers JSONDecodeError with a 422
                raise json.JSONDecodeError(str(exc), body.decode("latin-1")[:100], 0) from exc
        return self._json


class JSONRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def with_fast_json(request: Request) -> Response:
            return await handler(JSONRequest(request.scope, request.receive))

        return with_fast_json
