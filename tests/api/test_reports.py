"""``/v1/reports`` on SQLite and PostgreSQL application databases, over real prices.

The analytics store (``data_dir/warehouse``) holds what the pipeline's sink writes for the real
daily bars of AAPL, MSFT (S&P 500 file) and 7203.T, 1321.T (Tokyo file, every source since
2015). Checked: analyst and admin 200, user 403, anonymous 401; the list names every report
with its parameters; JSON rows equal the warehouse (performance rebased from
``daily_performance``); CSV equals JSON; PNG is a real image; unknown report 404; bad and
injected parameters 422 with nothing executed (the bars are all still there); no analytics store
503.

Run: ``.venv/bin/python -m pytest -q tests/api/test_reports.py``.
"""

from __future__ import annotations

import io
import struct
from pathlib import Path

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from analytics.reports import REPORTS
from analytics.sink import ParquetTableWriter, ParquetWarehouse
from miraikakaku.settings import Settings
from serving.app.main import create_app
from tests.api.tokens import auth_header, make_user_token
from tests.conftest import JP, SP500, read_rows, write_csv
from transforms.parsing import file_spec, iter_file

pytestmark = pytest.mark.api


@pytest.fixture(scope="module")
def warehouse_dir(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("reports-api")
    header, us = read_rows(SP500, {"AAPL", "MSFT"})
    jh, jp = read_rows(JP, {"7203.T", "1321.T"})
    records = [*iter_file(file_spec(write_csv(tmp / "us_daily_sp500_5yr_2013_2018.csv",
                                              header, us))),
               *iter_file(file_spec(write_csv(tmp / "jp_daily.csv", jh,
                                              [r for r in jp if r[1] >= "2015-01-01"])))]
    root = tmp / "warehouse"
    ParquetTableWriter(root, flush_rows=4_000).add_all(records)
    return root


@pytest.fixture()
def app_client(app_db_url: str, tmp_path: Path, warehouse_dir: Path):
    """(client, app) with the analytics store at ``data_dir/warehouse``."""
    data_dir = tmp_path / "var"
    data_dir.mkdir()
    (data_dir / "warehouse").symlink_to(warehouse_dir, target_is_directory=True)
    settings = Settings(env="test", data_dir=data_dir, database_url=app_db_url)
    with TestClient(create_app(settings)) as client:
        yield client, client.app


def _token(app, role: str, email: str | None = None) -> dict[str, str]:
    _, token = make_user_token(app, email=email or f"{role}@example.com", role=role)
    return auth_header(token)


def test_roles(app_client):
    client, app = app_client
    analyst, admin, user = (_token(app, r) for r in ("analyst", "admin", "user"))
    for path in ("/v1/reports", "/v1/reports/trend?start=2017-01-02&end=2017-01-31"):
        assert client.get(path).status_code == 401
        assert client.get(path, headers=user).status_code == 403
        assert client.get(path, headers=user).json()["error"]["code"] == "forbidden"
        assert client.get(path, headers=analyst).status_code == 200
        assert client.get(path, headers=admin).status_code == 200


def test_list_names_every_report_with_its_parameters(app_client):
    client, app = app_client
    body = client.get("/v1/reports", headers=_token(app, "analyst")).json()
    assert body["count"] == len(REPORTS) == len(body["data"])
    by_name = {r["name"]: r for r in body["data"]}
    assert set(by_name) == set(REPORTS)
    assert by_name["correlation"]["chart"] == "heatmap"
    params = {p["name"]: p for p in by_name["beta"]["parameters"]}
    assert set(params) == {"symbols", "benchmark", "start", "end"}
    assert params["symbols"]["required"] and params["benchmark"]["default"] == "1321.T"


def test_performance_json_csv_png(app_client, warehouse_dir):
    client, app = app_client
    h = _token(app, "analyst")
    q = "symbols=AAPL,7203.T&start=2016-01-04&end=2017-12-29"
    resp = client.get(f"/v1/reports/performance?{q}", headers=h)
    assert resp.status_code == 200, resp.text
    doc = resp.json()
    assert doc["parameters"] == {"symbols": ["XNAS:AAPL", "XTKS:7203"],
                                 "start": "2016-01-04", "end": "2017-12-29"}
    rows = pd.DataFrame(doc["rows"])
    with ParquetWarehouse(warehouse_dir) as pw:
        view = pw.warehouse().view("daily_performance", instrument_id=["XNAS:AAPL", "XTKS:7203"],
                                   order_by=["instrument_id", "session_date"])
    view = view[(view.session_date >= "2016-01-04") & (view.session_date <= "2017-12-29")]
    assert doc["count"] == len(rows) == len(view) > 800
    for iid, g in view.groupby("instrument_id"):
        mine = rows[rows.instrument_id == iid].reset_index(drop=True)
        g = g.reset_index(drop=True)
        assert mine.price.tolist() == g.price.tolist()
        assert mine.cumulative_return.tolist() == pytest.approx(
            (g.price / g.price.iloc[0] - 1).tolist(), rel=1e-12, abs=1e-15)
    csv = client.get(f"/v1/reports/performance?{q}&format=csv", headers=h)
    assert csv.status_code == 200 and csv.headers["content-type"].startswith("text/csv")
    from_csv = pd.read_csv(io.StringIO(csv.text), float_precision="round_trip")
    assert list(from_csv.columns) == doc["columns"]
    assert from_csv.cumulative_return.tolist() == rows.cumulative_return.tolist()
    png = client.get(f"/v1/reports/performance?{q}&format=png", headers=h)
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    assert png.content[:8] == b"\x89PNG\r\n\x1a\n" and len(png.content) > 10_000
    assert struct.unpack(">II", png.content[16:24])[0] >= 600


def test_correlation_and_beta(app_client):
    client, app = app_client
    h = _token(app, "analyst")
    corr = client.get("/v1/reports/correlation?symbols=AAPL,MSFT&start=2016-01-01",
                      headers=h).json()
    pairs = {(r["a"], r["b"]): r["corr"] for r in corr["rows"]}
    assert pairs[("XNAS:AAPL", "XNAS:AAPL")] == pytest.approx(1.0)
    ab, ba = pairs[("XNAS:AAPL", "XNAS:MSFT")], pairs[("XNAS:MSFT", "XNAS:AAPL")]
    assert 0 < ab < 1 and ab == pytest.approx(ba)
    beta = client.get("/v1/reports/beta?symbols=7203.T&benchmark=1321.T&start=2016-01-01",
                      headers=h).json()
    assert beta["count"] == 1 and beta["rows"][0]["benchmark"] == "XTKS:1321"
    assert 0.3 < beta["rows"][0]["beta"] < 2.0


@pytest.mark.parametrize("query", [
    "symbols=AAPL') OR 1=1 --",
    "symbols=AAPL%27)%20OR%201%3D1%20--",
    "symbols=ZZZZQ",
    "symbols=",
    "symbols=AAPL&start=2017-01-01' OR '1'='1",
    "symbols=AAPL&start=2018-01-02&end=2017-01-02",
    "symbols=AAPL&end=31/12/2017",
    "symbols=AAPL&benchmark=SPY",                      # performance takes no benchmark
    "symbols=" + ",".join(["AAPL", "MSFT", "IBM", "GE", "KO", "JPM", "XOM", "NVDA", "AMZN",
                           "GOOG", "LNT", "NWL", "CHD", "DHR", "A", "AAL", "ABC", "7203.T",
                           "6758.T", "9984.T", "8306.T"]),  # 21: over 20
    "symbols=AAPL&format=xml",
])
def test_bad_or_injected_parameters_are_422(app_client, query, warehouse_dir):
    client, app = app_client
    h = _token(app, "analyst")
    resp = client.get(f"/v1/reports/performance?{query}", headers=h)
    assert resp.status_code == 422, resp.text[:300]
    assert resp.json()["error"]["code"] == "invalid_request"
    # nothing was executed: the store still answers every bar
    ok = client.get("/v1/reports/performance?symbols=AAPL", headers=h).json()
    assert ok["count"] == 1259


def test_unknown_report_404_and_no_store_503(app_client, tmp_path, app_db_url):
    client, app = app_client
    h = _token(app, "analyst")
    assert client.get("/v1/reports/nope", headers=h).status_code == 404
    assert client.get("/v1/reports/DROP%20TABLE", headers=h).status_code in (404, 422)
    settings = Settings(env="test", data_dir=tmp_path / "empty",
                        database_url=app_db_url)
    with TestClient(create_app(settings)) as other:
        resp = other.get("/v1/reports/trend",
                         headers=_token(other.app, "analyst", "analyst2@example.com"))
    assert resp.status_code == 503 and resp.json()["error"]["code"] == "store_unavailable"
