"""Routes ``GET /healthz`` (liveness and the store) and ``GET /readyz`` (every dependency).

``/healthz`` answers 200 ``{"status": "ok", "store": "ok"}`` when the store opens and answers
``ping()`` (no table scans);
503 with ``store`` = ``missing`` (no store file yet) or ``error`` (it cannot be opened or
queried) otherwise. Load balancers and ``docker HEALTHCHECK`` poll it.

``/readyz`` answers 200 only when every dependency answers: the serving store (``ping()``), the
application database (``SELECT 1``) and Redis when ``settings.redis_url`` is set (``PING``);
else 503. The body names each check: ``{"status": "ok", "checks": {"store": "ok", "database":
"ok", "redis": "ok"}}`` (``redis`` only when configured; a failed check is ``error``, a store
not written yet ``missing``). Each check is bounded (about a second for Redis). Try it:
``curl -i localhost:8000/readyz``.
"""

import asyncio
import logging
from typing import Literal

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from serving.app.api.deps import StoreProviderDep
from serving.app.api.errors import StoreUnavailable
from serving.app.schemas import Health
from serving.app.stores import run_store

__all__ = ["router", "ReadinessPublic"]

logger = logging.getLogger(__name__)

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health, summary="Health",
            responses={503: {"model": Health, "description": "The store is missing or failing."}})
async def read_health(*, provider: StoreProviderDep, response: Response) -> Health:
    """Report liveness and the serving store's state (200 when usable, 503 otherwise)."""
    try:
        store = await provider.get()
        await run_store(store.ping)
    except StoreUnavailable:
        response.status_code = 503
        return Health(status="unavailable", store="error" if provider.state == "ok"
                      else provider.state)
    except Exception:  # a health check reports failures, it does not raise them
        logger.exception("health check: the store failed to answer ping()")
        response.status_code = 503
        return Health(status="unavailable", store="error")
    return Health(status="ok", store="ok")


CheckStatus = Literal["ok", "missing", "error"]


class ReadinessPublic(BaseModel):
    """Readiness and the state of each dependency."""

    model_config = ConfigDict(frozen=True)

    status: Literal["ok", "unavailable"]
    checks: dict[str, CheckStatus] = Field(
        description="`store`, `database` and (when configured) `redis`: `ok`, `error`, or "
                    "`missing` (no serving store written yet).",
        examples=[{"store": "ok", "database": "ok", "redis": "ok"}])


async def _check_store(provider) -> CheckStatus:
    try:
        store = await provider.get()
        return "ok" if await run_store(store.ping) else "error"
    except StoreUnavailable:
        return "error" if provider.state == "ok" else provider.state
    except Exception:
        logger.exception("readiness: the store failed to answer ping()")
        return "error"


async def _check_database(request: Request) -> CheckStatus:
    db = getattr(request.app.state, "db", None)
    if db is None:
        return "error"
    try:
        return "ok" if await run_in_threadpool(db.ping) else "error"
    except Exception as e:
        logger.warning("readiness: the application database failed: %s: %s",
                       type(e).__name__, e)
        return "error"


async def _check_redis(request: Request) -> CheckStatus:
    limiter = request.app.state.rate_limiter
    try:
        ok = await asyncio.wait_for(limiter.ping(), timeout=2.0)
    except asyncio.TimeoutError:
        ok = False
    if not ok:
        logger.warning("readiness: Redis at the configured redis_url does not answer")
    return "ok" if ok else "error"


@router.get("/readyz", response_model=ReadinessPublic, summary="Readiness",
            responses={503: {"model": ReadinessPublic,
                             "description": "A dependency does not answer."}})
async def read_readiness(*, provider: StoreProviderDep, request: Request,
                         response: Response) -> ReadinessPublic:
    """200 when the store, the application database and Redis (if configured) answer; else 503."""
    checks: dict[str, CheckStatus] = {"store": await _check_store(provider),
                                      "database": await _check_database(request)}
    if request.app.state.settings.redis_url:
        checks["redis"] = await _check_redis(request)
    ready = all(v == "ok" for v in checks.values())
    if not ready:
        response.status_code = 503
    return ReadinessPublic(status="ok" if ready else "unavailable", checks=checks)
