"""JSON bodies parsed by pydantic-core's Rust parser instead of `json.loads`, off the loop.

`json.loads` takes about five times longer; a large body is parsed in a worker thread
after serving/json_limits.py's container check, so the event loop (and the probes it
answers) never waits for it. Every router with a JSON body uses `JSONRoute`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any

import pydantic_core
from fastapi import Request, Response
from fastapi.routing import APIRoute

from serving.json_limits import check_containers, off_loop


class JSONRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            check_containers(body)
            try:
                self._json = await off_loop(len(body), lambda: pydantic_core.from_json(body))
            except ValueError as exc:  # FastAPI answers JSONDecodeError with a 422
                raise json.JSONDecodeError(str(exc), body.decode("latin-1")[:100], 0) from exc
        return self._json


class JSONRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def with_fast_json(request: Request) -> Response:
            return await handler(JSONRequest(request.scope, request.receive))

        return with_fast_json
