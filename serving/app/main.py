"""The read API's application factory: ``create_app(settings, store) -> FastAPI``.

Users, roles and the application database (SQLAlchemy, migrated by Alembic at start-up from
``settings.app_database_url``) back the authenticated routes. The app serves instruments,
quotes, daily bars, predictions, alerts and model versions with their
tracked errors (``/v1/models``) from the serving store
(``settings.store_path``, SQLite opened read-only while the pipeline writes). Its ``lifespan``
opens the store at start-up and closes it at shutdown; a missing store does not stop the app:
``/healthz`` and the data routes answer 503 until the pipeline has written it. OpenAPI docs are
at ``/docs``. Run it with ``miraikakaku serve`` or
``uvicorn --factory serving.app.main:create_app``.
"""

import contextlib
from collections.abc import AsyncIterator

from fastapi import Depends, FastAPI
from starlette.concurrency import run_in_threadpool

from miraikakaku import __version__
from miraikakaku.settings import Settings, get_settings
from serving.app.api.deps import require_permission
from serving.app.api.errors import install_error_handlers
from serving.app.api.routes import (
    admin,
    alerts,
    auth,
    health,
    models,
    notifications,
    reports,
    rules,
    symbols,
    users,
)
from serving.app.db import Database
from serving.app.middleware import install_gateway
from serving.app.stores import StoreProvider
from stores.base import ServingStore

__all__ = ["create_app", "TITLE"]

TITLE = "MiraiKakaku API"

_DESCRIPTION = """Read API over the MiraiKakaku serving store.

* Symbols are aliases (`AAPL`, `7203.T`) or exchange-qualified ids (`XNAS:AAPL`, `XTKS:7203`),
  case-insensitive.
* Prices are floats in the instrument's quote currency (`currency`); timestamps are UTC ISO 8601
  with offset; dates are ISO `YYYY-MM-DD` exchange-local session dates.
* Errors have one shape: `{"error": {"code": "...", "message": "..."}}` (422s add `details`).
"""


def create_app(settings: Settings | None = None, store: ServingStore | None = None) -> FastAPI:
    """Build the API application.

    Args:
        settings: runtime settings; default: ``miraikakaku.settings.get_settings()``.
        store: an open serving store to serve (tests, other backends); default: open
            ``settings.store_path`` read-only at start-up (retried on demand while missing).

    Returns:
        The configured FastAPI application.
    """
    settings = settings if settings is not None else get_settings()
    provider = StoreProvider(settings, store)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await run_in_threadpool(provider.open)
        app.state.db = await run_in_threadpool(Database.connect, settings.app_database_url)
        try:
            yield
        finally:
            provider.close()
            app.state.db.close()

    app = FastAPI(title=TITLE, version=__version__, description=_DESCRIPTION,
                  lifespan=lifespan)
    app.state.settings = settings
    app.state.store_provider = provider
    install_error_handlers(app)
    install_gateway(app, settings)  # request ids, access log, metrics, CORS, rate limits
    app.include_router(health.router)
    app.include_router(rules.router)  # /v1/alert-rules (alerts:read/write)
    app.include_router(notifications.router)  # /v1/notifications (+ SSE stream)
    market = [Depends(require_permission("market:read"))]  # login required; /healthz public
    app.include_router(symbols.router, dependencies=market)
    app.include_router(alerts.router, dependencies=market)
    app.include_router(models.router, dependencies=market)
    app.include_router(reports.router)  # /v1/reports (analytics:read: analyst, admin)
    app.include_router(auth.router)
    app.include_router(users.router)
    app.include_router(admin.router)
    return app
