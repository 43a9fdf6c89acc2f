"""The statistics, model-performance and data-quality SQL on DuckDB against pandas, real data.

Every view and saved query here is BigQuery SQL from ``analytics/sql`` run on an in-memory
``analytics.warehouse.Warehouse`` (sqlglot BigQuery → DuckDB) and checked, number by number, to
1e-9 against an independent pandas/numpy computation of the same quantity:

* ``daily_returns`` / ``rolling_volatility`` (view): 10 S&P 500 stocks 2013-02..2018-02
  (``sp500_5yr``), SPY from the Lean daily file, and five Tokyo symbols with 1321.T (the Nikkei
  225 ETF) from ``mlbot`` (2013..2018-11) plus ``chart0`` for 7203.T and 1321.T (2016..2018, the
  better-ranked source takes over the returns); pandas: ``np.log(price).diff()`` per source,
  ``rolling(N).std() * sqrt(252)``;
* ``correlation_matrix`` (query): ``DataFrame.corr()`` (pairwise-complete, i.e. common dates);
* ``beta`` / ``rolling_beta`` (queries): ``np.cov`` / ``np.var(ddof=1)`` on common dates, and
  ``rolling(60).cov() / rolling(60).var()``, against SPY (US) and 1321.T (Tokyo);
* ``model_performance_daily`` / ``model_performance_by_version`` (views): ``model_performance``
  rows that ``miraikakaku.tracking`` computes from real bars and made-up forecasts, against a
  pandas join of the same forecasts with the raw file's prices;
* ``data_quality_trend`` (view): real rows of the S&P 500 file with its known anomalies (empty
  fields → dead letters, CHD/LNT prints → ``ohlc_inconsistent``, the LNT and NWL bad prints →
  ``large_move``, the DHR/ES hole → ``gap``) and of the Tokyo file (yfinance phantom rows →
  ``zero_volume``, the chart0 2020-10-01 outage → ``bad_number`` dead letters), parsed,
  validated and sequenced with the pipeline's own code, against pandas group-bys.

Run: ``.venv/bin/python -m pytest -q tests/unit/test_analytics_stats.py``.
"""

from __future__ import annotations

import datetime as dt
import gzip
import math
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analytics.warehouse import SQL_DIR, Warehouse
from miraikakaku.calendars import get_calendar
from miraikakaku.instruments import load_master
from miraikakaku.schema import DeadLetter, Prediction, PriceEvent
from miraikakaku.settings import Settings
from miraikakaku.tracking import (
    aggregate_outcomes,
    match_predictions,
    prediction_payload,
    summarize_performance,
)
from stores.base import BarFlag
from tests.conftest import JP, SHARED, SP500
from transforms import tracking as tracking_step
from transforms.ordering import InstrumentSequencer, event_sort_key
from transforms.parsing import ParseError, file_spec, parse_line
from transforms.validation import STEP as VALIDATE_STEP
from transforms.validation import BlockedEvent, validate_event

pytestmark = pytest.mark.unit

LEAN = SHARED / "normalized" / "us_daily_lean.normalized.csv.gz"
QUERIES = SQL_DIR / "queries"
TOL = 1e-9
PRIORITY = Settings().source_priority

US_SYMBOLS = ("AAPL", "MSFT", "AMZN", "JPM", "XOM", "JNJ", "GE", "PG", "LNT", "NWL")
SPY_RANGE = ("2013-01-02", "2018-02-07")
JP_SYMBOLS = ("7203.T", "6758.T", "9984.T", "8306.T", "1321.T")
JP_MLBOT_RANGE = ("2013-01-04", "2018-11-16")
JP_CHART0 = ("7203.T", "1321.T")
JP_CHART0_RANGE = ("2016-02-01", "2018-12-28")

QUALITY_US = ("CHD", "LNT", "NWL", "BBY", "DHR", "ES", "IP", "SPG", "XL", "BHF", "FTV", "UA")
QUALITY_JP = (("8306.T", "yfinance", "2021-06-01", "2022-12-30"),
              ("7203.T", "yfinance", "2017-06-01", "2018-01-31"),
              ("7203.T", "chart0", "2020-09-01", "2020-10-30"))


# -- reading the real files --------------------------------------------------------------------
def _lines(path: Path, keep) -> Iterable[str]:
    """Data lines of a normalized gzip CSV (header skipped) for which ``keep(fields)`` holds."""
    with gzip.open(path, "rt", encoding="utf-8", newline="") as f:
        next(f)
        for line in f:
            line = line.rstrip("\r\n")
            if line and keep(line.split(",")):
                yield line


