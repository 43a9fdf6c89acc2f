"""Gateway tests: rate limits (memory and Redis), request ids and logs, CORS, /readyz, /metrics.

Every test builds its own app over the session's real-data serving store (``api_data``) and a
fresh application database (``app_db_url``: SQLite and PostgreSQL), and logs in by writing a
user row and signing a token itself (``tests.api.tokens``). Redis tests use
``tests.conftest.REDIS_URL`` (db 15) under a key prefix of their own, deleted afterwards.

Run: ``.venv/bin/python -m pytest -q tests/api/test_gateway.py``.
"""

import io
import logging
import uuid
from collections.abc import Iterator

import pytest
import redis
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from miraikakaku.settings import Settings
from serving.app.db import Database
from serving.app.main import create_app
from serving.app.middleware import LOG_FORMAT, RequestIdFilter
from tests.api.tokens import auth_header, make_user_token
from tests.conftest import REDIS_URL

pytestmark = pytest.mark.api

CLOSED_PORT_REDIS = "redis://127.0.0.1:1/15"


def _settings(api_data, app_db_url: str, **overrides) -> Settings:
    return Settings(env="test", data_dir=api_data.settings.data_dir, database_url=app_db_url,
                    **overrides)


@pytest.fixture()
def redis_prefix() -> Iterator[str]:
    """A key prefix of this test's own in Redis db 15; its keys are deleted afterwards."""
    prefix = f"mk-test-ratelimit-{uuid.uuid4().hex[:10]}"
    yield prefix
    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*"))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


# -- rate limits ----------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", ["memory", "redis"])
def test_rate_limit_per_user_then_per_ip(backend, api_data, app_db_url, redis_prefix) -> None:
    settings = _settings(api_data, app_db_url, rate_limit_per_minute=3,
                         rate_limit_ip_per_minute=5,
                         redis_url=REDIS_URL if backend == "redis" else None)
    app = create_app(settings)
    app.state.rate_limiter.key_prefix = redis_prefix
    assert app.state.rate_limiter.backend == backend
    with TestClient(app) as c:
        _, token_a = make_user_token(app, email="a@example.com")
        _, token_b = make_user_token(app, email="b@example.com")
        for _ in range(3):
            assert c.get("/v1/symbols", headers=auth_header(token_a)).status_code == 200
        limited = c.get("/v1/symbols", headers=auth_header(token_a))
        assert limited.status_code == 429
        assert 1 <= int(limited.headers["Retry-After"]) <= 60
        body = limited.json()
        assert body["error"]["code"] == "rate_limited"
        assert "per user" in body["error"]["message"]
        assert limited.headers["X-Request-ID"]
        # another user on the same IP still passes: the per-user counters are separate ...
        assert c.get("/v1/symbols", headers=auth_header(token_b)).status_code == 200
        # ... until the IP's own limit (5 per minute, whoever is logged in) is used up
        over_ip = c.get("/v1/symbols", headers=auth_header(token_b))
        assert over_ip.status_code == 429
        assert "per client IP" in over_ip.json()["error"]["message"]
        assert 1 <= int(over_ip.headers["Retry-After"]) <= 60
        # probes and the scraper are never limited
        for path in ("/healthz", "/readyz", "/metrics"):
            assert c.get(path).status_code == 200, path
    if backend == "redis":
        client = redis.Redis.from_url(REDIS_URL)
        try:
            assert list(client.scan_iter(match=f"{redis_prefix}*"))  # the counters live there
        finally:
            client.close()


@pytest.mark.parametrize("backend", ["memory", "redis"])
def test_anonymous_clients_get_the_user_limit_per_ip(backend, api_data, app_db_url,
                                                     redis_prefix) -> None:
    settings = _settings(api_data, app_db_url, rate_limit_per_minute=2,
                         rate_limit_ip_per_minute=100,
                         redis_url=REDIS_URL if backend == "redis" else None)
    app = create_app(settings)
    app.state.rate_limiter.key_prefix = redis_prefix
    with TestClient(app) as c:
        statuses = [c.get("/v1/symbols").status_code for _ in range(3)]
        assert 429 not in statuses[:2] and statuses[2] == 429
        resp = c.get("/v1/symbols", headers={"Authorization": "Bearer forged.token.value"})
        assert resp.status_code == 429  # an invalid token counts as anonymous
        _, token = make_user_token(app, email="c@example.com")
        assert c.get("/v1/symbols", headers=auth_header(token)).status_code == 200


def test_redis_down_fails_open(api_data, app_db_url) -> None:
    settings = _settings(api_data, app_db_url, rate_limit_per_minute=1,
                         redis_url=CLOSED_PORT_REDIS)
    app = create_app(settings)
    with TestClient(app) as c:
        _, token = make_user_token(app, email="d@example.com")
        for _ in range(3):
            assert c.get("/v1/symbols", headers=auth_header(token)).status_code == 200


# -- request ids and logs -------------------------------------------------------------------------

