"""Rate limits of the API: per user and per client IP, answered with 429 and ``Retry-After``.

``RateLimitMiddleware`` (pure ASGI) counts every HTTP request except ``/healthz``, ``/readyz``
and ``/metrics`` against two moving windows of one minute (the ``limits`` package's
``MovingWindowRateLimiter``):

* ``ip:{client ip}``: ``settings.rate_limit_ip_per_minute``, whoever is logged in;
* ``user:{id}`` when the request carries a valid access token (``Authorization: Bearer``,
  decoded with ``serving.app.core.security.decode_access_token``, no database look-up), else
  ``anon:{client ip}``: ``settings.rate_limit_per_minute``.

A request over either limit answers 429 with the API's error shape (code ``rate_limited``) and
``Retry-After`` in whole seconds (when the oldest request of the full window leaves it). The
counters live in Redis when ``settings.redis_url`` is set (shared by every API process; keys
``{key_prefix}:LIMITER/...``), in process memory otherwise. When Redis does not answer, requests
pass (fail open, logged; ``/readyz`` reports Redis as down). The client IP is the ASGI
``client`` address: behind a proxy run uvicorn with ``--proxy-headers --forwarded-allow-ips``.

Try it: ``MIRAIKAKAKU_RATE_LIMIT_PER_MINUTE=2 miraikakaku serve``, then ``curl -i
localhost:8000/v1/symbols`` three times.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Iterable

from limits import RateLimitItemPerMinute
from limits import storage as sync_storage
from limits import strategies as sync_strategies
from limits.aio import storage as aio_storage
from limits.aio import strategies as aio_strategies
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from miraikakaku.settings import Settings
from serving.app.api.errors import TooManyRequests, error_body
from serving.app.core.security import InvalidToken, decode_access_token

__all__ = ["RateLimiter", "RateLimitMiddleware", "EXEMPT_PATHS", "DEFAULT_KEY_PREFIX",
           "bearer_user_id"]

logger = logging.getLogger(__name__)

EXEMPT_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
"""Paths never rate-limited (probes and the Prometheus scraper)."""

DEFAULT_KEY_PREFIX = "miraikakaku:ratelimit"
"""Prefix of the Redis keys of the counters."""

_REDIS_TIMEOUT_S = 1.0


class RateLimiter:
    """Moving-window counters in Redis (``redis_url``) or in process memory (None).

    The Redis client is asynchronous and bound to an event loop, so one is made per running
    loop (uvicorn has one; each ``TestClient`` block has its own). The memory backend is the
    thread-safe synchronous one (no I/O), shared by every loop of the process.

    Args:
        redis_url: ``redis://host:port/db``, or None for in-memory counters.
        key_prefix: prefix of the Redis keys (tests use their own and delete only theirs).
    """

    def __init__(self, redis_url: str | None, *, key_prefix: str = DEFAULT_KEY_PREFIX) -> None:
        self.redis_url = redis_url
        self.key_prefix = key_prefix
        self._memory = None if redis_url else sync_strategies.MovingWindowRateLimiter(
            sync_storage.MemoryStorage())
        self._loop: asyncio.AbstractEventLoop | None = None
        self._redis: aio_strategies.MovingWindowRateLimiter | None = None
        self._last_error_log = 0.0

    @property
    def backend(self) -> str:
        """``redis`` or ``memory``."""
        return "redis" if self.redis_url else "memory"

    def _redis_limiter(self) -> aio_strategies.MovingWindowRateLimiter:
        loop = asyncio.get_running_loop()
        if self._redis is None or self._loop is not loop:
            assert self.redis_url is not None
            url = self.redis_url
            if not url.startswith("async+"):
                url = "async+" + url
            storage = aio_storage.RedisStorage(
                url, implementation="redispy", key_prefix=self.key_prefix,
                socket_connect_timeout=_REDIS_TIMEOUT_S, socket_timeout=_REDIS_TIMEOUT_S)
            self._redis = aio_strategies.MovingWindowRateLimiter(storage)
            self._loop = loop
        return self._redis

    async def hit(self, key: str, per_minute: int) -> int | None:
        """Count one request against ``per_minute`` requests per moving minute for ``key``.

        Args:
            key: what is limited (``user:7``, ``ip:10.0.0.1``).
            per_minute: allowed requests per 60 s.

        Returns:
            None when the request may pass; otherwise the whole seconds (>= 1) until it may.
            Redis errors let the request pass (logged at most every 10 s).
        """
        item = RateLimitItemPerMinute(per_minute)
        try:
            if self._memory is not None:
                if self._memory.hit(item, key):
                    return None
                reset = self._memory.get_window_stats(item, key).reset_time
            else:
                limiter = self._redis_limiter()
                if await limiter.hit(item, key):
                    return None
                reset = (await limiter.get_window_stats(item, key)).reset_time
        except Exception as e:  # fail open: a Redis outage must not take the API down
            now = time.monotonic()
            if now - self._last_error_log > 10:
                self._last_error_log = now
                logger.warning("rate limiter backend failed (%s: %s); requests pass unlimited",
                               type(e).__name__, e)
            return None
        return max(1, math.ceil(reset - time.time()))

    async def ping(self) -> bool:
        """True when the backend answers (always for memory; a Redis ``PING`` otherwise)."""
        if self._memory is not None:
            return True
        try:
            return bool(await self._redis_limiter().storage.check())
        except Exception:
            return False


def bearer_user_id(headers: Headers, secret: str) -> int | None:
    """The user id of a valid access token in ``Authorization: Bearer``, else None.

    Only the signature, algorithm and expiry are checked (no database look-up): enough to pick
    the counter; the route itself still authenticates the request.
    """
    auth = headers.get("authorization", "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    try:
        return decode_access_token(token.strip(), secret=secret).user_id
    except InvalidToken:
        return None


class RateLimitMiddleware:
    """Pure-ASGI middleware enforcing the per-user and per-IP limits (see the module doc).

    Args:
        app: the wrapped ASGI application.
        settings: limits (``rate_limit_per_minute``, ``rate_limit_ip_per_minute``) and the JWT
            key.
        limiter: the counters.
        exempt: paths never limited.
    """

    def __init__(self, app: ASGIApp, *, settings: Settings, limiter: RateLimiter,
                 exempt: Iterable[str] = EXEMPT_PATHS) -> None:
        self.app = app
        self.settings = settings
        self.limiter = limiter
        self.exempt = frozenset(exempt)
        self._secret = settings.secret_key.get_secret_value()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.exempt:
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        ip = client[0] if client else "unknown"
        user_id = bearer_user_id(Headers(scope=scope), self._secret)
        if user_id is not None:
            scope.setdefault("state", {})["user_id"] = user_id
        checks = [(f"ip:{ip}", self.settings.rate_limit_ip_per_minute, "client IP"),
                  (f"user:{user_id}" if user_id is not None else f"anon:{ip}",
                   self.settings.rate_limit_per_minute,
                   "user" if user_id is not None else "anonymous client")]
        for key, per_minute, what in checks:
            retry_after = await self.limiter.hit(key, per_minute)
            if retry_after is not None:
                err = TooManyRequests(f"rate limit of {per_minute} requests per minute per "
                                      f"{what} exceeded; retry in {retry_after} s",
                                      retry_after=retry_after)
                response = JSONResponse(error_body(err.code, err.message),
                                        status_code=err.status_code, headers=err.headers)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
