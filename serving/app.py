"""The FastAPI application: `uvicorn serving.app:app` or `python -m serving`.

Importing this module builds the app from environment settings but loads nothing; the
bundle is loaded, verified and warmed up in the lifespan, so `/health/ready` turns
true only once a real prediction has passed.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from types import FrameType

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from serving import api, v2
from serving.errors import install_error_handlers
from serving.logs import configure_logging
from serving.middleware import RequestContextMiddleware
from serving.service import Service
from serving.settings import Settings

STATIC_DIR = Path(__file__).parent / "static"


def drain_on_sigterm(service: Service) -> Callable[[], None]:
    """Chain a SIGTERM handler that turns the service not-ready before the server stops.

    Only when a server (uvicorn) already handles SIGTERM: it then stops accepting,
    finishes in-flight requests and exits. Returns a function that restores the handler.
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = signal.getsignal(signal.SIGTERM)
    if not callable(previous):
        return lambda: None

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        service.begin_drain()
        previous(signum, frame)

    signal.signal(signal.SIGTERM, on_sigterm)
    return lambda: signal.signal(signal.SIGTERM, previous)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings.from_env()
    service = Service(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        configure_logging(settings.log_level)
        restore = drain_on_sigterm(service)
        await service.start()
        try:
            yield
        finally:
            service.begin_drain()
            await service.stop()
            restore()

    app = FastAPI(
        title="Cats vs dogs prediction service",
        description=(
            "Classifies photos of cats and dogs with the exported ONNX model bundle. "
            "Errors are JSON `{error, reason, request_id}`. When `API_KEY` is set, send it "
            "as `X-API-Key` or `Authorization: Bearer` (not needed for health and metrics)."
        ),
        version="1.0.0",
        lifespan=lifespan,
    )
    app.state.service = service
    install_error_handlers(app)
    app.include_router(api.router)
    app.include_router(v2.router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html")

    app.add_middleware(RequestContextMiddleware, service=service)
    return app


app = create_app()
