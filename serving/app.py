"""The FastAPI application: `uvicorn serving.app:app` or `python -m serving`.

Importing this module builds the app from environment settings but loads nothing; the
bundle is loaded, verified and warmed up in the lifespan, so `/health/ready` turns
true only once a real prediction has passed. A request passes through
serving/middleware.py, then one router of serving/routes/, which calls the prediction
core in serving/inference/.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from types import FrameType

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from serving.auth_policy import check_auth
from serving.errors import install_error_handlers
from serving.logs import configure_logging
from serving.middleware import RequestContextMiddleware
from serving.routes import explain, feedback, health, info, predictions, v2
from serving.settings import Settings
from serving.state import AppState

STATIC_DIR = Path(__file__).parent / "static"
DESCRIPTION = (
    "Classifies photos of cats and dogs with the exported ONNX model bundle. Errors are "
    "JSON `{error, reason, request_id}`. When `API_KEY` or `API_KEYS` is set, send a key as "
    "`X-API-Key` or `Authorization: Bearer` (not needed for health and metrics). Each "
    "prediction answers a `feedback_token` that `/feedback` requires."
)


def drain_on_sigterm(state: AppState) -> Callable[[], None]:
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
        state.engine.begin_drain()
        previous(signum, frame)

    signal.signal(signal.SIGTERM, on_sigterm)
    return lambda: signal.signal(signal.SIGTERM, previous)


def create_app(settings: Settings | None = None) -> FastAPI:
    state = AppState(settings or Settings.from_env())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        configure_logging(state.settings.log_level)
        # Before anything loads: an open API by accident stops here (serving/auth_policy.py).
        check_auth(state.settings, logging.getLogger("serving.auth"))
        state.signer.warn_if_private()
        restore = drain_on_sigterm(state)
        await state.start()
        try:
            yield
        finally:
            await state.stop()
            restore()

    docs = state.settings.api_docs != "off"
    app = FastAPI(
        title="Cats vs dogs prediction service",
        description=DESCRIPTION,
        version="1.0.0",
        lifespan=lifespan,
        docs_url="/docs" if docs else None,
        redoc_url="/redoc" if docs else None,
        openapi_url="/openapi.json" if docs else None,
    )
    app.state.serving = state
    install_error_handlers(app)
    for module in (predictions, explain, feedback, health, info, v2):
        app.include_router(module.router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html")

    app.add_middleware(
        RequestContextMiddleware,
        settings=state.settings,
        metrics=state.metrics,
        clients=state.clients,
    )
    return app


app = create_app()