def parse_file(path: Path, keep, default_source: str | None = None
               ) -> tuple[list[PriceEvent], list[DeadLetter]]:
    """The pipeline's parse and validate steps over the kept lines of a real file: stored
    events (with their ingest flags) and dead letters, as ``ParseEvents``/``ValidateEvents``."""
    spec = file_spec(path, default_source)
    master = load_master()
    events, dead = [], []
    for line in _lines(path, keep):
        try:
            ev = parse_line(line, spec.columns, default_source=spec.default_source,
                            master=master, interval=spec.interval)
        except ParseError as e:
            dead.append(DeadLetter("ParseEvents", e.reason, e.detail, line, spec.origin))
            continue
        try:
            events.append(validate_event(ev))
        except BlockedEvent as e:
            dead.append(DeadLetter(VALIDATE_STEP, e.reason, e.detail, ev.to_json(), ev.source,
                                   ev.event_time))
    return events, dead


def sequence_flags(events: Sequence[PriceEvent]) -> list[BarFlag]:
    """The flags the feature step (``ComputeFeatures``) puts on stored daily bars: per
    instrument, events in event-time order through ``InstrumentSequencer`` (source choice,
    ``gap``, ``history_reset``, ``large_move``, ``source_switch``)."""
    from miraikakaku.rowkeys import bar_key

    by_inst: dict[str, list[PriceEvent]] = {}
    for e in events:
        if e.interval == "1d":
            by_inst.setdefault(e.instrument_id, []).append(e)
    master = load_master()
    out = []
    for _iid, evs in sorted(by_inst.items()):
        seq = InstrumentSequencer(master.resolve(evs[0].symbol).calendar, PRIORITY)
        for e in sorted(evs, key=event_sort_key(seq.rank)):
            if seq.is_late(e):
                continue
            bar = seq.step(e)
            if bar is None:
                continue
            key = bar_key(e.instrument_id, e.interval, e.session_date)
            out.extend(BarFlag(key, e.source, flag) for flag in bar.flags)
    return out


def raw_frame(path: Path, symbols: Sequence[str], source: str | None, start: str,
              end: str) -> pd.DataFrame:
    """pandas' own read of the raw file: rows of ``symbols`` (and ``source``) in [start, end]
    whose OHLC are numbers, with the feature price (adj_close, else close)."""
    df = pd.read_csv(path, dtype=str)
    df = df[df["symbol"].isin(symbols) & (df["date"] >= start) & (df["date"] <= end)].copy()
    if source is not None:
        df = df[df["source"] == source].copy() if "source" in df else df.assign(source=source)
    for col in ("open", "high", "low", "close", "adj_close"):
        df[col] = pd.to_numeric(df[col], errors="coerce") if col in df else np.nan
    df = df.dropna(subset=["open", "high", "low", "close"])
    df["date"] = pd.to_datetime(df["date"])
    if source == "lean":  # raw prices: adjusted close = close x Lean's factor-file scale
        df = _lean_adjusted(df)
    df["price"] = df["adj_close"].where(df["adj_close"].notna(), df["close"])
    return df[["symbol", "source", "date", "price", "close", "adj_close"]]


def _lean_adjusted(df: pd.DataFrame) -> pd.DataFrame:
    """Lean rows with ``adj_close``: close x price_factor x split_factor of the first factor-file
    row dated on or after the session (Lean's own reading of factor files)."""
    parts = []
    for sym, g in df.groupby("symbol"):
        ff = pd.read_csv(SHARED / "us_daily" / "lean_algoseek" / "factor_files"
                         / f"{sym.lower()}.csv", header=None, names=["d", "pf", "sf", "ref"])
        ff["date"] = pd.to_datetime(ff["d"].astype(str))
        ff["scale"] = ff["pf"] * ff["sf"]
        g = pd.merge_asof(g.sort_values("date"), ff[["date", "scale"]], on="date",
                          direction="forward")
        g["adj_close"] = g["close"] * g["scale"]
        parts.append(g.drop(columns="scale"))
    return pd.concat(parts)