def test_request_id_echoed_or_generated(api_data, app_db_url) -> None:
    with TestClient(create_app(_settings(api_data, app_db_url))) as c:
        assert c.get("/healthz", headers={"X-Request-ID": "abc-123._Z"}).headers[
            "X-Request-ID"] == "abc-123._Z"
        for bad in ("has space", "x" * 65, "semi;colon", ""):
            got = c.get("/healthz", headers={"X-Request-ID": bad}).headers["X-Request-ID"]
            assert got != bad
            uuid.UUID(got)
        first = c.get("/healthz").headers["X-Request-ID"]
        second = c.get("/healthz").headers["X-Request-ID"]
        assert first != second
        uuid.UUID(first)
        resp = c.get("/no/such/path", headers={"X-Request-ID": "req-404"})
        assert resp.status_code == 404 and resp.headers["X-Request-ID"] == "req-404"


def test_request_id_in_every_log_line_and_access_log(api_data, app_db_url, caplog) -> None:
    settings = _settings(api_data, app_db_url, redis_url=CLOSED_PORT_REDIS)
    app = create_app(settings)
    caplog.handler.addFilter(RequestIdFilter())
    stream = io.StringIO()
    formatted = logging.StreamHandler(stream)
    formatted.setFormatter(logging.Formatter(LOG_FORMAT))
    formatted.addFilter(RequestIdFilter())
    access = logging.getLogger("miraikakaku.access")
    access.addHandler(formatted)
    try:
        with caplog.at_level(logging.INFO), TestClient(app) as c:
            user_id, token = make_user_token(app, email="e@example.com")
            resp = c.get("/readyz", headers={"X-Request-ID": "ready-1"})
            assert resp.status_code == 503  # Redis is down: the check logs a warning
            c.get("/v1/symbols", headers={**auth_header(token), "X-Request-ID": "sym-1"})
    finally:
        access.removeHandler(formatted)
    during = [r for r in caplog.records if r.name == "serving.app.api.routes.health"]
    assert during and all(r.request_id == "ready-1" for r in during)
    lines = {r.request_id: r for r in caplog.records if r.name == "miraikakaku.access"}
    assert lines["ready-1"].status == 503 and lines["ready-1"].path == "/readyz"
    assert lines["ready-1"].method == "GET" and lines["ready-1"].duration_ms >= 0
    assert lines["ready-1"].user_id is None
    assert lines["sym-1"].user_id == user_id and lines["sym-1"].status == 200
    text = stream.getvalue()
    assert "request_id=sym-1 GET /v1/symbols 200" in text
    assert f"user={user_id}" in text
    outside = [r for r in caplog.records if r.name == "miraikakaku.access"
               and r.request_id == "-"]
    assert not outside


# -- CORS -----------------------------------------------------------------------------------------

def test_cors_allowed_and_disallowed_origin(api_data, app_db_url) -> None:
    allowed = "https://app.example.com"
    settings = _settings(api_data, app_db_url, cors_origins=[allowed])
    preflight = {"Access-Control-Request-Method": "GET",
                 "Access-Control-Request-Headers": "authorization"}
    app = create_app(settings)
    with TestClient(app) as c:
        ok = c.options("/v1/symbols", headers={"Origin": allowed, **preflight})
        assert ok.status_code == 200
        assert ok.headers["access-control-allow-origin"] == allowed
        assert "GET" in ok.headers["access-control-allow-methods"]
        assert "authorization" in ok.headers["access-control-allow-headers"].lower()
        bad = c.options("/v1/symbols", headers={"Origin": "https://evil.example", **preflight})
        assert bad.status_code == 400
        assert "access-control-allow-origin" not in bad.headers
        _, token = make_user_token(app, email="f@example.com")
        simple = c.get("/v1/symbols", headers={"Origin": allowed, **auth_header(token)})
        assert simple.status_code == 200
        assert simple.headers["access-control-allow-origin"] == allowed
        assert "x-request-id" in simple.headers["access-control-expose-headers"].lower()
        other = c.get("/v1/symbols", headers={"Origin": "https://evil.example",
                                              **auth_header(token)})
        assert "access-control-allow-origin" not in other.headers


def test_no_cors_headers_without_origins(api_data, app_db_url) -> None:
    with TestClient(create_app(_settings(api_data, app_db_url))) as c:
        resp = c.get("/healthz", headers={"Origin": "https://app.example.com"})
        assert not any(h.startswith("access-control-") for h in resp.headers)
        pre = c.options("/healthz", headers={"Origin": "https://app.example.com",
                                             "Access-Control-Request-Method": "GET"})
        assert pre.status_code == 405
        assert not any(h.startswith("access-control-") for h in pre.headers)


# -- readiness ------------------------------------------------------------------------------------

def test_readyz_ok_with_every_dependency(api_data, app_db_url, redis_prefix) -> None:
    settings = _settings(api_data, app_db_url, redis_url=REDIS_URL)
    with TestClient(create_app(settings)) as c:
        resp = c.get("/readyz")
        assert resp.status_code == 200
        assert resp.json() == {"status": "ok", "checks": {"store": "ok", "database": "ok",
                                                          "redis": "ok"}}
        assert c.get("/healthz").json() == {"status": "ok", "store": "ok"}


