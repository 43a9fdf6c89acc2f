"""Prediction tracking without Beam: outcomes, aggregates, the batch join, the store table.

Prices are real (AAPL and MSFT from the S&P 500 file, 7203.T from chart0 and mlbot); the
forecasts are the previous session's log return ("momentum"), a real forecast rule computed from
those prices. Expected values are computed here with pandas/numpy straight from the CSV files,
independently of ``miraikakaku.tracking``. Run: ``pytest tests/unit/test_tracking.py -q``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math

import numpy as np
import pandas as pd
import pytest

from miraikakaku.calendars import get_calendar
from miraikakaku.schema import Prediction
from miraikakaku.tracking import (
    PERFORMANCE_COLUMNS,
    UNMATCHED_IMPLAUSIBLE_TARGET,
    UNMATCHED_NO_LATER_BAR,
    UNMATCHED_TARGET_BAR_MISSING,
    ModelPerformance,
    aggregate_outcomes,
    make_outcome,
    match_predictions,
    summarize_performance,
    track_store,
)
from stores.sqlite import SqliteServingStore
from tests.api.conftest import US_FILE, instrument, load_real_events

pytestmark = pytest.mark.unit


def momentum_predictions(events, instrument_id: str, source: str, last: int,
                         version: str = "7") -> list[Prediction]:
    """Forecast ln(P_t+1/P_t) = ln(P_t/P_t-1) for the last ``last`` bars of one series."""
    bars = sorted((e for e in events if e.instrument_id == instrument_id and e.source == source),
                  key=lambda e: e.session_date)[-(last + 1):]
    cal = get_calendar(instrument(bars[0].symbol).calendar)
    out = []
    for prev, bar in zip(bars, bars[1:]):
        r = math.log(bar.feature_price / prev.feature_price)
        out.append(Prediction(instrument_id, source, bar.session_date, bar.event_time,
                              cal.next_session(bar.session_date), bar.feature_price, r,
                              bar.feature_price * math.exp(r), "lstm_daily", version))
    return out


@pytest.fixture(scope="module")
def events():
    return load_real_events()


@pytest.fixture(scope="module")
def aapl_frame() -> pd.DataFrame:
    df = pd.read_csv(US_FILE, dtype={"symbol": str, "date": str})
    return df[df["symbol"] == "AAPL"].sort_values("date").reset_index(drop=True)


def test_outcome_fields_match_the_csv(events, aapl_frame):
    preds = momentum_predictions(events, "XNAS:AAPL", "sp500_5yr", 30)
    p = preds[-2]  # target = the last session in the file
    close = aapl_frame.set_index("date")["close"]
    realized = float(close[p.target_date.isoformat()])
    base = float(close[p.as_of_date.isoformat()])
    o = make_outcome(p, realized, "USD")
    expected_pred = base * math.exp(math.log(base / float(close.iloc[-3])))
    assert o.predicted_price == pytest.approx(expected_pred, rel=1e-12)
    assert o.error == pytest.approx(expected_pred - realized, rel=1e-12)
    assert o.abs_error == abs(o.error) and o.squared_error == pytest.approx(o.error ** 2)
    assert o.abs_pct_error == pytest.approx(abs(expected_pred - realized) / realized)
    assert o.realized_log_return == pytest.approx(math.log(realized / base))
    realized_return = math.log(realized / base)
    assert o.direction_hit == (np.sign(o.predicted_log_return) == np.sign(realized_return))
    assert (o.model_version, o.currency, o.target_date) == ("7", "USD", dt.date(2018, 2, 7))


def test_direction_conventions_and_bad_prices(events):
    p = momentum_predictions(events, "XNAS:AAPL", "sp500_5yr", 3)[0]
    assert make_outcome(p, p.base_price, "USD").direction_hit is None  # no move, no direction
    flat = dataclasses.replace(p, predicted_log_return=0.0, predicted_price=p.base_price)
    assert make_outcome(flat, p.base_price * 1.01, "USD").direction_hit is False
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError):
            make_outcome(p, bad, "USD")


def test_match_aggregate_and_summarize_against_numpy(events, aapl_frame):
    preds = momentum_predictions(events, "XNAS:AAPL", "sp500_5yr", 60)
    hole = preds[20].target_date  # drop the realized bar of one session
    bars = [e for e in events if not (e.instrument_id == "XNAS:AAPL" and e.session_date == hole)]
    result = match_predictions(preds, bars)
    reasons = {p.target_date: r for p, r in result.unmatched}
    assert reasons == {hole: UNMATCHED_TARGET_BAR_MISSING,
                       preds[-1].target_date: UNMATCHED_NO_LATER_BAR}
    # A target weeks after the as-of date (e.g. dated before the exchange calendar's first
    # session) is never scored, although a bar of that date exists.
    far = dataclasses.replace(preds[0], target_date=preds[0].as_of_date + dt.timedelta(days=28))
    assert any(e.session_date == far.target_date and e.instrument_id == "XNAS:AAPL"
               for e in bars)
    assert match_predictions([far], bars).unmatched == [(far, UNMATCHED_IMPLAUSIBLE_TARGET)]
    assert len(result.outcomes) == 58

    close = aapl_frame.set_index("date")["close"]
    matched = [p for p in preds if p.target_date not in reasons]
    pred_price = np.array([p.predicted_price for p in matched])
    real = np.array([close[p.target_date.isoformat()] for p in matched], dtype=float)
    base = np.array([close[p.as_of_date.isoformat()] for p in matched], dtype=float)
    err = pred_price - real
    rr = np.log(real / base)
    pr = np.array([p.predicted_log_return for p in matched])
    nz = rr != 0

    rows = aggregate_outcomes(result.outcomes)
    assert len(rows) == 58 and all(r.n == 1 for r in rows)
    assert [r.target_date for r in rows] == sorted(p.target_date for p in matched)
    (summary,) = summarize_performance(rows)
    assert summary.n == 58 and summary.currency == "USD"
    assert summary.mae == pytest.approx(np.mean(np.abs(err)), rel=1e-12)
    assert summary.rmse == pytest.approx(np.sqrt(np.mean(err ** 2)), rel=1e-12)
    assert summary.mape == pytest.approx(100 * np.mean(np.abs(err) / real), rel=1e-12)
    assert summary.mean_error == pytest.approx(np.mean(err), rel=1e-9, abs=1e-12)
    assert summary.directional_accuracy == pytest.approx(
        np.mean(np.sign(pr[nz]) == np.sign(rr[nz])))
    assert (summary.first_date, summary.last_date) == (rows[0].target_date, rows[-1].target_date)


def test_summaries_never_add_dollars_to_yen(events):
    preds = (momentum_predictions(events, "XNAS:AAPL", "sp500_5yr", 10)
             + momentum_predictions(events, "XTKS:7203", "chart0", 10))
    rows = aggregate_outcomes(match_predictions(preds, events).outcomes)
    (overall,) = summarize_performance(rows, by_instrument=False)
    assert overall.currency is None and overall.mae is None and overall.rmse is None
    assert overall.n == 18 and overall.mape > 0
    per = summarize_performance(rows)
    assert [(s.instrument_id, s.currency) for s in per] == [("XNAS:AAPL", "USD"),
                                                            ("XTKS:7203", "JPY")]
    assert overall.mape == pytest.approx(sum(s.mape * s.n for s in per) / 18)


def test_sqlite_table_round_trip_filters_and_sql_sums(tmp_path, events):
    preds = (momentum_predictions(events, "XNAS:AAPL", "sp500_5yr", 40)
             + momentum_predictions(events, "XNAS:MSFT", "sp500_5yr", 40)
             + momentum_predictions(events, "XTKS:7203", "chart0", 40, version="8"))
    rows = aggregate_outcomes(match_predictions(preds, events).outcomes)
    store = SqliteServingStore(tmp_path / "s.db")
    assert store.get_model_performance("lstm_daily", "7") == []
    store.write_batch(rows)
    store.write_batch(rows)  # idempotent upsert
    got = store.get_model_performance("lstm_daily", "7")
    assert got == [r for r in rows if r.model_version == "7"]
    start, end = dt.date(2018, 1, 10), dt.date(2018, 1, 31)
    window = store.get_model_performance("lstm_daily", "7", instrument_id="XNAS:MSFT",
                                         start=start, end=end)
    assert window == [r for r in rows if r.instrument_id == "XNAS:MSFT"
                      and start <= r.target_date <= end] and window
    assert store.get_model_performance("lstm_daily", "7", limit=5) == got[:5]
    sql = store.summarize_model_performance("lstm_daily", "7", start=start)
    py = summarize_performance([r for r in got if r.target_date >= start])
    assert [s.instrument_id for s in sql] == ["XNAS:AAPL", "XNAS:MSFT"]
    for a, b in zip(sql, py):
        for f in dataclasses.fields(a):
            x, y = getattr(a, f.name), getattr(b, f.name)
            assert x == (pytest.approx(y, rel=1e-12) if isinstance(y, float) else y), f.name
    versions = store.list_performance_versions()
    assert [(v.model_version, v.n, v.currency) for v in versions] == [("7", 78, "USD"),
                                                                       ("8", 39, "JPY")]
    assert {c.name for c in PERFORMANCE_COLUMNS} == {f.name for f in
                                                     dataclasses.fields(ModelPerformance)}
    store.close()


def test_a_store_without_the_table_reads_empty(tmp_path, events):
    path = tmp_path / "old.db"
    SqliteServingStore(path).close()
    import sqlite3

    with sqlite3.connect(path) as conn:  # a store written before the table existed
        conn.execute("DROP TABLE model_performance")
    ro = SqliteServingStore(path, read_only=True)
    assert ro.get_model_performance("lstm_daily", "1") == []
    assert ro.list_performance_versions() == []
    ro.close()


def test_track_store_writes_what_the_csv_says(tmp_path, events, aapl_frame):
    preds = (momentum_predictions(events, "XNAS:AAPL", "sp500_5yr", 250)
             + momentum_predictions(events, "XTKS:7203", "chart0", 100))
    store = SqliteServingStore(tmp_path / "t.db")
    store.write_batch([instrument(s) for s in ("AAPL", "MSFT", "7203.T")] + events + preds)
    report = track_store(store)
    assert (report.instruments, report.predictions, report.outcomes) == (3, 350, 348)
    assert report.unmatched == {UNMATCHED_NO_LATER_BAR: 2}
    assert report.rows_written == 348
    rows = store.get_model_performance("lstm_daily", "7", instrument_id="XNAS:AAPL")
    close = aapl_frame.set_index("date")["close"]
    by_day = {p.target_date: p for p in preds if p.instrument_id == "XNAS:AAPL"}
    assert len(rows) == 249
    for r in rows:
        p = by_day[r.target_date]
        err = p.predicted_price - float(close[r.target_date.isoformat()])
        assert r.sum_error == pytest.approx(err, rel=1e-9, abs=1e-9)
        assert r.rmse == pytest.approx(abs(err), rel=1e-9, abs=1e-9)
    (version,) = report.versions
    assert version.n == 348 and version.currency is None  # USD and JPY together
    again = track_store(store)
    assert again.rows_written == 348
    assert store.get_model_performance("lstm_daily", "7", instrument_id="XNAS:AAPL") == rows
    store.close()


def test_track_command(tmp_path, events, capsys):
    from miraikakaku.cli import main

    preds = momentum_predictions(events, "XNAS:MSFT", "sp500_5yr", 30)
    path = tmp_path / "cli.db"
    store = SqliteServingStore(path)
    store.write_batch([instrument("MSFT"), *events, *preds])
    store.close()
    assert main(["track", "--store", str(path), "--instrument", "XNAS:MSFT"]) == 0
    out = capsys.readouterr().out
    assert "29 realized, 1 no_later_bar; 29 model_performance rows" in out
    ro = SqliteServingStore(path, read_only=True)
    assert len(ro.get_model_performance("lstm_daily", "7")) == 29
    ro.close()
    assert main(["track", "--store", str(tmp_path / "missing.db")]) == 2