def reference_returns(frames: pd.DataFrame) -> pd.DataFrame:
    """pandas reference of ``daily_returns``: log returns within each (symbol, source), then per
    session the best-ranked source with a return. Columns: symbol, date, source, price, r."""
    rank = {s: i for i, s in enumerate(PRIORITY)}
    parts = []
    for (_sym, _src), g in frames.groupby(["symbol", "source"]):
        g = g.sort_values("date").copy()
        g["r"] = np.log(g["price"]).diff()
        parts.append(g)
    df = pd.concat(parts)
    df["has_r"] = df["r"].notna()
    df["rank"] = df["source"].map(lambda s: rank.get(s, len(rank)))
    df = df.sort_values(["symbol", "date", "has_r", "rank", "source"],
                        ascending=[True, True, False, True, True])
    return df.drop_duplicates(["symbol", "date"], keep="first")[
        ["symbol", "date", "source", "price", "r"]].reset_index(drop=True)


def assert_close(actual, expected, what: str) -> None:
    a = np.asarray(actual, dtype=float)
    e = np.asarray(expected, dtype=float)
    assert a.shape == e.shape, f"{what}: shape {a.shape} != {e.shape}"
    assert np.array_equal(np.isnan(a), np.isnan(e)), f"{what}: NULLs differ"
    ok = ~np.isnan(e)
    if ok.any():
        worst = np.max(np.abs(a[ok] - e[ok]))
        assert np.allclose(a[ok], e[ok], rtol=TOL, atol=TOL), f"{what}: max |diff| {worst:g}"


def saved_query(wh: Warehouse, name: str, **params) -> pd.DataFrame:
    return wh.query((QUERIES / f"{name}.sql").read_text(), params)


# -- the price warehouse (statistics) -------------------------------------------------------------
class PriceData:
    def __init__(self) -> None:
        us_keep = set(US_SYMBOLS)
        us_events, us_dead = parse_file(SP500, lambda f: f[0] in us_keep)
        spy_events, spy_dead = parse_file(
            LEAN, lambda f: f[0] == "SPY" and SPY_RANGE[0] <= f[1] <= SPY_RANGE[1])
        jp_keep = set(JP_SYMBOLS)
        jp_events, jp_dead = parse_file(JP, lambda f: f[0] in jp_keep and (
            (f[-1] == "mlbot" and JP_MLBOT_RANGE[0] <= f[1] <= JP_MLBOT_RANGE[1])
            or (f[-1] == "chart0" and f[0] in JP_CHART0
                and JP_CHART0_RANGE[0] <= f[1] <= JP_CHART0_RANGE[1])))
        self.events = us_events + spy_events + jp_events
        self.dead = us_dead + spy_dead + jp_dead
        self.frames = pd.concat([
            raw_frame(SP500, US_SYMBOLS, "sp500_5yr", "0000", "9999"),
            raw_frame(LEAN, ("SPY",), spy_events[0].source, *SPY_RANGE),
            raw_frame(JP, JP_SYMBOLS, "mlbot", *JP_MLBOT_RANGE),
            raw_frame(JP, JP_CHART0, "chart0", *JP_CHART0_RANGE),
        ], ignore_index=True)
        self.returns = reference_returns(self.frames)
        master = load_master()
        self.ids = {s: master.resolve(s).instrument_id for s in self.frames["symbol"].unique()}

    def wide(self, symbols: Sequence[str]) -> pd.DataFrame:
        """Returns as a date × symbol frame (NaN where a symbol has no return)."""
        r = self.returns[self.returns["symbol"].isin(symbols)]
        return r.pivot(index="date", columns="symbol", values="r").sort_index()


@pytest.fixture(scope="module")
def prices() -> PriceData:
    return PriceData()


def new_warehouse() -> Warehouse:
    wh = Warehouse()
    wh.create_tables()
    wh.create_views()
    return wh


@pytest.fixture(scope="module")
def price_wh(prices: PriceData):
    wh = new_warehouse()
    wh.load_records(prices.events)
    wh.load_records(prices.events[::7])  # a partial replay: views de-duplicate on insert_id
    yield wh
    wh.close()


def test_inputs_are_the_real_rows(prices: PriceData, price_wh: Warehouse):
    """The warehouse holds exactly the real rows pandas reads (nothing dropped or invented)."""
    assert prices.dead == []  # the chosen symbols and ranges have no unparseable rows
    n = price_wh.query("SELECT COUNT(DISTINCT insert_id) AS n FROM miraikakaku.bars")["n"][0]
    assert n == len(prices.frames) == len(prices.events)
    per = prices.frames.groupby("symbol").size()
    assert per["AAPL"] == 1259 and per["SPY"] == 1285 and per["LNT"] == 1259
    assert set(prices.frames.loc[prices.frames["symbol"] == "7203.T", "source"]) == \
        {"mlbot", "chart0"}


