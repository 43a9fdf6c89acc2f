"""Gateway concerns of the API: request ids, access log, metrics, CORS and rate limits.

``install_gateway(app, settings)`` (called by ``create_app``) sets up, from the outside in:

1. ``RequestContextMiddleware``, wrapped around the whole application (outside Starlette's
   error middleware, so unhandled 500s are covered too): takes a sane incoming
   ``X-Request-ID`` (1-64 characters of ``[A-Za-z0-9._-]``) or makes a uuid4, puts it in
   ``request_id_var`` (a contextvar: every log line during the request can carry it) and in the
   ``X-Request-ID`` response header, writes one access-log line per request (logger
   ``miraikakaku.access``: method, path, status, duration in ms, user id when known, request
   id) and records the Prometheus metrics (``serving.app.metrics``);
2. Starlette's ``CORSMiddleware`` when ``settings.cors_origins`` is not empty (no CORS headers
   otherwise);
3. ``serving.app.ratelimit.RateLimitMiddleware`` (429 with ``Retry-After``).

Logging: ``RequestIdFilter`` adds ``record.request_id`` (``-`` outside a request);
``logging_config()`` is the ``logging.config.dictConfig`` of ``miraikakaku serve`` with the format
``... request_id=%(request_id)s ...`` on every handler (uvicorn's own loggers included; uvicorn's
access log is replaced by ours). Try it: ``miraikakaku serve`` and ``curl -H 'X-Request-ID: abc'
-i localhost:8000/healthz``.
"""

from __future__ import annotations

import contextvars
import logging
import re
import time
import uuid
from typing import Any

from fastapi import FastAPI
from starlette.datastructures import Headers, MutableHeaders
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from miraikakaku.settings import Settings
from serving.app.metrics import HttpMetrics, OpenApiTemplates, route_template
from serving.app.ratelimit import RateLimiter, RateLimitMiddleware

__all__ = [
    "REQUEST_ID_HEADER",
    "request_id_var",
    "RequestIdFilter",
    "RequestContextMiddleware",
    "install_gateway",
    "logging_config",
    "sane_request_id",
]

REQUEST_ID_HEADER = "X-Request-ID"
ACCESS_LOGGER = "miraikakaku.access"
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s request_id=%(request_id)s %(message)s"

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
"""The id of the request being handled (``-`` outside a request)."""

_SANE_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
access_logger = logging.getLogger(ACCESS_LOGGER)


def sane_request_id(value: str | None) -> str:
    """``value`` when it is 1-64 characters of ``[A-Za-z0-9._-]``, else a new uuid4 string."""
    if value is not None and _SANE_ID.fullmatch(value):
        return value
    return str(uuid.uuid4())


class RequestIdFilter(logging.Filter):
    """Adds ``request_id`` (the current request's id, ``-`` outside one) to every record.

    Attach it to handlers (``logging_config`` does), so records of every logger get it.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = request_id_var.get()
        return True


def logging_config(level: str = "INFO") -> dict[str, Any]:
    """``logging.config.dictConfig`` settings: one stderr handler with ``LOG_FORMAT`` and the
    ``RequestIdFilter`` for the root logger and uvicorn's loggers.

    Pass it as uvicorn's ``log_config`` (with ``access_log=False``: the app writes its own
    access line).
    """
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"request_id": {"()": RequestIdFilter}},
        "formatters": {"default": {"format": LOG_FORMAT}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "default",
                                "filters": ["request_id"], "stream": "ext://sys.stderr"}},
        "root": {"handlers": ["stderr"], "level": level},
        "loggers": {name: {"handlers": [], "propagate": True, "level": level}
                    for name in ("uvicorn", "uvicorn.error", "uvicorn.access")},
    }


class RequestContextMiddleware:
    """Request id, access log and metrics around one ASGI application (see the module doc).

    Args:
        app: the wrapped application (the whole middleware stack).
        metrics: where requests are recorded.
        templates: the application's route templates (labels requests answered before
            routing).
    """

    def __init__(self, app: ASGIApp, *, metrics: HttpMetrics,
                 templates: OpenApiTemplates | None = None) -> None:
        self.app = app
        self.metrics = metrics
        self.templates = templates

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = sane_request_id(Headers(scope=scope).get(REQUEST_ID_HEADER))
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        token = request_id_var.set(request_id)
        method = scope["method"]
        status = 500
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = request_id
            await send(message)

        in_progress = self.metrics.in_progress.labels(method)
        in_progress.inc()
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            seconds = time.perf_counter() - started
            in_progress.dec()
            self.metrics.observe(method, route_template(scope, self.templates), status, seconds)
            user_id = scope.get("state", {}).get("user_id")
            access_logger.info(
                "%s %s %d %.1fms user=%s", method, scope["path"], status, seconds * 1000,
                user_id if user_id is not None else "-",
                extra={"method": method, "path": scope["path"], "status": status,
                       "duration_ms": round(seconds * 1000, 3), "user_id": user_id})
            request_id_var.reset(token)


def install_gateway(app: FastAPI, settings: Settings) -> None:
    """Install request ids, access log, metrics (``GET /metrics``), CORS and rate limits.

    Sets ``app.state.metrics`` (``HttpMetrics``) and ``app.state.rate_limiter``
    (``RateLimiter``; ``/readyz`` pings it).

    Args:
        app: the application (before it serves its first request).
        settings: ``cors_origins``, ``redis_url`` and the rate limits.
    """
    from serving.app.metrics import router as metrics_router

    metrics = HttpMetrics()
    limiter = RateLimiter(settings.redis_url)
    app.state.metrics = metrics
    app.state.rate_limiter = limiter
    app.include_router(metrics_router)
    app.add_middleware(RateLimitMiddleware, settings=settings, limiter=limiter)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware, allow_origins=list(settings.cors_origins), allow_credentials=False,
            allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type", REQUEST_ID_HEADER],
            expose_headers=[REQUEST_ID_HEADER, "Retry-After"], max_age=600)
    # Outside Starlette's ServerErrorMiddleware (the outermost layer add_middleware can reach),
    # so unhandled errors still get a request id, an access line and a 500 in the metrics.
    build_stack = app.build_middleware_stack

    def build_middleware_stack() -> ASGIApp:
        return RequestContextMiddleware(build_stack(), metrics=metrics,
                                        templates=OpenApiTemplates(app))

    app.build_middleware_stack = build_middleware_stack  # type: ignore[method-assign]