def test_readyz_without_redis_has_no_redis_check(api_data, app_db_url) -> None:
    with TestClient(create_app(_settings(api_data, app_db_url))) as c:
        assert c.get("/readyz").json() == {"status": "ok",
                                           "checks": {"store": "ok", "database": "ok"}}


def test_readyz_503_store_missing(tmp_path, app_db_url) -> None:
    settings = Settings(env="test", data_dir=tmp_path / "empty", database_url=app_db_url)
    with TestClient(create_app(settings)) as c:
        resp = c.get("/readyz")
        assert resp.status_code == 503
        assert resp.json() == {"status": "unavailable",
                               "checks": {"store": "missing", "database": "ok"}}


@pytest.mark.parametrize("unreachable", ["postgresql-closed-port", "sqlite-directory"])
def test_readyz_503_database_unreachable(api_data, app_db_url, unreachable, tmp_path) -> None:
    url = ("postgresql+psycopg://postgres@127.0.0.1:1/nowhere?connect_timeout=3"
           if unreachable == "postgresql-closed-port"
           else f"sqlite:///{tmp_path}")  # a directory: SQLite cannot open it
    app = create_app(_settings(api_data, app_db_url))
    with TestClient(app) as c:
        assert c.get("/readyz").status_code == 200
        working, app.state.db = app.state.db, Database(url)  # the database goes away
        try:
            resp = c.get("/readyz")
        finally:
            app.state.db.close()
            app.state.db = working
        assert resp.status_code == 503
        assert resp.json() == {"status": "unavailable",
                               "checks": {"store": "ok", "database": "error"}}


def test_readyz_503_redis_closed_port(api_data, app_db_url) -> None:
    settings = _settings(api_data, app_db_url, redis_url=CLOSED_PORT_REDIS)
    with TestClient(create_app(settings)) as c:
        resp = c.get("/readyz")
        assert resp.status_code == 503
        assert resp.json()["checks"] == {"store": "ok", "database": "ok", "redis": "error"}


# -- metrics --------------------------------------------------------------------------------------

def _samples(text: str) -> dict[tuple[str, tuple], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_metrics_count_route_templates(api_data, app_db_url) -> None:
    app = create_app(_settings(api_data, app_db_url, rate_limit_per_minute=5))
    with TestClient(app) as c:
        _, token = make_user_token(app, email="g@example.com")
        for symbol in ("AAPL", "MSFT", "aapl"):
            assert c.get(f"/v1/symbols/{symbol}/bars", params={"limit": 2},
                         headers=auth_header(token)).status_code == 200
        assert c.get("/v1/symbols/ZZZZ/bars", headers=auth_header(token)).status_code == 404
        assert c.get("/nothing/here").status_code == 404
        c.get("/v1/symbols", headers=auth_header(token))
        assert c.get("/v1/symbols", headers=auth_header(token)).status_code == 429
        text = c.get("/metrics").text
        other_app = create_app(_settings(api_data, app_db_url))  # its own registry
    samples = _samples(text)
    bars = "/v1/symbols/{symbol}/bars"

    def count(route: str, status: str) -> float:
        key = ("miraikakaku_http_requests_total",
               (("method", "GET"), ("route", route), ("status", status)))
        return samples.get(key, 0.0)

    assert count(bars, "200") == 3
    assert count(bars, "404") == 1
    assert count("<unmatched>", "404") == 1
    assert count("/v1/symbols", "429") == 1
    assert samples[("miraikakaku_http_request_duration_seconds_count",
                    (("method", "GET"), ("route", bars)))] == 4
    assert ("miraikakaku_http_requests_in_progress", (("method", "GET"),)) in samples
    assert "/v1/symbols/AAPL/bars" not in text  # raw paths never become labels
    assert other_app.state.metrics.registry is not app.state.metrics.registry


def test_unhandled_error_still_gets_request_id_access_line_and_metric(api_data, app_db_url,
                                                                      caplog) -> None:
    app = create_app(_settings(api_data, app_db_url))

    async def boom() -> None:
        raise RuntimeError("kaboom")

    app.add_api_route("/boom", boom)  # a route with a bug
    caplog.handler.addFilter(RequestIdFilter())
    with caplog.at_level(logging.INFO), TestClient(app, raise_server_exceptions=False) as c:
        resp = c.get("/boom", headers={"X-Request-ID": "err-1"})
        text = c.get("/metrics").text
    assert resp.status_code == 500
    assert resp.json() == {"error": {"code": "internal_error", "message": "internal server error"}}
    assert resp.headers["X-Request-ID"] == "err-1"
    assert "kaboom" not in resp.text
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors and all(r.request_id == "err-1" for r in errors)  # the traceback line too
    access = [r for r in caplog.records if r.name == "miraikakaku.access"]
    assert [(r.status, r.request_id) for r in access][0] == (500, "err-1")
    assert _samples(text)[("miraikakaku_http_requests_total",
                           (("method", "GET"), ("route", "/boom"), ("status", "500")))] == 1