def test_daily_returns_match_pandas(prices: PriceData, price_wh: Warehouse):
    got = price_wh.view("daily_returns", order_by=["instrument_id", "session_date"])
    ref = prices.returns.assign(instrument_id=prices.returns["symbol"].map(prices.ids))
    ref = ref.sort_values(["instrument_id", "date"]).reset_index(drop=True)
    assert len(got) == len(ref)
    assert list(got["instrument_id"]) == list(ref["instrument_id"])
    assert list(pd.to_datetime(got["session_date"])) == list(ref["date"])
    assert list(got["source"]) == list(ref["source"])
    assert_close(got["price"], ref["price"], "price")
    assert_close(got["log_return"], ref["r"], "log_return")
    # the better source takes over from its second bar; its first bar's session keeps mlbot's
    toyota = got[got["instrument_id"] == "XTKS:7203"].set_index("session_date")["source"]
    first_chart0 = prices.frames[(prices.frames["symbol"] == "7203.T")
                                 & (prices.frames["source"] == "chart0")]["date"].min()
    assert toyota[first_chart0] == "mlbot"
    assert (toyota[toyota.index > first_chart0] == "chart0").all()


@pytest.mark.parametrize("window", [20, 60])
def test_rolling_volatility_matches_pandas(prices: PriceData, price_wh: Warehouse, window: int):
    got = price_wh.view("rolling_volatility", order_by=["instrument_id", "session_date"])
    ref = prices.returns.dropna(subset=["r"]).copy()
    ref["instrument_id"] = ref["symbol"].map(prices.ids)
    ref = ref.sort_values(["instrument_id", "date"]).reset_index(drop=True)
    ref["vol"] = ref.groupby("instrument_id")["r"].transform(
        lambda s: s.rolling(window).std(ddof=1) * math.sqrt(252))
    assert len(got) == len(ref)
    assert list(got["instrument_id"]) == list(ref["instrument_id"])
    assert list(pd.to_datetime(got["session_date"])) == list(ref["date"])
    assert_close(got[f"volatility_{window}"], ref["vol"], f"volatility_{window}")
    assert got[f"volatility_{window}"].notna().sum() > 15_000
    # a known episode: AAPL's 20-session volatility around the 2015-08-24 sell-off
    if window == 20:
        aapl = got[(got["instrument_id"] == "XNAS:AAPL")].set_index("session_date")
        assert 0.3 < aapl.loc[pd.Timestamp("2015-09-04"), "volatility_20"] < 0.8


@pytest.mark.parametrize("symbols,start,end", [
    (US_SYMBOLS + ("SPY",), "2014-01-01", "2017-12-31"),
    (JP_SYMBOLS, "2013-06-01", "2018-12-28"),
    (("AAPL", "7203.T", "1321.T", "SPY"), "2015-01-01", "2016-12-31"),  # different calendars
])
def test_correlation_matrix_matches_pandas(prices: PriceData, price_wh: Warehouse,
                                           symbols, start, end):
    got = saved_query(price_wh, "correlation_matrix", symbols=list(symbols),
                      start=dt.date.fromisoformat(start), end=dt.date.fromisoformat(end))
    wide = prices.wide(symbols).loc[start:end]
    corr = wide.corr()  # Pearson, pairwise-complete: the common dates of each pair
    valid = wide.notna().astype(int)
    n = valid.T @ valid
    assert len(got) == len(symbols) ** 2
    by_id = {prices.ids[s]: s for s in symbols}
    exp_corr = [corr.loc[by_id[a], by_id[b]] for a, b in zip(got["a"], got["b"])]
    exp_n = [n.loc[by_id[a], by_id[b]] for a, b in zip(got["a"], got["b"])]
    assert_close(got["corr"], exp_corr, "corr")
    assert list(got["n"]) == exp_n
    assert all(got.loc[got["a"] == got["b"], "corr"].sub(1).abs() < TOL)


