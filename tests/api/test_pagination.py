"""Cursor pagination of bars, predictions and alerts over the SQLite serving store.

Walks real instruments page by page (``next_cursor`` until null) and checks that the pages,
concatenated, equal the unpaged answer, with and without a date range, a source and the ``1m``
interval (real AAPL minute bars of ``us_minute_trades_lean``); garbage, forged and foreign
cursors answer 422. The Bigtable store's paging is tested on the emulator in
``tests/integration/test_bigtable_store.py``.

Run: ``.venv/bin/python -m pytest -q tests/api/test_pagination.py``.
"""

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from miraikakaku.instruments import load_master
from miraikakaku.schema import PriceEvent
from miraikakaku.settings import Settings
from serving.app.main import create_app
from tests.api.tokens import auth_header, make_user_token
from tests.conftest import SHARED, read_rows, write_csv
from transforms.parsing import file_spec, iter_file

pytestmark = pytest.mark.api

MINUTES = SHARED / "normalized" / "us_minute_trades_lean.normalized.csv.gz"


def _app(settings: Settings, app_db_url: str) -> FastAPI:
    return create_app(settings.model_copy(update={"database_url": app_db_url,
                                                  "rate_limit_per_minute": 100_000,
                                                  "rate_limit_ip_per_minute": 100_000}))


@pytest.fixture()
def api(api_data, tmp_path) -> Iterator[tuple[TestClient, dict[str, str]]]:
    """A client over the session store and an analyst's auth header (app DB: SQLite; paging
    does not touch it, the gateway tests run every database check on PostgreSQL too)."""
    app = _app(api_data.settings, f"sqlite:///{tmp_path / 'app.db'}")
    with TestClient(app) as c:
        _, token = make_user_token(app, email="pager@example.com")
        yield c, auth_header(token)


def walk(client: TestClient, headers: dict[str, str], path: str, **params) -> tuple[list, int]:
    """Every item of ``path`` following ``next_cursor``; returns (items, pages)."""
    items, pages, cursor = [], 0, None
    while True:
        query = dict(params) if cursor is None else {**params, "cursor": cursor}
        resp = client.get(path, params=query, headers=headers)
        assert resp.status_code == 200, resp.text
        body = resp.json()
        pages += 1
        assert body["count"] == len(body["data"]) <= params.get("limit", 10**9)
        items.extend(body["data"])
        cursor = body["next_cursor"]
        if cursor is None:
            return items, pages
        assert body["count"] == params["limit"]  # only a full page has a next one


def test_bars_walk_equals_unpaged(api, api_data) -> None:
    client, headers = api
    full = client.get("/v1/symbols/AAPL/bars", params={"limit": 10_000}, headers=headers).json()
    assert full["next_cursor"] is None
    assert full["count"] == len(api_data.bars("XNAS:AAPL", "sp500_5yr")) > 1000
    paged, pages = walk(client, headers, "/v1/symbols/AAPL/bars", limit=250)
    assert paged == full["data"]
    assert pages == full["count"] // 250 + 1
    # a page size that fits the listing exactly: one page, no cursor (the store is asked for
    # limit + 1 rows, so there is never an empty last page)
    exact, pages = walk(client, headers, "/v1/symbols/AAPL/bars", limit=full["count"])
    assert exact == full["data"] and pages == 1


def test_bars_walk_with_range_and_source(api) -> None:
    client, headers = api
    params = {"start": "2017-03-01", "end": "2017-12-31", "source": "mlbot"}
    full = client.get("/v1/symbols/7203.T/bars", params={**params, "limit": 10_000},
                      headers=headers).json()
    assert full["source"] == "mlbot" and full["count"] > 100
    paged, _ = walk(client, headers, "/v1/symbols/7203.T/bars", limit=7, **params)
    assert paged == full["data"]
    assert all("2017-03-01" <= b["session_date"] <= "2017-12-31" for b in paged)


