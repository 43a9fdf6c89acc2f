"""Prometheus metrics of the API: request counts, latency histograms, requests in progress.

``HttpMetrics`` owns one ``CollectorRegistry`` per application (tests build many apps; the
global registry would refuse the second set of metrics) with:

* ``miraikakaku_http_requests_total{method, route, status}`` (counter),
* ``miraikakaku_http_request_duration_seconds{method, route}`` (histogram, seconds),
* ``miraikakaku_http_requests_in_progress{method}`` (gauge).

``route`` is the matched route's path template (``/v1/symbols/{symbol}/bars``), never the raw
path, so the number of series stays bounded; requests that match no route count as
``<unmatched>``, and requests answered before routing (429s) under the route they asked for.
``GET /metrics`` (``router``) serves the registry in the Prometheus text format; the request
middleware (``serving.app.middleware``) records every request, including 429s and 500s.
Try it: ``curl localhost:8000/metrics``.
"""

from __future__ import annotations

import re

from fastapi import APIRouter, FastAPI, Request, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from starlette.routing import compile_path
from starlette.types import Scope

__all__ = ["HttpMetrics", "OpenApiTemplates", "route_template", "router", "UNMATCHED"]

UNMATCHED = "<unmatched>"
"""The ``route`` label of requests that matched no route (404s of unknown paths)."""

_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class OpenApiTemplates:
    """Path templates of an app's documented routes, to label requests that never reached the
    router (a 429 of the rate limiter) with the route they asked for.

    Built lazily from ``app.openapi()`` (public, cached by FastAPI) on first use.

    Args:
        app: the FastAPI application.
    """

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self._compiled: list[tuple[re.Pattern[str], str]] | None = None

    def match(self, path: str) -> str:
        """The template whose pattern matches ``path``, or ``UNMATCHED``."""
        if self._compiled is None:
            self._compiled = [(compile_path(template)[0], template)
                              for template in self.app.openapi().get("paths", {})]
        for pattern, template in self._compiled:
            if pattern.match(path):
                return template
        return UNMATCHED


def route_template(scope: Scope, fallback: OpenApiTemplates | None = None) -> str:
    """The path template of the route that handled ``scope``, or ``UNMATCHED``.

    Args:
        scope: the request's ASGI scope after the app handled it (the router sets ``route``).
        fallback: templates to match the path against when the request never reached the
            router (so a 429 counts under its route's template too).
    """
    route = scope.get("route")
    path = getattr(route, "path_format", None) or getattr(route, "path", None)
    if isinstance(path, str) and path:
        return path
    if fallback is not None:
        try:
            return fallback.match(scope["path"])
        except Exception:  # labelling must never fail a request
            return UNMATCHED
    return UNMATCHED


class HttpMetrics:
    """The HTTP metrics of one application, in their own registry.

    Attributes:
        registry: the ``CollectorRegistry`` that ``GET /metrics`` exposes.
        requests: counter by method, route and status.
        latency: histogram of request durations (seconds) by method and route.
        in_progress: gauge of requests being handled, by method.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("miraikakaku_http_requests", "HTTP requests handled.",
                                ("method", "route", "status"), registry=self.registry)
        self.latency = Histogram("miraikakaku_http_request_duration_seconds",
                                 "Time to handle an HTTP request, seconds.", ("method", "route"),
                                 buckets=_BUCKETS, registry=self.registry)
        self.in_progress = Gauge("miraikakaku_http_requests_in_progress",
                                 "HTTP requests being handled.", ("method",),
                                 registry=self.registry)

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        """Record one finished request."""
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route).observe(seconds)

    def render(self) -> bytes:
        """The registry in the Prometheus text exposition format."""
        return generate_latest(self.registry)


router = APIRouter(tags=["health"])


@router.get("/metrics", include_in_schema=False)
async def read_metrics(request: Request) -> Response:
    """Prometheus text format of the application's metrics (``app.state.metrics``)."""
    metrics: HttpMetrics = request.app.state.metrics
    return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)