@pytest.mark.parametrize("symbols,benchmark,start,end", [
    (US_SYMBOLS, "SPY", "2014-01-01", "2017-12-31"),
    (("7203.T", "6758.T", "9984.T", "8306.T"), "1321.T", "2013-06-01", "2018-12-28"),
])
def test_beta_matches_numpy(prices: PriceData, price_wh: Warehouse, symbols, benchmark,
                            start, end):
    got = saved_query(price_wh, "beta", symbols=list(symbols), benchmark=benchmark,
                      start=dt.date.fromisoformat(start), end=dt.date.fromisoformat(end))
    wide = prices.wide((*symbols, benchmark)).loc[start:end]
    assert sorted(got["instrument_id"]) == sorted(prices.ids[s] for s in symbols)
    for row in got.itertuples():
        sym = row.symbol
        pair = wide[[sym, benchmark]].dropna()
        ri, rb = pair[sym].to_numpy(), pair[benchmark].to_numpy()
        beta = np.cov(ri, rb, ddof=1)[0, 1] / np.var(rb, ddof=1)
        assert row.n == len(pair)
        assert row.benchmark == prices.ids[benchmark]
        assert_close([row.beta], [beta], f"beta {sym}")
        assert_close([row.alpha], [ri.mean() - beta * rb.mean()], f"alpha {sym}")
        assert_close([row.corr], [np.corrcoef(ri, rb)[0, 1]], f"corr {sym}")
    betas = got.set_index("symbol")["beta"]
    assert 0.5 < betas.median() < 1.5  # large caps against their index ETF


def test_rolling_beta_matches_pandas(prices: PriceData, price_wh: Warehouse):
    symbols, benchmark = ("AAPL", "JPM", "XOM", "LNT"), "SPY"
    got = saved_query(price_wh, "rolling_beta", symbols=list(symbols), benchmark=benchmark,
                      start=dt.date(2013, 3, 1), end=dt.date(2018, 2, 7))
    wide = prices.wide((*symbols, benchmark)).loc[:"2018-02-07"]
    expected = []
    for sym in symbols:
        pair = wide[[sym, benchmark]].dropna()
        beta = pair[sym].rolling(60).cov(pair[benchmark]) / pair[benchmark].rolling(60).var()
        expected.append(pd.DataFrame({"instrument_id": prices.ids[sym], "date": pair.index,
                                      "beta": beta.to_numpy()}))
    ref = pd.concat(expected)
    ref = ref[ref["date"] >= "2013-03-01"].sort_values(["instrument_id", "date"])
    assert list(got["instrument_id"]) == list(ref["instrument_id"])
    assert list(pd.to_datetime(got["session_date"])) == list(ref["date"])
    assert_close(got["beta_60"], ref["beta"], "beta_60")
    assert got["beta_60"].notna().sum() > 4 * 1100


# -- model performance ---------------------------------------------------------------------------
def made_up_predictions(events: Sequence[PriceEvent], symbol: str, source: str, version: str,
                        n: int, seed: int) -> list[Prediction]:
    """Forecasts for the last ``n`` real bars of ``symbol``/``source`` (the prices are real,
    the forecast returns are random normals; every 10th forecast is 0, a direction miss)."""
    bars = sorted((e for e in events if e.symbol == symbol and e.source == source),
                  key=lambda e: e.session_date)[-n:]
    cal = get_calendar(load_master().resolve(symbol).calendar)
    rng = np.random.default_rng(seed)
    out = []
    for k, bar in enumerate(bars):
        r = 0.0 if k % 10 == 0 else float(rng.normal(0.0, 0.015))
        out.append(Prediction(
            instrument_id=bar.instrument_id, source=source, as_of_date=bar.session_date,
            as_of_time=bar.event_time, target_date=cal.next_session(bar.session_date),
            base_price=bar.feature_price, predicted_log_return=r,
            predicted_price=bar.feature_price * math.exp(r), model_name="lstm_daily",
            model_version=version))
    return out


@pytest.fixture(scope="module")
def performance(prices: PriceData):
    preds = (made_up_predictions(prices.events, "AAPL", "sp500_5yr", "1", 300, 1)
             + made_up_predictions(prices.events, "MSFT", "sp500_5yr", "1", 300, 2)
             + made_up_predictions(prices.events, "AAPL", "sp500_5yr", "2", 200, 3)
             + made_up_predictions(prices.events, "7203.T", "chart0", "2", 200, 4)
             + made_up_predictions(prices.events, "7203.T", "mlbot", "2", 100, 5))
    result = match_predictions(preds, prices.events)
    rows = aggregate_outcomes(result.outcomes)
    wh = new_warehouse()
    wh.load_records(rows)
    wh.load_records(rows[:50])  # the tracking job rerun: same insert ids
    yield preds, result, rows, wh
    wh.close()


