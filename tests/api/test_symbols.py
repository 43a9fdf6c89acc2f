"""Read-API tests for ``/v1/symbols``: instruments, quotes, bars and predictions over real data.

Expected values are computed from the real files in ../shared/data with pandas, independently of
the fixture that filled the store. Run: ``pytest tests/api/test_symbols.py -q``.
"""

import datetime as dt

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from miraikakaku.calendars import get_calendar
from miraikakaku.instruments import Instrument, load_master
from serving.app.main import create_app
from tests.api.conftest import SHARED_DATA, authorize

pytestmark = pytest.mark.api


def _last_row(frame: pd.DataFrame, **match: str) -> pd.Series:
    sel = frame
    for col, value in match.items():
        sel = sel[sel[col] == value]
    return sel.sort_values("date").iloc[-1]


def _in_range(frame: pd.DataFrame, start: str, end: str, **match: str) -> pd.DataFrame:
    sel = frame
    for col, value in match.items():
        sel = sel[sel[col] == value]
    return sel[(sel["date"] >= start) & (sel["date"] <= end)].sort_values("date")


def _instruments() -> list[Instrument]:
    master = load_master()
    return [i for i in (master.lookup(s) for s in ("AAPL", "MSFT", "7203.T")) if i is not None]


def _assert_error(resp, status: int, code: str) -> dict:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    return body["error"]


# -- instruments ---------------------------------------------------------------------------------

def test_list_symbols(client: TestClient) -> None:
    resp = client.get("/v1/symbols")
    assert resp.status_code == 200
    body = resp.json()
    assert body["count"] == 3
    assert [i["instrument_id"] for i in body["data"]] == ["XNAS:AAPL", "XNAS:MSFT", "XTKS:7203"]
    toyota = body["data"][2]
    assert toyota == {"instrument_id": "XTKS:7203", "symbol": "7203.T", "mic": "XTKS",
                      "calendar": "XTKS", "currency": "JPY", "timezone": "Asia/Tokyo",
                      "kind": "stock", "name": "Toyota Motor", "known": True}


@pytest.mark.parametrize("symbol", ["7203.T", "7203.t", "XTKS:7203", "xtks:7203"])
def test_read_symbol_by_alias_or_id(client: TestClient, symbol: str) -> None:
    resp = client.get(f"/v1/symbols/{symbol}")
    assert resp.status_code == 200
    assert resp.json()["instrument_id"] == "XTKS:7203"


# -- quotes --------------------------------------------------------------------------------------

@pytest.mark.parametrize("symbol", ["AAPL", "aapl", "XNAS:AAPL", "xnas:Aapl"])
def test_quote_is_last_real_row(client: TestClient, us_frame: pd.DataFrame, symbol: str) -> None:
    last = _last_row(us_frame, symbol="AAPL")
    resp = client.get(f"/v1/symbols/{symbol}/quote")
    assert resp.status_code == 200, resp.text
    q = resp.json()
    session = dt.date.fromisoformat(last["date"])
    assert q["instrument_id"] == "XNAS:AAPL" and q["symbol"] == "AAPL"
    assert q["source"] == "sp500_5yr"
    assert q["session_date"] == last["date"]
    assert (q["open"], q["high"], q["low"], q["close"]) == pytest.approx(
        (last["open"], last["high"], last["low"], last["close"]))
    assert q["volume"] == pytest.approx(last["volume"])
    assert q["adj_close"] is None
    assert q["currency"] == "USD"
    # the session close in UTC, with an explicit offset
    close_utc, _ = get_calendar("XNYS").session_close(session)
    assert q["event_time"] == close_utc.isoformat()
    assert q["event_time"].endswith("+00:00")
    assert dt.datetime.fromisoformat(q["event_time"]) == close_utc


def test_quote_7203_is_latest_session_in_jpy(client: TestClient, jp_frame: pd.DataFrame) -> None:
    last = jp_frame.sort_values("date").iloc[-1]
    q = client.get("/v1/symbols/7203.T/quote").json()
    assert q["session_date"] == last["date"]
    assert q["source"] == last["source"]
    assert q["close"] == pytest.approx(last["close"])
    assert q["currency"] == "JPY"
    # Tokyo closes at 15:00 (15:30 from 2024-11-05) local = 06:00 / 06:30 UTC
    assert dt.datetime.fromisoformat(q["event_time"]).utcoffset() == dt.timedelta(0)


