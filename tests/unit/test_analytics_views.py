"""The daily_bars, daily_performance, market_trend and market_trend_by_exchange views on DuckDB,
checked number by number against independent pandas computations on real data.

Data (../shared/data, loaded through ``Warehouse.load_records``, i.e. the BigQuery sink's rows):

* US: 10 stocks of the S&P 500 5-year file (source sp500_5yr; XNAS and XNYS);
* Tokyo: 7203.T, 9984.T and 8306.T from chart0, mlbot and yfinance; 6758.T and 1306.T (an ETF)
  from chart0 and mlbot; 4502.T from mlbot only (the best source present is mlbot); the Nikkei
  225 index (INDEX:N225, no MIC: left out of the exchange breadth);
* the AAPL and 7203.T rows loaded a second time (same insert_id: must count once), hourly copies
  of some AAPL bars (not daily: left out), and MSFT's bars under an id the reference table does
  not know (XNAS:TESTX: its MIC comes from the id).

pandas side: the best source per instrument from ``Settings().source_priority``, price =
``PriceEvent.feature_price``, ``shift``/``cummax``/``cummin`` per instrument, moving averages as
numpy means of sliding windows, breadth by ``groupby``. Every number agrees to 1e-9 absolute
(moving averages of prices up to ~10^4 yen differ by ~2e-11), counts exactly.

Run: ``.venv/bin/python -m pytest -q tests/unit/test_analytics_views.py``.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest
import sqlglot
from sqlglot import exp

from analytics.warehouse import VIEWS_DIR, Warehouse
from miraikakaku.instruments import load_master
from miraikakaku.schema import PriceEvent, make_event_id
from miraikakaku.settings import Settings
from tests.api.conftest import JP_FILE, US_FILE, instrument, read_rows, to_price_event

pytestmark = pytest.mark.unit

US = ("AAPL", "MSFT", "AMZN", "NVDA", "JPM", "XOM", "JNJ", "GE", "KO", "WMT")
JP_SOURCES = {"7203.T": ("chart0", "mlbot", "yfinance"), "9984.T": ("chart0", "mlbot", "yfinance"),
              "8306.T": ("chart0", "mlbot", "yfinance"), "6758.T": ("chart0", "mlbot"),
              "1306.T": ("chart0", "mlbot"), "4502.T": ("mlbot",), "N225": ("chart0",)}
VIEWS = ["daily_bars", "daily_performance", "market_trend", "market_trend_by_exchange"]
TOL = 1e-9


def _events() -> list[PriceEvent]:
    events = []
    for row in read_rows(US_FILE, US):
        ev = to_price_event(row, instrument(row["symbol"]), "sp500_5yr")
        if ev is not None:
            events.append(ev)
    for row in read_rows(JP_FILE, tuple(JP_SOURCES)):
        if row["source"] in JP_SOURCES[row["symbol"]]:
            ev = to_price_event(row, instrument(row["symbol"]), row["source"])
            if ev is not None:
                events.append(ev)
    return events


def _extras(events: list[PriceEvent]) -> list[PriceEvent]:
    """Replays, intraday copies and an instrument unknown to the reference table."""
    replay = [e for e in events if e.instrument_id in ("XNAS:AAPL", "XTKS:7203")]
    aapl = [e for e in events if e.instrument_id == "XNAS:AAPL"][:30]
    hourly = [dataclasses.replace(e, interval="1h", close=e.close * 2, adj_close=None,
                                  event_id=make_event_id(e.source, e.instrument_id, "1h",
                                                         f"{e.session_date:%Y%m%d}1500", 0))
              for e in aapl]
    testx = [dataclasses.replace(e, instrument_id="XNAS:TESTX", symbol="TESTX",
                                 event_id=e.event_id.replace("XNAS:MSFT", "XNAS:TESTX"))
             for e in events if e.instrument_id == "XNAS:MSFT"]
    return replay + hourly + testx


@pytest.fixture(scope="module")
def data():
    events = _events()
    extras = _extras(events)
    wh = Warehouse(None)
    wh.create_tables()
    wh.load_instruments()
    counts = wh.load_records(events + extras)
    assert counts == {"bars": len(events) + len(extras)}
    assert wh.create_views(names=VIEWS) == VIEWS
    unique = {e.event_id: e for e in events + extras}  # what the views must see
    yield wh, list(unique.values())
    wh.close()


def _rank(source: str) -> tuple[int, str]:
    priority = Settings().source_priority
    return (priority.index(source) if source in priority else len(priority), source)


def _mic(instrument_id: str) -> str | None:
    found = load_master().lookup(instrument_id)
    if found is None or found.instrument_id != instrument_id:
        return instrument_id.split(":")[0]
    return found.mic or None


def expected_bars(events: list[PriceEvent]) -> pd.DataFrame:
    df = pd.DataFrame([{
        "instrument_id": e.instrument_id, "symbol": e.symbol, "currency": e.currency,
        "source": e.source, "session_date": pd.Timestamp(e.session_date),
        "event_time": pd.Timestamp(e.event_time), "open": e.open, "high": e.high, "low": e.low,
        "close": e.close, "adj_close": e.adj_close, "volume": e.volume,
        "price": e.feature_price} for e in events if e.interval == "1d"
        and math.isfinite(e.feature_price)])
    best = df.groupby("instrument_id")["source"].agg(lambda s: min(set(s), key=_rank))
    df = df[df["source"] == df["instrument_id"].map(best)].copy()
    df["mic"] = df["instrument_id"].map({i: _mic(i) for i in df["instrument_id"].unique()})
    return df.sort_values(["instrument_id", "session_date"]).reset_index(drop=True)


def expected_performance(bars: pd.DataFrame) -> pd.DataFrame:
    df = bars[["instrument_id", "mic", "session_date", "price"]].copy()
    g = df.groupby("instrument_id")["price"]
    df["session_number"] = df.groupby("instrument_id").cumcount() + 1
    df["previous_price"] = g.shift(1)
    df["daily_return"] = df["price"] / df["previous_price"] - 1
    df["cumulative_return"] = df["price"] / g.transform("first") - 1
    df["running_max_price"] = g.cummax()
    df["drawdown"] = df["price"] / df["running_max_price"] - 1
    df["max_drawdown"] = df.groupby("instrument_id")["drawdown"].cummin()
    return df


def _moving_average(prices: np.ndarray, n: int) -> np.ndarray:
    out = np.full(len(prices), np.nan)
    if len(prices) >= n:
        out[n - 1:] = np.lib.stride_tricks.sliding_window_view(prices, n).mean(axis=1)
    return out


def expected_trend(perf: pd.DataFrame) -> pd.DataFrame:
    df = perf.copy()
    for n in (20, 50, 200):
        df[f"ma_{n}"] = np.concatenate([
            _moving_average(grp["price"].to_numpy(), n)
            for _, grp in df.groupby("instrument_id", sort=False)])
        df[f"above_ma_{n}"] = (df["price"] > df[f"ma_{n}"]).where(df[f"ma_{n}"].notna())
    return df


def expected_breadth(trend: pd.DataFrame) -> pd.DataFrame:
    df = trend[trend["mic"].notna()].copy()
    df["has_ma_50"] = df["ma_50"].notna()
    df["is_above"] = df["above_ma_50"].fillna(False).astype(bool)
    df["up"] = df["daily_return"] > 0
    df["down"] = df["daily_return"] < 0
    df["flat"] = df["daily_return"] == 0
    out = df.groupby(["mic", "session_date"]).agg(
        n_instruments=("price", "size"), n_with_ma_50=("has_ma_50", "sum"),
        n_above_ma_50=("is_above", "sum"), advancers=("up", "sum"), decliners=("down", "sum"),
        unchanged=("flat", "sum")).reset_index()
    out["share_above_ma_50"] = (out["n_above_ma_50"] / out["n_with_ma_50"]).where(
        out["n_with_ma_50"] > 0)
    out["net_advancers"] = out["advancers"] - out["decliners"]
    return out


def _assert_close(got: pd.Series, want: pd.Series, name: str) -> None:
    """Equal NULLs, and |got - want| <= 1e-9 elsewhere."""
    got = got.astype(float).to_numpy()
    want = want.astype(float).to_numpy()
    assert np.array_equal(np.isnan(got), np.isnan(want)), f"{name}: NULLs differ"
    ok = ~np.isnan(want)
    err = np.abs(got[ok] - want[ok])
    assert err.max(initial=0.0) <= TOL, f"{name}: max error {err.max()}"


def _sorted(df: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    return df.sort_values(keys).reset_index(drop=True)


# -- tests ------------------------------------------------------------------------------------
def test_data_covers_the_cases(data) -> None:
    wh, events = data
    raw = wh.query("SELECT COUNT(*) AS n, COUNT(DISTINCT insert_id) AS d FROM miraikakaku.bars")
    assert raw["n"].iloc[0] > raw["d"].iloc[0] == len(events)  # duplicates are stored
    sources = wh.query("SELECT instrument_id, COUNT(DISTINCT source) AS n FROM miraikakaku.bars "
                       "GROUP BY instrument_id")
    assert (sources["n"] > 1).sum() >= 5  # the best-source choice matters for several


def test_daily_bars(data) -> None:
    wh, events = data
    want = expected_bars(events)
    got = _sorted(wh.view("daily_bars"), ["instrument_id", "session_date"])
    assert len(want) > 30_000
    assert list(got[["instrument_id", "session_date"]].itertuples(index=False)) == \
        list(want[["instrument_id", "session_date"]].itertuples(index=False))
    for col in ("symbol", "mic", "currency", "source", "event_time"):
        assert got[col].tolist() == want[col].tolist(), col
    for col in ("open", "high", "low", "close", "adj_close", "volume", "price"):
        _assert_close(got[col], want[col], col)
    best = got.groupby("instrument_id")["source"].agg(set)
    assert best["XTKS:7203"] == {"chart0"} and best["XTKS:4502"] == {"mlbot"}
    assert best["XNAS:AAPL"] == {"sp500_5yr"}
    mic = got.groupby("instrument_id")["mic"].first()
    assert mic["XNAS:TESTX"] == "XNAS" and mic["XNYS:JPM"] == "XNYS"
    assert got.loc[got["instrument_id"] == "INDEX:N225", "mic"].isna().all()


def test_daily_bars_counts_duplicates_once(data) -> None:
    wh, _ = data
    per_day = wh.query("SELECT instrument_id, session_date, COUNT(*) AS n "
                       "FROM miraikakaku.daily_bars GROUP BY instrument_id, session_date "
                       "HAVING COUNT(*) > 1")
    assert per_day.empty
    aapl = wh.view("daily_bars", instrument_id="XNAS:AAPL")
    raw = wh.query("SELECT COUNT(*) AS n FROM miraikakaku.bars WHERE instrument_id = @i "
                   "AND `interval` = '1d'", {"i": "XNAS:AAPL"})["n"].iloc[0]
    assert raw == 2 * len(aapl)


def test_daily_performance(data) -> None:
    wh, events = data
    want = expected_performance(expected_bars(events))
    got = _sorted(wh.view("daily_performance"), ["instrument_id", "session_date"])
    assert got["session_date"].tolist() == want["session_date"].tolist()
    assert got["session_number"].tolist() == want["session_number"].tolist()
    for col in ("price", "previous_price", "daily_return", "cumulative_return",
                "running_max_price", "drawdown", "max_drawdown"):
        _assert_close(got[col], want[col], col)
    assert (got["drawdown"] <= 0).all() and (got["max_drawdown"] <= got["drawdown"]).all()
    worst = got.groupby("instrument_id")["max_drawdown"].last()
    assert worst["XTKS:9984"] < -0.5  # SoftBank fell more than half from a peak since 2016


def test_market_trend(data) -> None:
    wh, events = data
    want = expected_trend(expected_performance(expected_bars(events)))
    got = _sorted(wh.view("market_trend"), ["instrument_id", "session_date"])
    assert got["session_date"].tolist() == want["session_date"].tolist()
    _assert_close(got["daily_return"], want["daily_return"], "daily_return")
    for n in (20, 50, 200):
        _assert_close(got[f"ma_{n}"], want[f"ma_{n}"], f"ma_{n}")
        ok = want[f"ma_{n}"].notna()
        # a price within rounding of its average is an exact tie on both sides (flat prices,
        # e.g. 4502.T in 1988): the above_ma comparison below never hinges on rounding
        near = ok & ((got[f"ma_{n}"] - got["price"]).abs() <= 1e-6)
        assert (got[f"ma_{n}"][near] == got["price"][near]).all()
        assert (want[f"ma_{n}"][near] == want["price"][near]).all()
        assert got[f"above_ma_{n}"][ok].astype(bool).tolist() == \
            want[f"above_ma_{n}"][ok].astype(bool).tolist()
        assert got[f"above_ma_{n}"][~ok].isna().all()
    first = got.groupby("instrument_id").head(199)
    assert first["ma_200"].isna().all()


def test_market_trend_by_exchange(data) -> None:
    wh, events = data
    want = expected_breadth(expected_trend(expected_performance(expected_bars(events))))
    got = _sorted(wh.view("market_trend_by_exchange"), ["mic", "session_date"])
    assert set(got["mic"]) == {"XNAS", "XNYS", "XTKS"}
    assert list(got[["mic", "session_date"]].itertuples(index=False)) == \
        list(want[["mic", "session_date"]].itertuples(index=False))
    for col in ("n_instruments", "n_with_ma_50", "n_above_ma_50", "advancers", "decliners",
                "unchanged", "net_advancers"):
        assert got[col].dtype == np.int64, col
        assert got[col].tolist() == want[col].astype(int).tolist(), col
    _assert_close(got["share_above_ma_50"], want["share_above_ma_50"], "share_above_ma_50")
    busy = got[(got["mic"] == "XNYS") & (got["n_with_ma_50"] == 6)]
    assert len(busy) > 1000 and busy["share_above_ma_50"].between(0, 1).all()
    assert (busy["advancers"] + busy["decliners"] + busy["unchanged"] == 6).all()


def test_view_filters_match_the_full_view(data) -> None:
    wh, _ = data
    full = _sorted(wh.view("daily_performance"), ["instrument_id", "session_date"])
    part = wh.view("daily_performance", instrument_id=["XNAS:AAPL", "XTKS:7203"],
                   order_by=["instrument_id", "session_date"])
    expected = full[full["instrument_id"].isin(["XNAS:AAPL", "XTKS:7203"])]
    pd.testing.assert_frame_equal(part, expected.reset_index(drop=True))
    index = wh.view("daily_bars", mic=None)
    assert set(index["instrument_id"]) == {"INDEX:N225"}
    since = wh.query("SELECT COUNT(*) AS n FROM miraikakaku.daily_performance "
                     "WHERE instrument_id = @i AND session_date >= @d",
                     {"i": "XNAS:AAPL", "d": pd.Timestamp("2018-01-01").date()})
    assert since["n"].iloc[0] == ((expected["instrument_id"] == "XNAS:AAPL")
                                  & (expected["session_date"] >= "2018-01-01")).sum()


def test_source_priority_in_sql_is_the_settings_default() -> None:
    stmt = sqlglot.parse_one((VIEWS_DIR / "daily_bars.sql").read_text(), read="bigquery")
    case = next(c for c in stmt.find_all(exp.Case) if c.this and c.this.name == "source")
    order = sorted((int(i.args["true"].name), i.this.name) for i in case.args["ifs"])
    assert [name for _, name in order] == Settings().source_priority