def reference_performance(prices: PriceData, preds: Sequence[Prediction]) -> pd.DataFrame:
    """pandas: forecasts joined with the raw file's feature price of the target session."""
    p = pd.DataFrame([{
        "instrument_id": x.instrument_id, "symbol": None, "source": x.source,
        "model_version": x.model_version, "target_date": pd.Timestamp(x.target_date),
        "base": x.base_price, "pred_r": x.predicted_log_return, "pred": x.predicted_price}
        for x in preds])
    bars = prices.frames.assign(instrument_id=prices.frames["symbol"].map(prices.ids))
    m = p.drop(columns="symbol").merge(
        bars.rename(columns={"date": "target_date", "price": "realized"})[
            ["instrument_id", "source", "target_date", "realized"]],
        on=["instrument_id", "source", "target_date"], how="inner")
    m["e"] = m["pred"] - m["realized"]
    m["ae"] = m["e"].abs()
    m["se"] = m["e"] ** 2
    m["ape"] = m["ae"] / m["realized"]
    real_r = np.log(m["realized"] / m["base"])
    m["has_dir"] = real_r != 0
    m["hit"] = m["has_dir"] & (np.sign(m["pred_r"]) == np.sign(real_r))
    m["currency"] = np.where(m["instrument_id"].str.startswith("XTKS"), "JPY", "USD")
    return m


def test_model_performance_daily_matches_pandas(prices: PriceData, performance):
    preds, result, rows, wh = performance
    got = wh.view("model_performance_daily",
                  order_by=["model_version", "instrument_id", "target_date"])
    m = reference_performance(prices, preds)
    assert len(m) == len(result.outcomes) > 1000
    g = m.groupby(["model_version", "instrument_id", "target_date"])
    ref = pd.DataFrame({
        "n": g.size(), "n_direction": g["has_dir"].sum(), "hits": g["hit"].sum(),
        "mae": g["ae"].mean(), "rmse": np.sqrt(g["se"].mean()), "mape": 100 * g["ape"].mean(),
        "mean_error": g["e"].mean()}).reset_index()
    ref["da"] = (ref["hits"] / ref["n_direction"]).where(ref["n_direction"] > 0)
    assert len(got) == len(ref) == len(rows)
    assert list(got["instrument_id"]) == list(ref["instrument_id"])
    assert list(pd.to_datetime(got["target_date"])) == list(ref["target_date"])
    assert list(got["n"]) == list(ref["n"])
    assert list(got["n_direction"]) == list(ref["n_direction"])
    assert list(got["direction_hits"]) == list(ref["hits"])
    for col, ref_col in (("mae", "mae"), ("rmse", "rmse"), ("mape", "mape"),
                         ("mean_error", "mean_error"), ("directional_accuracy", "da")):
        assert_close(got[col], ref[ref_col], col)
    assert (got["n_direction"] < got["n"]).any()  # real unchanged closes: no direction
    assert set(got["exchange"]) == {"XNAS", "XTKS"}


def test_model_performance_by_version_matches_pandas(prices: PriceData, performance):
    preds, result, rows, wh = performance
    got = wh.view("model_performance_by_version", order_by=["model_version"])
    m = reference_performance(prices, preds)
    assert list(got["model_version"]) == ["1", "2"]
    for row in got.itertuples():
        v = m[m["model_version"] == row.model_version]
        assert row.n == len(v)
        assert row.n_direction == v["has_dir"].sum() and row.direction_hits == v["hit"].sum()
        assert row.instruments == v["instrument_id"].nunique()
        assert_close([row.mape], [100 * v["ape"].mean()], "mape")
        assert_close([row.directional_accuracy], [v["hit"].sum() / v["has_dir"].sum()], "da")
        if v["currency"].nunique() == 1:  # version 1: USD only
            assert row.currency == "USD"
            assert_close([row.mae, row.rmse, row.mean_error],
                         [v["ae"].mean(), math.sqrt(v["se"].mean()), v["e"].mean()], "mae")
        else:  # version 2: USD and JPY, price-unit errors are not added up
            assert row.currency is None or pd.isna(row.currency)
            assert pd.isna(row.mae) and pd.isna(row.rmse) and pd.isna(row.mean_error)
    # the same roll-up as miraikakaku.tracking's own
    for s, row in zip(summarize_performance(rows, by_instrument=False), got.itertuples()):
        assert (s.model_version, s.n, s.direction_hits) == (row.model_version, row.n,
                                                           row.direction_hits)
        assert_close([s.mape], [row.mape], "tracking mape")


