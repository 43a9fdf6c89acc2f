"""Domain errors of the read API and the one place that maps them to HTTP responses.

Routes raise ``NotFound``, ``InvalidRequest`` or ``StoreUnavailable`` (never ``HTTPException``);
``install_error_handlers(app)`` turns them, FastAPI's request-validation errors, Starlette's own
HTTP errors (unknown path, wrong method) and any unexpected exception into one JSON shape::

    {"error": {"code": "not_found", "message": "unknown symbol 'ZZZZ'"}}

Validation errors (HTTP 422, code ``invalid_request``) add a ``details`` list of
``{"loc": [...], "msg": "...", "type": "..."}``. An unexpected exception answers 500 with code
``internal_error`` and a generic message: the traceback goes to the log, never to the client.
"""

import logging
from collections.abc import Sequence
from typing import Any, ClassVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

__all__ = [
    "ApiError",
    "NotFound",
    "InvalidRequest",
    "StoreUnavailable",
    "Unauthorized",
    "Forbidden",
    "Conflict",
    "TooManyRequests",
    "error_body",
    "install_error_handlers",
    "ERROR_RESPONSES",
]

logger = logging.getLogger(__name__)


class ApiError(Exception):
    """Base of the API's domain errors; each subclass fixes its HTTP status and error code.

    Args:
        message: human-readable explanation, safe to show to the client.
        details: optional structured details (a list of JSON-serializable items).
    """

    status_code: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"

    def __init__(self, message: str, *, details: Sequence[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = list(details) if details is not None else None

    def http_status_code(self) -> int:
        """The HTTP status this error maps to (as Feast's ``FeastError.http_status_code``)."""
        return self.status_code


class NotFound(ApiError):
    """An instrument, source or record that does not exist (HTTP 404)."""

    status_code = 404
    code = "not_found"


class InvalidRequest(ApiError):
    """Parameters that parse but do not make sense together, e.g. start after end (HTTP 422)."""

    status_code = 422
    code = "invalid_request"


class StoreUnavailable(ApiError):
    """The serving store is missing, unreadable or failing (HTTP 503; retry later)."""

    status_code = 503
    code = "store_unavailable"


class Unauthorized(ApiError):
    """Missing, invalid, expired or revoked credentials (HTTP 401, ``WWW-Authenticate: Bearer``)."""

    status_code = 401
    code = "unauthorized"
    headers: ClassVar[dict[str, str]] = {"WWW-Authenticate": "Bearer"}


class Forbidden(ApiError):
    """Authenticated, but the role lacks the permission (HTTP 403)."""

    status_code = 403
    code = "forbidden"


class Conflict(ApiError):
    """The request conflicts with existing data, e.g. an email already registered (HTTP 409)."""

    status_code = 409
    code = "conflict"


class TooManyRequests(ApiError):
    """A rate limit was hit (HTTP 429 with ``Retry-After`` in seconds).

    Args:
        message: explanation.
        retry_after: whole seconds until the next request may pass.
    """

    status_code = 429
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.headers = {"Retry-After": str(max(1, int(retry_after)))}


def error_body(code: str, message: str,
               details: Sequence[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Build the JSON error body ``{"error": {"code", "message"[, "details"]}}``.

    Args:
        code: machine-readable error code (``not_found``).
        message: human-readable message.
        details: optional list of structured details.

    Returns:
        The body as a dict ready for ``JSONResponse``.
    """
    err: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        err["details"] = list(details)
    return {"error": err}


_HTTP_CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed",
               413: "payload_too_large", 415: "unsupported_media_type"}

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    404: {"description": "Unknown instrument, source or record."},
    422: {"description": "Invalid parameters (code `invalid_request`, with `details`)."},
    503: {"description": "The serving store is not available."},
}
"""OpenAPI ``responses`` entries shared by the data routes."""


def _validation_details(exc: RequestValidationError) -> list[dict[str, Any]]:
    # Only plain, JSON-safe fields: pydantic's ``ctx``/``input`` may hold arbitrary objects.
    return [{"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", "")),
             "type": str(e.get("type", ""))} for e in exc.errors()]


async def _api_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    if exc.http_status_code() >= 500:
        logger.warning("%s %s -> %s: %s", request.method, request.url.path, exc.code, exc.message)
    return JSONResponse(error_body(exc.code, exc.message, exc.details),
                        status_code=exc.http_status_code(),
                        headers=getattr(exc, "headers", None))


async def _validation_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    details = _validation_details(exc)
    first = details[0] if details else {"loc": [], "msg": "invalid request"}
    where = ".".join(first["loc"]) or "request"
    return JSONResponse(error_body(InvalidRequest.code, f"{where}: {first['msg']}", details),
                        status_code=InvalidRequest.status_code)


async def _http_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    return JSONResponse(error_body(code, str(exc.detail)), status_code=exc.status_code,
                        headers=getattr(exc, "headers", None))


async def _unexpected_error_handler(request: Request, exc: Exception) -> JSONResponse:
    logger.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return JSONResponse(error_body("internal_error", "internal server error"), status_code=500)


def install_error_handlers(app: FastAPI) -> None:
    """Register every exception handler of the API on ``app`` (the single mapping point).

    Args:
        app: the application to configure.
    """
    app.add_exception_handler(ApiError, _api_error_handler)
    app.add_exception_handler(RequestValidationError, _validation_error_handler)
    app.add_exception_handler(StarletteHTTPException, _http_error_handler)
    app.add_exception_handler(Exception, _unexpected_error_handler)
