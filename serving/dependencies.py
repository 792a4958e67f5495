"""FastAPI dependencies: what a route needs, handed out from the app's state.

All are `async def`: FastAPI runs a plain `def` dependency in a worker thread, a thread
hop per dependency per request. Routes declare what they need (`predictor: ReadyPredictor`, `call: CurrentCall`) instead
of reaching through one object; a route that needs a ready model gets a `not_ready`
refusal here, once, before its own code runs.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from serving.inference.engine import Engine
from serving.inference.onnx_model import Model
from serving.inference.prediction import Call
from serving.inference.predictor import Predictor
from serving.prometheus_metrics import ServiceMetrics
from serving.recording import Recorder
from serving.settings import Settings
from serving.state import AppState
from serving.tokens import FeedbackSigner


async def app_state(request: Request) -> AppState:
    return request.app.state.serving


State = Annotated[AppState, Depends(app_state)]


async def current_call(request: Request, state: State) -> Call:
    """The request's ids and deadline, as the prediction core sees them."""
    started: float = request.state.started
    return Call(
        request_id=request.state.request_id,
        started=started,
        deadline=started + state.settings.request_timeout_s,
        correlation_id=request.state.correlation_id,
        client=getattr(request.state, "client", None),
    )


async def ready_predictor(state: State) -> Predictor:
    state.engine.require_model()
    return state.predictor


async def ready_model(state: State) -> Model:
    return state.engine.require_model()


async def engine(state: State) -> Engine:
    return state.engine


async def settings(state: State) -> Settings:
    return state.settings


async def metrics(state: State) -> ServiceMetrics:
    return state.metrics


async def recorder(state: State) -> Recorder:
    return state.recorder


async def signer(state: State) -> FeedbackSigner:
    return state.signer


CurrentCall = Annotated[Call, Depends(current_call)]
ReadyPredictor = Annotated[Predictor, Depends(ready_predictor)]
ReadyModel = Annotated[Model, Depends(ready_model)]
EngineDep = Annotated[Engine, Depends(engine)]
SettingsDep = Annotated[Settings, Depends(settings)]
MetricsDep = Annotated[ServiceMetrics, Depends(metrics)]
RecorderDep = Annotated[Recorder, Depends(recorder)]
SignerDep = Annotated[FeedbackSigner, Depends(signer)]