# -- data quality --------------------------------------------------------------------------------
class QualityData:
    def __init__(self) -> None:
        keep_us = set(QUALITY_US)
        us_events, us_dead = parse_file(SP500, lambda f: f[0] in keep_us)

        def keep_jp(f):
            return any(f[0] == s and f[-1] == src and a <= f[1] <= b
                       for s, src, a, b in QUALITY_JP)

        jp_events, jp_dead = parse_file(JP, keep_jp)
        self.events = us_events + jp_events
        self.flags = sequence_flags(self.events)
        # forecasts whose target session falls in the DHR hole of 2015-03-09..20: the
        # tracking step's dead letters (with the forecast's as-of time)
        hole = [e for e in us_events if e.symbol in ("DHR", "ES")]
        cal = get_calendar("XNYS")
        preds = [Prediction(
            instrument_id=e.instrument_id, source=e.source, as_of_date=e.session_date,
            as_of_time=e.event_time, target_date=cal.next_session(e.session_date),
            base_price=e.feature_price, predicted_log_return=0.001,
            predicted_price=e.feature_price * math.exp(0.001), model_name="lstm_daily",
            model_version="1")
            for e in hole if dt.date(2015, 3, 2) <= e.session_date <= dt.date(2015, 3, 6)]
        unmatched = match_predictions(preds, us_events).unmatched
        self.tracking_dead = [
            DeadLetter(tracking_step.STEP, reason, "no bar", prediction_payload(p),
                       f"{p.model_name}:{p.model_version}", p.as_of_time)
            for p, reason in unmatched]
        self.dead = us_dead + jp_dead + self.tracking_dead


@pytest.fixture(scope="module")
def quality():
    data = QualityData()
    wh = new_warehouse()
    records = [*data.events, *data.flags, *data.dead]
    wh.load_records(records)
    wh.load_records(records)  # a full replay changes no count
    yield data, wh
    wh.close()


def reference_quality(data: QualityData) -> pd.DataFrame:
    """pandas: the view's rows (instrument, exchange and all levels; dead letters)."""
    bars = pd.DataFrame([{"bar": e.event_id, "day": e.session_date, "iid": e.instrument_id,
                          "interval": e.interval, "source": e.source, "flags": e.flags}
                         for e in data.events])
    bars["exchange"] = bars["iid"].str.split(":").str[0]
    own = bars.explode("flags").dropna(subset=["flags"]).rename(columns={"flags": "flag"})
    feat = pd.DataFrame([{"iid": f.row_key.split("#")[0], "source": f.source,
                          "day": dt.datetime.strptime(f.row_key.split("#")[2], "%Y%m%d").date(),
                          "flag": f.flag} for f in data.flags])
    feat = feat.merge(bars.drop(columns="flags"), on=["iid", "source", "day"])
    flagged = pd.concat([own[["bar", "day", "iid", "exchange", "interval", "flag"]],
                         feat[["bar", "day", "iid", "exchange", "interval", "flag"]]]
                        ).drop_duplicates()
    rows = []
    for level, keys in (("instrument", ["exchange", "iid"]), ("exchange", ["exchange"]),
                        ("all", [])):
        k = ["day", *keys, "interval"]
        stored = bars.groupby(k).size().rename("count").reset_index().assign(
            metric="bars_stored", name=None)
        anyf = flagged.groupby(k)["bar"].nunique().rename("count").reset_index().assign(
            metric="flagged_bars", name=None)
        per = flagged.groupby([*k, "flag"])["bar"].nunique().rename("count").reset_index() \
            .rename(columns={"flag": "name"}).assign(metric="flag")
        part = pd.concat([stored, anyf, per])
        part = part.merge(stored[k + ["count"]].rename(columns={"count": "bars"}), on=k)
        part["share"] = part["count"] / part["bars"]
        rows.append(part.assign(level=level))
    ref = pd.concat(rows, ignore_index=True).rename(columns={"iid": "instrument_id"})
    dead = pd.DataFrame([{"day": None if d.event_time is None else d.event_time.date(),
                          "name": d.reason, "id": d.dead_letter_id} for d in data.dead])
    dead = dead.drop_duplicates("id").groupby(["day", "name"], dropna=False).size() \
        .rename("count").reset_index().assign(metric="dead_letter", level="all")
    return pd.concat([ref, dead], ignore_index=True)