def test_predictions_and_alerts_walk(api) -> None:
    client, headers = api
    full = client.get("/v1/symbols/AAPL/predictions", headers=headers).json()
    assert full["count"] == 3 and full["next_cursor"] is None
    paged, pages = walk(client, headers, "/v1/symbols/AAPL/predictions", limit=1)
    assert paged == full["data"] and pages == 3
    alerts = client.get("/v1/alerts", headers=headers).json()
    assert alerts["count"] == 4
    paged, pages = walk(client, headers, "/v1/alerts", limit=1)
    assert paged == alerts["data"] and pages == 4
    one = client.get("/v1/alerts", params={"symbol": "AAPL"}, headers=headers).json()
    paged, _ = walk(client, headers, "/v1/alerts", limit=2, symbol="AAPL")
    assert paged == one["data"] and len(paged) == 3


def _minute_bars(tmp: Path) -> list[PriceEvent]:
    header, rows = read_rows(MINUTES, {"AAPL"})
    path = write_csv(tmp / "us_minute_trades_lean.csv", header, rows)
    events = [e for e in iter_file(file_spec(path, default_source="lean"))
              if isinstance(e, PriceEvent)]
    assert events and {e.interval for e in events} == {"1m"}
    return events


def test_minute_bars_walk_with_interval(build_store, tmp_path, app_db_url) -> None:
    minutes = _minute_bars(tmp_path)
    aapl = load_master().lookup("AAPL")
    settings = build_store([aapl, *minutes])
    app = _app(settings, app_db_url)
    with TestClient(app) as c:
        _, token = make_user_token(app, email="minutes@example.com")
        headers = auth_header(token)
        full = c.get("/v1/symbols/AAPL/bars", params={"interval": "1m", "limit": 10_000},
                     headers=headers).json()
        assert full["count"] == len(minutes) and full["source"] == "lean"
        times = [b["event_time"] for b in full["data"]]
        assert times == sorted(times)
        paged, _ = walk(c, headers, "/v1/symbols/AAPL/bars", interval="1m", limit=500)
        assert paged == full["data"]
        assert c.get("/v1/symbols/AAPL/bars", headers=headers).json()["count"] == 0  # no 1d
        # a cursor of the 1m listing is not one of the 1d listing
        cursor = c.get("/v1/symbols/AAPL/bars", params={"interval": "1m", "limit": 1},
                       headers=headers).json()["next_cursor"]
        resp = c.get("/v1/symbols/AAPL/bars", params={"cursor": cursor}, headers=headers)
        assert resp.status_code == 422


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@pytest.mark.parametrize("cursor", [
    "garbage!!", "%%%", _b64(b"not json"), _b64(b"[1, 2]"), _b64(b'{"k": "XNAS:AAPL"}'),
    _b64(b'{"k": [1, 2]}'), _b64(b'{"k": ["XNAS:AAPL#1d#20180101"]}'),
    _b64(json.dumps({"k": ["XNAS:MSFT#1d#20180101", "sp500_5yr"]}).encode()),
    _b64(json.dumps({"k": ["XNAS:AAPL#1d#20180101", ""]}).encode()),
    _b64(b"\xff\xfe"), "x" * 513,
])
def test_garbage_cursor_is_422(api, cursor) -> None:
    client, headers = api
    resp = client.get("/v1/symbols/AAPL/bars", params={"cursor": cursor}, headers=headers)
    assert resp.status_code == 422, resp.text
    assert resp.json()["error"]["code"] == "invalid_request"


def test_cursors_do_not_cross_endpoints(api) -> None:
    client, headers = api
    bars = client.get("/v1/symbols/AAPL/bars", params={"limit": 1}, headers=headers).json()
    preds = client.get("/v1/symbols/AAPL/predictions", params={"limit": 1},
                       headers=headers).json()
    alerts = client.get("/v1/alerts", params={"limit": 1}, headers=headers).json()
    for path, cursor in (("/v1/symbols/AAPL/predictions", bars["next_cursor"]),
                         ("/v1/symbols/MSFT/predictions", preds["next_cursor"]),
                         ("/v1/alerts", preds["next_cursor"]),
                         ("/v1/symbols/AAPL/bars", alerts["next_cursor"]),
                         ("/v1/alerts", _b64(b'{"k": ["yesterday", "a"]}')),
                         ("/v1/alerts", _b64(b'{"k": ["2018-01-01T00:00:00", "a"]}'))):
        resp = client.get(path, params={"cursor": cursor}, headers=headers)
        assert resp.status_code == 422, (path, resp.text)
