"""Read-API tests for ``/healthz``, store availability (missing, unreadable, appearing later),
the app factory's injected store and the OpenAPI docs.

Run: ``pytest tests/api/test_health.py -q``.
"""

import shutil
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from miraikakaku.settings import Settings
from serving.app import create_app
from stores.sqlite import SqliteServingStore
from tests.api.conftest import authorize

pytestmark = pytest.mark.api

DATA_PATHS = ["/v1/symbols", "/v1/symbols/AAPL", "/v1/symbols/AAPL/quote",
              "/v1/symbols/AAPL/bars", "/v1/symbols/AAPL/predictions", "/v1/alerts"]


def test_healthz_ok(client: TestClient) -> None:
    resp = client.get("/healthz")
    assert resp.status_code == 200
    assert resp.json() == {"status": "ok", "store": "ok"}


def test_missing_store_is_503_not_500(tmp_path: Path) -> None:
    settings = Settings(env="test", data_dir=tmp_path / "nothing-here")
    with TestClient(create_app(settings)) as c:
        authorize(c)
        resp = c.get("/healthz")
        assert resp.status_code == 503
        assert resp.json() == {"status": "unavailable", "store": "missing"}
        for path in DATA_PATHS:
            resp = c.get(path)
            assert resp.status_code == 503, path
            assert resp.json()["error"]["code"] == "store_unavailable"
        assert c.get("/docs").status_code == 200  # the app itself is up


def test_store_written_after_start_is_picked_up(tmp_path: Path, api_data) -> None:
    settings = Settings(env="test", data_dir=tmp_path / "later")
    with TestClient(create_app(settings)) as c:
        authorize(c)
        assert c.get("/healthz").status_code == 503
        settings.store_path.parent.mkdir(parents=True, exist_ok=True)  # app.db made it
        shutil.copyfile(api_data.settings.store_path, settings.store_path)
        assert c.get("/healthz").json() == {"status": "ok", "store": "ok"}
        assert c.get("/v1/symbols").json()["count"] == 3


def test_unreadable_store_is_503_error(tmp_path: Path) -> None:
    settings = Settings(env="test", data_dir=tmp_path)
    settings.store_path.write_bytes(b"this is not a sqlite database" * 100)
    with TestClient(create_app(settings)) as c:
        authorize(c)
        resp = c.get("/healthz")
        assert resp.status_code == 503
        assert resp.json() == {"status": "unavailable", "store": "error"}
        assert c.get("/v1/symbols/AAPL/quote").status_code == 503


def test_injected_store(tmp_path: Path, api_data) -> None:
    store = SqliteServingStore(api_data.settings.store_path, read_only=True)
    settings = Settings(env="test", data_dir=tmp_path / "unused")  # no file there
    try:
        with TestClient(create_app(settings, store=store)) as c:
            authorize(c)
            assert c.get("/healthz").json() == {"status": "ok", "store": "ok"}
            assert c.get("/v1/symbols/MSFT/quote").json()["instrument_id"] == "XNAS:MSFT"
        # the app does not close a store it was given
        assert store.counts()["instruments"] == 3
    finally:
        store.close()


def test_works_without_lifespan(api_data) -> None:
    c = TestClient(create_app(api_data.settings))  # no `with`: the store opens on first use
    assert c.get("/healthz").json() == {"status": "ok", "store": "ok"}  # public: no app DB


def test_openapi_docs(client: TestClient) -> None:
    assert client.get("/docs").status_code == 200
    spec = client.get("/openapi.json").json()
    assert spec["info"]["title"] == "MiraiKakaku API"
    paths = spec["paths"]
    for path in ("/healthz", "/v1/symbols", "/v1/symbols/{symbol}/quote",
                 "/v1/symbols/{symbol}/bars", "/v1/symbols/{symbol}/predictions", "/v1/alerts"):
        assert "get" in paths[path], path
    start = next(p for p in paths["/v1/symbols/{symbol}/bars"]["get"]["parameters"]
                 if p["name"] == "start")
    assert "date" in str(start["schema"])


def test_unknown_route_and_method_use_error_shape(client: TestClient) -> None:
    resp = client.get("/v1/nope")
    assert resp.status_code == 404 and resp.json()["error"]["code"] == "not_found"
    resp = client.post("/v1/symbols")
    assert resp.status_code == 405 and resp.json()["error"]["code"] == "method_not_allowed"


def test_unexpected_error_is_json_500_without_traceback(api_data) -> None:
    app = create_app(api_data.settings)

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("secret internals")

    with TestClient(app, raise_server_exceptions=False) as c:
        resp = c.get("/boom")
    assert resp.status_code == 500
    assert resp.json() == {"error": {"code": "internal_error", "message": "internal server error"}}
    assert "secret" not in resp.text