@pytest.mark.parametrize("write_order", [("chart0", "mlbot"), ("mlbot", "chart0")])
def test_quote_prefers_source_priority_on_same_session(
        build_store, api_data, jp_frame: pd.DataFrame, write_order: tuple[str, str]) -> None:
    chart0 = set(jp_frame.loc[jp_frame["source"] == "chart0", "date"])
    mlbot = set(jp_frame.loc[jp_frame["source"] == "mlbot", "date"])
    common = sorted(chart0 & mlbot)[-3:]
    assert len(common) == 3
    last_day = common[-1]
    events = [e for src in write_order for e in api_data.bars("XTKS:7203", src)
              if e.session_date.isoformat() in common]
    assert len(events) == 6
    settings = build_store([*_instruments(), *events])
    with TestClient(create_app(settings)) as c:
        authorize(c)
        q = c.get("/v1/symbols/7203.T/quote").json()
        assert q["session_date"] == last_day
        assert q["source"] == "chart0"  # chart0 ranks before mlbot in the default priority
        expected = _last_row(jp_frame[jp_frame["date"] <= last_day], source="chart0")
        assert q["close"] == pytest.approx(expected["close"])
        bars = c.get("/v1/symbols/7203.T/bars").json()
        assert bars["source"] == "chart0" and bars["count"] == 3
        raw = c.get("/v1/symbols/7203.T/bars", params={"source": "mlbot"}).json()
        ml_last = _last_row(jp_frame[jp_frame["date"] <= last_day], source="mlbot")
        assert raw["data"][-1]["close"] == pytest.approx(ml_last["close"])
        assert raw["data"][-1]["adj_close"] == pytest.approx(ml_last["adj_close"])


def test_quote_404_without_bars(build_store) -> None:
    settings = build_store(_instruments())
    with TestClient(create_app(settings)) as c:
        authorize(c)
        err = _assert_error(c.get("/v1/symbols/AAPL/quote"), 404, "not_found")
        assert "XNAS:AAPL" in err["message"]
        body = c.get("/v1/symbols/AAPL/bars").json()
        assert body["source"] is None and body["data"] == [] and body["count"] == 0


# -- bars ----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("symbol", "start", "end"), [
    ("AAPL", "2017-01-01", "2017-12-31"),
    ("MSFT", "2016-02-29", "2016-03-31"),
    ("aapl", "2018-02-07", "2018-02-07"),
    ("XNAS:AAPL", "2013-01-01", "2013-02-28"),
])
def test_bars_range(client: TestClient, us_frame: pd.DataFrame, symbol: str, start: str,
                    end: str) -> None:
    expected = _in_range(us_frame, start, end, symbol=symbol.split(":")[-1].upper())
    resp = client.get(f"/v1/symbols/{symbol}/bars", params={"start": start, "end": end})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["source"] == "sp500_5yr" and body["currency"] == "USD"
    assert body["count"] == len(expected) == len(body["data"])
    assert [b["session_date"] for b in body["data"]] == list(expected["date"])
    assert [b["close"] for b in body["data"]] == pytest.approx(list(expected["close"]))
    assert all(b["event_time"].endswith("+00:00") for b in body["data"])


def test_bars_open_ended_and_default_limit(client: TestClient, us_frame: pd.DataFrame) -> None:
    aapl = us_frame[us_frame["symbol"] == "AAPL"].sort_values("date")
    tail = client.get("/v1/symbols/AAPL/bars", params={"start": "2018-01-01"}).json()
    assert tail["count"] == (aapl["date"] >= "2018-01-01").sum()
    everything = client.get("/v1/symbols/AAPL/bars").json()
    assert everything["count"] == min(1000, len(aapl))
    assert everything["data"][0]["session_date"] == aapl["date"].iloc[0]
    big = client.get("/v1/symbols/AAPL/bars", params={"limit": 10_000}).json()
    assert big["count"] == len(aapl)


def test_bars_limit(client: TestClient, us_frame: pd.DataFrame) -> None:
    expected = _in_range(us_frame, "2017-01-01", "2017-12-31", symbol="MSFT").head(5)
    body = client.get("/v1/symbols/MSFT/bars",
                      params={"start": "2017-01-01", "end": "2017-12-31", "limit": 5}).json()
    assert [b["session_date"] for b in body["data"]] == list(expected["date"])


