"""Route ``GET /healthz``: is the API up and can it read the serving store?

Answers 200 ``{"status": "ok", "store": "ok"}`` when the store opens and answers ``ping()``
(no table scans);
503 with ``store`` = ``missing`` (no store file yet) or ``error`` (it cannot be opened or
queried) otherwise. Load balancers and ``docker HEALTHCHECK`` poll it.
"""

import logging

from fastapi import APIRouter, Response

from serving.app.api.deps import StoreProviderDep
from serving.app.api.errors import StoreUnavailable
from serving.app.schemas import Health
from serving.app.stores import run_store

__all__ = ["router"]

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
