"""GET /health, /health/live, /health/ready: honest probes for people and orchestrators."""

from __future__ import annotations

from fastapi import APIRouter, Response

from serving import schemas
from serving.dependencies import EngineDep
from serving.inference.engine import LOAD_FAILED
from serving.logs import utc_now

router = APIRouter(tags=["health"])


@router.get("/health")
async def health(engine: EngineDep, response: Response) -> schemas.HealthOut:
    """Overall health: 200 only when the model is loaded, warmed up and not draining."""
    if engine.ready:
        status = "ok"
    elif engine.draining:
        status = "draining"
    else:
        status = "unavailable"
    response.status_code = 200 if engine.ready else 503
    model = engine.model
    return schemas.HealthOut(
        status=status,
        model_loaded=model is not None and engine.warmed,
        model_version=model.manifest.version if model else None,
        timestamp=utc_now(),
        error=LOAD_FAILED if engine.load_error else None,
    )


@router.get("/health/live")
async def live(engine: EngineDep, response: Response) -> schemas.LiveOut:
    """Liveness: the process answers and its inference loop has not given up."""
    response.status_code = 200 if engine.live else 503
    return schemas.LiveOut(status="alive" if engine.live else "dead")


@router.get("/health/ready")
async def ready(engine: EngineDep, response: Response) -> schemas.ReadyOut:
    """Readiness: bundle loaded, warm-up passed, inference loop alive, not draining."""
    if engine.ready:
        return schemas.ReadyOut(status="ready")
    response.status_code = 503
    return schemas.ReadyOut(status="not_ready", why=engine.why_not_ready())