def test_bars_default_source_follows_priority(client: TestClient, jp_frame: pd.DataFrame) -> None:
    params = {"start": "2017-01-01", "end": "2017-12-31"}
    body = client.get("/v1/symbols/7203.T/bars", params=params).json()
    assert body["source"] == "chart0" and body["currency"] == "JPY"
    expected = _in_range(jp_frame, "2017-01-01", "2017-12-31", source="chart0")
    assert body["count"] == len(expected)
    assert [b["close"] for b in body["data"]] == pytest.approx(list(expected["close"]))
    for source in ("mlbot", "MLBOT"):
        raw = client.get("/v1/symbols/XTKS:7203/bars", params={**params, "source": source}).json()
        assert raw["source"] == "mlbot"
        assert raw["count"] == len(_in_range(jp_frame, "2017-01-01", "2017-12-31",
                                              source="mlbot"))


def test_bars_skip_unparseable_rows(client: TestClient) -> None:
    # chart0 has "#VALUE!" on 2020-10-01 in the Tokyo file: the row is not stored
    body = client.get("/v1/symbols/7203.T/bars", params={"start": "2020-09-30",
                                                         "end": "2020-10-02"}).json()
    assert "2020-10-01" not in [b["session_date"] for b in body["data"]]


def test_bars_carry_quality_flags(client: TestClient) -> None:
    # mlbot starts in 1983, before the XTKS calendar's range: the close time is estimated
    body = client.get("/v1/symbols/7203.T/bars",
                      params={"source": "mlbot", "limit": 1}).json()
    assert body["data"][0]["session_date"].startswith("1983-")
    assert "calendar_estimated" in body["data"][0]["flags"]


def test_bars_unknown_source(client: TestClient) -> None:
    err = _assert_error(client.get("/v1/symbols/7203.T/bars", params={"source": "yfinance"}),
                        404, "not_found")
    assert "chart0" in err["message"]  # lists what is available
    _assert_error(client.get("/v1/symbols/AAPL/bars", params={"source": "chart0"}),
                  404, "not_found")
    _assert_error(client.get("/v1/symbols/AAPL/bars", params={"source": "no such/source"}),
                  422, "invalid_request")


@pytest.mark.parametrize("value", ["2018-13-01", "2018-02-30", "20180207", "2018-2-7",
                                   "2018-02-07T00:00:00", "07/02/2018", "yesterday", "",
                                   "0999-01-01", "1518000000"])
@pytest.mark.parametrize("param", ["start", "end"])
def test_bars_bad_date_is_422(client: TestClient, param: str, value: str) -> None:
    err = _assert_error(client.get("/v1/symbols/AAPL/bars", params={param: value}),
                        422, "invalid_request")
    assert err["details"] and err["details"][0]["loc"] == ["query", param]


def test_bars_start_after_end_is_422(client: TestClient) -> None:
    err = _assert_error(client.get("/v1/symbols/AAPL/bars",
                                   params={"start": "2018-02-07", "end": "2018-02-06"}),
                        422, "invalid_request")
    assert err["details"][0]["loc"] == ["query", "start"]


@pytest.mark.parametrize("limit", ["0", "-1", "10001", "1e3", "abc", ""])
def test_bars_limit_out_of_range_is_422(client: TestClient, limit: str) -> None:
    err = _assert_error(client.get("/v1/symbols/AAPL/bars", params={"limit": limit}),
                        422, "invalid_request")
    assert err["details"][0]["loc"] == ["query", "limit"]


# -- unknown symbols -----------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/v1/symbols/ZZZZ", "/v1/symbols/ZZZZ/quote",
                                  "/v1/symbols/ZZZZ/bars", "/v1/symbols/XNYS:AAPL/predictions",
                                  "/v1/symbols/7203/quote", "/v1/symbols/XTKS:7203.T/bars"])
def test_unknown_symbol_is_404(client: TestClient, path: str) -> None:
    err = _assert_error(client.get(path), 404, "not_found")
    assert "unknown symbol" in err["message"]


# -- predictions ---------------------------------------------------------------------------------