def _key(df: pd.DataFrame) -> pd.Series:
    def text(col):
        return df[col].map(lambda v: "" if v is None or (isinstance(v, float) and math.isnan(v))
                           or v is pd.NaT else str(v))
    day = df["day"].map(lambda v: "" if pd.isna(v) else pd.Timestamp(v).date().isoformat())
    return day + "|" + text("level") + "|" + text("exchange") + "|" + text("instrument_id") + \
        "|" + text("interval") + "|" + text("metric") + "|" + text("name")


def test_data_quality_trend_matches_pandas(quality):
    data, wh = quality
    got = wh.view("data_quality_trend")
    ref = reference_quality(data)
    got = got.assign(key=_key(got)).set_index("key").sort_index()
    ref = ref.assign(key=_key(ref)).set_index("key").sort_index()
    assert got.index.is_unique and ref.index.is_unique
    assert list(got.index) == list(ref.index)
    assert list(got["count"]) == list(ref["count"])
    assert_close(got["share"].astype(float), ref["share"].astype(float), "share")
    assert_close(got["bars"].astype(float), ref["bars"].astype(float), "bars")


def test_data_quality_trend_shows_the_known_anomalies(quality):
    data, wh = quality
    df = wh.view("data_quality_trend", level="instrument", metric="flag")
    flags = {(r.instrument_id, pd.Timestamp(r.day).date().isoformat(), r.name)
             for r in df.itertuples()}
    # ../shared/data/README.md, "Anomalies": bad prints and OHLC inconsistencies
    assert ("XNYS:CHD", "2014-05-19", "ohlc_inconsistent") in flags
    assert ("XNYS:LNT", "2016-05-19", "ohlc_inconsistent") in flags
    assert ("XNYS:LNT", "2016-05-19", "large_move") in flags
    assert ("XNYS:LNT", "2016-05-20", "large_move") in flags
    assert ("XNYS:NWL", "2017-09-14", "large_move") in flags
    assert ("XTKS:8306", "2022-05-17", "ohlc_inconsistent") in flags
    assert ("XTKS:7203", "2018-01-02", "zero_volume") in flags  # yfinance phantom holiday row
    assert any(i == "XNYS:DHR" and d == "2015-03-23" and n in ("gap", "history_reset")
               for i, d, n in flags)  # first bar after the DHR hole
    dead = wh.view("data_quality_trend", metric="dead_letter")
    reasons = dead.groupby("name")["count"].sum().to_dict()
    assert reasons["missing_field"] == sum(1 for d in data.dead if d.reason == "missing_field")
    assert reasons["missing_field"] >= 6  # the empty open/high/low rows of BHF, DHR, ES, ...
    assert reasons["bad_number"] >= 1  # chart0's #VALUE! rows of the 2020-10-01 outage
    dated = dead[dead["day"].notna()]
    assert len(data.tracking_dead) == 2  # DHR and ES forecasts for 2015-03-09
    assert set(dated["name"]) == {d.reason for d in data.tracking_dead}
    assert list(pd.to_datetime(dated["day"]).dt.date.unique()) == [dt.date(2015, 3, 6)]
    day = wh.view("data_quality_trend", level="all", metric="flagged_bars", interval="1d")
    assert (day["share"] > 0).all() and (day["share"] <= 1).all()


def test_saved_queries_take_tickers_or_instrument_ids(prices: PriceData, price_wh: Warehouse):
    """@symbols and @benchmark match a ticker or an exchange-qualified id alike."""
    window = {"start": dt.date(2016, 1, 1), "end": dt.date(2016, 12, 31)}
    by_ticker = saved_query(price_wh, "correlation_matrix", symbols=["AAPL", "7203.T"], **window)
    by_id = saved_query(price_wh, "correlation_matrix", symbols=["XNAS:AAPL", "XTKS:7203"],
                        **window)
    pd.testing.assert_frame_equal(by_ticker, by_id)
    beta_ticker = saved_query(price_wh, "beta", symbols=["JPM"], benchmark="SPY", **window)
    beta_id = saved_query(price_wh, "beta", symbols=["XNYS:JPM"], benchmark="ARCX:SPY", **window)
    pd.testing.assert_frame_equal(beta_ticker, beta_id)
    # every NYSE session of 2016: the window's first return reaches back to 2015-12-31
    assert len(beta_ticker) == 1 and beta_ticker["n"][0] == 252
    nothing = saved_query(price_wh, "beta", symbols=["NOPE"], benchmark="SPY", **window)
    assert nothing.empty