def test_predictions(client: TestClient, api_data) -> None:
    expected = [p for p in api_data.predictions if p.instrument_id == "XNAS:AAPL"]
    body = client.get("/v1/symbols/aapl/predictions").json()
    assert body["instrument_id"] == "XNAS:AAPL" and body["currency"] == "USD"
    assert body["count"] == len(expected) == 3
    for got, want in zip(body["data"], expected):
        assert got["as_of_date"] == want.as_of_date.isoformat()
        assert got["target_date"] == want.target_date.isoformat()
        assert got["as_of_time"] == want.as_of_time.isoformat()
        assert got["predicted_price"] == pytest.approx(want.predicted_price)
        assert got["predicted_log_return"] == pytest.approx(want.predicted_log_return)
        assert (got["model_name"], got["model_version"], got["source"]) == (
            "lstm_daily", "1", "sp500_5yr")
    # the last as-of session is the last real bar; its target is the next NYSE session
    assert body["data"][-1]["as_of_date"] == "2018-02-07"
    assert body["data"][-1]["target_date"] == "2018-02-08"


def test_predictions_range_and_limit(client: TestClient, api_data) -> None:
    aapl = [p for p in api_data.predictions if p.instrument_id == "XNAS:AAPL"]
    day = aapl[1].as_of_date.isoformat()
    one = client.get("/v1/symbols/AAPL/predictions", params={"start": day, "end": day}).json()
    assert [p["as_of_date"] for p in one["data"]] == [day]
    first = client.get("/v1/symbols/AAPL/predictions", params={"limit": 1}).json()
    assert first["count"] == 1 and first["data"][0]["as_of_date"] == aapl[0].as_of_date.isoformat()
    none = client.get("/v1/symbols/MSFT/predictions").json()
    assert none == {"instrument_id": "XNAS:MSFT", "symbol": "MSFT", "currency": "USD",
                    "data": [], "count": 0, "next_cursor": None}
    jp = client.get("/v1/symbols/XTKS:7203/predictions").json()
    assert jp["count"] == 1 and jp["currency"] == "JPY"
    _assert_error(client.get("/v1/symbols/AAPL/predictions",
                             params={"start": "2018-02-08", "end": "2018-02-01"}),
                  422, "invalid_request")
    _assert_error(client.get("/v1/symbols/AAPL/predictions", params={"limit": 0}),
                  422, "invalid_request")


# -- the dated instrument master (as_of, listing dates, aliases) ---------------------------------

LEAN_DAILY = SHARED_DATA / "normalized" / "us_daily_lean.normalized.csv.gz"


@pytest.mark.parametrize(("as_of", "expected", "listed", "delisted"), [
    ("2000-01-03", "XNYS:FB-1999", "1999-09-29", "2003-03-28"),  # Lean map file fb.1
    ("2015-01-02", "XNAS:FB", "2012-05-18", None),                # Facebook (map file fb)
    (None, "XNAS:FB", "2012-05-18", None),                        # today's listing
])
def test_read_symbol_as_of_picks_the_company_of_the_date(client: TestClient, as_of, expected,
                                                         listed, delisted) -> None:
    params = {"as_of": as_of} if as_of else {}
    resp = client.get("/v1/symbols/FB", params=params)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["instrument_id"] == expected and body["known"] is True
    assert (body["currency"], body["calendar"], body["timezone"]) == (
        "USD", "XNYS", "America/New_York")
    assert (body["listing_date"], body["delisting_date"]) == (listed, delisted)
    assert [(a["symbol"], a["valid_from"], a["valid_to"]) for a in body["aliases"]] == [
        ("FB", listed, delisted)]


def test_read_symbol_old_ticker_gives_the_renamed_instrument(client: TestClient) -> None:
    body = client.get("/v1/symbols/WMI", params={"as_of": "2005-01-03"}).json()
    assert body["instrument_id"] == "XNYS:WM" and body["symbol"] == "WM"
    assert body["mic"] == "XNYS" and body["delisting_date"] is None
    assert body["aliases"] == [
        {"symbol": "UW", "valid_from": "1998-01-02", "valid_to": "1998-07-16",
         "source": "lean_map:wm"},
        {"symbol": "WMI", "valid_from": "1998-07-17", "valid_to": "2009-08-04",
         "source": "lean_map:wm"},
        {"symbol": "WM", "valid_from": "2009-08-05", "valid_to": None, "source": "lean_map:wm"}]
    # WM in 2000 was another company (Lean's wm.zip rows of 1998-12-09..2008-09-26)
    early = client.get("/v1/symbols/WM", params={"as_of": "2000-01-03"}).json()
    assert early["instrument_id"] == "XNYS:WM-1998" and early["delisting_date"] == "2008-09-26"


def test_read_symbol_keeps_the_store_row_and_adds_the_dates(client: TestClient,
                                                           jp_frame: pd.DataFrame) -> None:
    body = client.get("/v1/symbols/7203.T", params={"as_of": "2017-06-01"}).json()
    assert {k: body[k] for k in ("instrument_id", "mic", "currency", "timezone", "calendar",
                                 "name")} == {
        "instrument_id": "XTKS:7203", "mic": "XTKS", "currency": "JPY", "timezone": "Asia/Tokyo",
        "calendar": "XTKS", "name": "Toyota Motor"}
    assert body["listing_date"] == jp_frame["date"].min() == "1983-01-04"  # first row (mlbot)
    assert body["aliases"][0]["symbol"] == "7203.T"
    spx = client.get("/v1/symbols/^GSPC").json()  # a vendor's index code
    assert (spx["instrument_id"], spx["kind"], spx["mic"]) == ("INDEX:SPX", "index", "")


@pytest.mark.parametrize("as_of", ["2000-13-01", "20000103", "yesterday", "0999-01-01"])
def test_read_symbol_bad_as_of_is_422(client: TestClient, as_of: str) -> None:
    err = _assert_error(client.get("/v1/symbols/FB", params={"as_of": as_of}),
                        422, "invalid_request")
    assert err["details"][0]["loc"] == ["query", "as_of"]


def test_unknown_symbol_with_as_of_is_404(client: TestClient) -> None:
    _assert_error(client.get("/v1/symbols/ZZZZ", params={"as_of": "2000-01-03"}), 404,
                  "not_found")


def test_store_of_lean_fb_rows_serves_both_companies(build_store) -> None:
    from transforms.parsing import parse_fields

    lean = pd.read_csv(LEAN_DAILY, dtype=str)
    fb = lean[lean["symbol"] == "FB"]
    master = load_master()
    events = [parse_fields(row, default_source="lean", master=master)
              for row in fb.to_dict("records")]
    assert len(events) == len(fb) > 2_900
    ids = sorted({e.instrument_id for e in events})
    settings = build_store([*(master.get(i) for i in ids), *events])
    with TestClient(create_app(settings)) as c:
        authorize(c)
        listed = [i["instrument_id"] for i in c.get("/v1/symbols").json()["data"]]
        assert listed == ["XNAS:FB", "XNYS:FB-1999"]
        early = c.get("/v1/symbols/XNYS:FB-1999/bars", params={"limit": 10_000}).json()
        assert [b["session_date"] for b in early["data"]] == sorted(
            fb.loc[fb["date"] <= "2003-03-28", "date"])
        late = c.get("/v1/symbols/FB/bars", params={"limit": 10_000}).json()
        assert late["instrument_id"] == "XNAS:FB"
        assert [b["session_date"] for b in late["data"]] == sorted(
            fb.loc[fb["date"] >= "2012-05-18", "date"])
        assert c.get("/v1/symbols/FB/quote").json()["session_date"] == fb["date"].max()
        old = c.get("/v1/symbols/FB", params={"as_of": "2001-06-01"}).json()
        assert old["instrument_id"] == "XNYS:FB-1999"


def test_a_reused_ticker_finds_todays_listing_not_the_first_id_the_store_sorts(
        build_store) -> None:
    from serving.app.api.deps import find_instrument
    from stores.sqlite import open_store

    master = load_master()
    old, new = master.get("ARCX:VXX-2009"), master.get("BATS:VXX")  # vxx.1 and vxx map files
    settings = build_store([old, new])
    with open_store(settings.store_path, read_only=True) as store:
        assert store.get_instrument("VXX") == old  # the store alone: first id in sort order
        assert find_instrument(store, "VXX") == new
        assert find_instrument(store, "VXX", dt.date(2015, 1, 2)) == old
        assert find_instrument(store, "VXXB") == new  # the Series B's ticker until 2019-05-01
    with TestClient(create_app(settings)) as c:
        authorize(c)
        err = _assert_error(c.get("/v1/symbols/VXX/quote"), 404, "not_found")
        assert "BATS:VXX" in err["message"]  # found the instrument; it has no bars here
        assert c.get("/v1/symbols/VXX").json()["delisting_date"] is None
        assert c.get("/v1/symbols/VXX", params={"as_of": "2015-01-02"}).json()[
            "delisting_date"] == "2019-01-29"
