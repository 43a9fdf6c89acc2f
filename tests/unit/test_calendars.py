"""Exchange calendars on real dates and against the real data in ../shared/data: NYSE holidays,
half days and closures, Tokyo's holidays, lunch break and 15:30 close, and gaps inside a session
on real Lean minute bars. Expectations come from the data (pandas) or from exchange_calendars'
raw schedule, not from ``SessionCalendar`` itself."""

from __future__ import annotations

import datetime as dt
import functools

import exchange_calendars as xcals
import pandas as pd
import pytest

from miraikakaku.calendars import IntradayGap, get_calendar
from tests.conftest import SHARED

pytestmark = pytest.mark.unit
UTC = dt.timezone.utc
NORM = SHARED / "normalized"
D = dt.date


def _utc(y, mo, d, h, mi=0) -> dt.datetime:
    return dt.datetime(y, mo, d, h, mi, tzinfo=UTC)


# -- real dates -------------------------------------------------------------------------------
def test_nyse_closed_2018_01_01_and_half_day_2013_11_29():
    nyse = get_calendar("XNYS")
    assert not nyse.is_session(D(2018, 1, 1))
    assert nyse.session_bounds(D(2018, 1, 1)) is None
    assert D(2018, 1, 1) in nyse.holidays(2018)
    assert not nyse.is_open(_utc(2018, 1, 1, 15))
    assert nyse.minutes_in_session(D(2018, 1, 1)) == 0
    b = nyse.session_bounds(D(2013, 11, 29))
    assert (b.open, b.close, b.break_start) == (_utc(2013, 11, 29, 14, 30),
                                                _utc(2013, 11, 29, 18), None)
    assert nyse.is_half_day(D(2013, 11, 29)) and not nyse.is_half_day(D(2013, 11, 27))
    assert nyse.minutes_in_session(D(2013, 11, 29)) == 210
    assert nyse.minutes_in_session(D(2013, 11, 27)) == 390
    assert nyse.is_open(_utc(2013, 11, 29, 17, 59)) and not nyse.is_open(_utc(2013, 11, 29, 18))
    assert not nyse.is_open(_utc(2013, 11, 29, 14, 29))  # pre-market
    # DST: 2013-11-27 (EST) opens 14:30 UTC; 2013-10-07 (EDT) 13:30 UTC
    assert nyse.session_bounds(D(2013, 10, 7)).open == _utc(2013, 10, 7, 13, 30)
    with pytest.raises(ValueError, match="naive"):
        nyse.is_open(dt.datetime(2013, 11, 29, 15))


def test_tokyo_closed_2018_01_02_lunch_break_and_1530_close():
    tse = get_calendar("XTKS")
    assert not tse.is_session(D(2018, 1, 2))
    assert {D(2018, 1, 1), D(2018, 1, 2), D(2018, 1, 3)} <= set(tse.holidays(2018))
    b = tse.session_bounds(D(2018, 1, 4))
    # 09:00-11:30 and 12:30-15:00 Tokyo (UTC+9)
    assert b == (_utc(2018, 1, 4, 0), _utc(2018, 1, 4, 6), _utc(2018, 1, 4, 2, 30),
                 _utc(2018, 1, 4, 3, 30))
    assert tse.is_open(_utc(2018, 1, 4, 2, 29)) and not tse.is_open(_utc(2018, 1, 4, 2, 30))
    assert not tse.is_open(_utc(2018, 1, 4, 3, 29)) and tse.is_open(_utc(2018, 1, 4, 3, 30))
    assert tse.regular_session(_utc(2018, 1, 4, 3)) == D(2018, 1, 4)  # the bar spans lunch
    assert tse.minutes_in_session(D(2018, 1, 4)) == 300
    # TSE extended the afternoon session to 15:30 from 2024-11-05
    assert tse.session_bounds(D(2024, 11, 1)).close == _utc(2024, 11, 1, 6)
    assert tse.session_bounds(D(2024, 11, 5)).close == _utc(2024, 11, 5, 6, 30)
    assert tse.minutes_in_session(D(2024, 11, 5)) == 330
    assert tse.is_open(_utc(2024, 11, 5, 6, 15)) and not tse.is_open(_utc(2024, 11, 1, 6, 15))
    assert not tse.is_half_day(D(2024, 11, 5))
    # every XTKS session exchange_calendars knows has the lunch break
    raw = xcals.get_calendar("XTKS", start="1997-01-01", end="2030-12-31").schedule
    assert raw.break_start.notna().all()
    assert tse.session_bounds(D(1997, 1, 6)).break_start == _utc(1997, 1, 6, 2, 30)


def test_sessions_in_range_and_holidays_outside_the_calendar():
    tse, nyse = get_calendar("XTKS"), get_calendar("XNYS")
    assert tse.sessions_in_range(D(2017, 12, 28), D(2018, 1, 5)) == [
        D(2017, 12, 28), D(2017, 12, 29), D(2018, 1, 4), D(2018, 1, 5)]
    assert nyse.sessions_in_range(D(2013, 11, 28), D(2013, 11, 28)) == []  # Thanksgiving
    with pytest.raises(ValueError, match="1997"):
        tse.holidays(1996)


# -- against the data -------------------------------------------------------------------------
@functools.cache
def _frame(name: str) -> pd.DataFrame:
    return pd.read_csv(NORM / name, dtype=str, keep_default_na=False)


def test_dates_missing_for_every_sp500_symbol_are_exactly_the_nyse_holidays():
    df = _frame("us_daily_sp500_5yr_2013_2018.normalized.csv.gz")
    present = {D.fromisoformat(d) for d in df.date.unique()}
    first, last = min(present), max(present)
    weekdays = {d.date() for d in pd.bdate_range(first, last)}
    nyse = get_calendar("XNYS")
    holidays = {h for y in range(first.year, last.year + 1) for h in nyse.holidays(y)
                if first <= h <= last}
    assert weekdays - present == holidays
    assert len(holidays) == 45  # 9 a year for 5 years, none ad hoc
    assert sorted(present) == nyse.sessions_in_range(first, last)


def test_hurricane_sandy_and_mourning_closures_in_alphavantage_daily():
    df = _frame("us_daily_alphavantage_1999_2021.normalized.csv.gz")
    present = set(df.date.unique())
    nyse = get_calendar("XNYS")
    for day in ("2012-10-29", "2012-10-30", "2001-09-11", "2004-06-11", "2007-01-02",
                "2018-12-05"):
        d = D.fromisoformat(day)
        assert day not in present and not nyse.is_session(d) and d in nyse.holidays(d.year)
    assert {"2012-10-26", "2012-10-31"} <= present
    # and every weekday missing in 1999-11-01..2021-04-21 is a day the NYSE had no session
    weekdays = {d.date().isoformat() for d in pd.bdate_range("1999-11-01", "2021-04-21")}
    missing = {D.fromisoformat(d) for d in weekdays - present}
    assert all(not nyse.is_session(d) for d in missing)
    assert len(missing) == sum(len([h for h in nyse.holidays(y)
                                    if D(1999, 11, 1) <= h <= D(2021, 4, 21)])
                               for y in range(1999, 2022))


def test_tse_2020_10_01_outage_is_a_non_session():
    df = _frame("jp_daily.normalized.csv.gz")
    rows = df[(df.date == "2020-10-01") & (df.source == "chart0")]
    stocks = rows[~rows.symbol.isin(["N225", "TOPIX", "SPX"])]
    assert len(stocks) > 0 and (stocks.close == "#VALUE!").all()
    tse = get_calendar("XTKS")
    assert not tse.is_session(D(2020, 10, 1))
    assert D(2020, 10, 1) in tse.holidays(2020)
    assert tse.is_session(D(2020, 9, 30)) and tse.is_session(D(2020, 10, 2))


def test_lean_hour_bars_end_at_the_session_close_half_days_included():
    # Lean hour bars are labelled with their start (09:00 covers 09:30-10:00). In the AlgoSeek
    # era (2009 on) the last bar of every day ends at the close: 13:00 New York on half days.
    df = _frame("us_hour_lean.normalized.csv.gz")
    df = df[df.symbol.isin(["SPY", "AAPL", "IBM"])].copy()
    df["local"] = pd.to_datetime(df.timestamp.str[:19])
    df["d"] = df.local.dt.date
    last = df[df.d >= D(2009, 1, 1)].groupby(["symbol", "d"]).local.max().reset_index()
    nyse = get_calendar("XNYS")
    ends = [(row.local + pd.Timedelta(hours=1)).time() for row in last.itertuples()]
    closes = [nyse.session_bounds(row.d).close.astimezone(nyse.tz).time()
              for row in last.itertuples()]
    assert ends == closes
    half = last[[nyse.is_half_day(d) for d in last.d]]
    raw = xcals.get_calendar("XNYS", start="2009-01-01", end="2021-03-31")
    assert len(raw.early_closes) == 26  # every one of them is in the file for each symbol
    assert len(half) == 3 * 26 and set(half.local.dt.strftime("%H:%M")) == {"12:00"}
    assert D(2013, 11, 29) in set(half.d)


# -- gaps inside a session on real minute bars -------------------------------------------------
@functools.cache
def _minutes() -> pd.DataFrame:
    df = _frame("us_minute_trades_lean.normalized.csv.gz").copy()
    df["start"] = pd.to_datetime(df.timestamp, utc=True)
    df["day"] = df.start.dt.tz_convert("America/New_York").dt.date
    return df


def _expected_gaps(starts: pd.Series, day: D, edges: bool) -> list[IntradayGap]:
    """Runs of regular minutes (exchange_calendars' session minutes) without a bar."""
    raw = xcals.get_calendar("XNYS", start="2008-01-01", end="2023-12-31")
    regular = list(raw.session_minutes(pd.Timestamp(day)))
    present = set(starts)
    inside = [m for m in regular if m in present]
    if not inside:
        return []
    if not edges:
        regular = [m for m in regular if inside[0] <= m <= inside[-1]]
    gaps, run = [], []
    for m in regular + [None]:
        if m is not None and m not in present:
            run.append(m)
            continue
        if run:
            end = m if m is not None else raw.session_close(pd.Timestamp(day))
            gaps.append(IntradayGap(run[0].to_pydatetime(), end.to_pydatetime(), len(run)))
            run = []
    return gaps


def test_twx_2014_06_23_has_only_the_first_six_minutes():
    df = _minutes()
    twx = df[(df.symbol == "TWX") & (df.day == D(2014, 6, 23))]
    starts = list(twx.start.dt.to_pydatetime())
    assert len(starts) == 6
    nyse = get_calendar("XNYS")
    assert nyse.intraday_gaps(starts) == []  # six consecutive minutes: nothing between them
    assert nyse.intraday_gaps(starts, edges=True) == [
        IntradayGap(_utc(2014, 6, 23, 13, 36), _utc(2014, 6, 23, 20), 384)]


@pytest.mark.parametrize("symbol,day", [
    ("SPY", D(2013, 10, 7)), ("SPY", D(2023, 8, 3)), ("AAPL", D(2014, 6, 9)),
    ("IBM", D(2013, 10, 4)), ("IBM", D(2013, 10, 11)), ("TWX", D(2014, 6, 6)),
    ("GOOG", D(2015, 12, 28)), ("GOOG", D(2015, 12, 24)), ("SHY", D(2008, 3, 7)),
])
def test_gaps_on_real_minute_days_match_pandas(symbol, day):
    df = _minutes()
    starts = df[(df.symbol == symbol) & (df.day == day)].start
    nyse = get_calendar("XNYS")
    bars = list(starts.dt.to_pydatetime())
    for edges in (False, True):
        assert nyse.intraday_gaps(bars, edges=edges) == _expected_gaps(starts, day, edges)


def test_complete_and_incomplete_minute_days_over_the_whole_file():
    df = _minutes()
    nyse = get_calendar("XNYS")
    complete = []
    for (symbol, day), g in df.groupby(["symbol", "day"]):
        gaps = nyse.intraday_gaps(list(g.start.dt.to_pydatetime()), edges=True)
        missing = sum(x.minutes_missing for x in gaps)
        regular = [t for t in g.start.dt.to_pydatetime() if nyse.is_open(t)]
        assert missing + len(regular) == nyse.minutes_in_session(day), (symbol, day)
        if not gaps:
            complete.append((symbol, str(day)))
    # SPY and AAPL have every regular minute on every day of the file; IBM misses one minute
    # on 2013-10-04 and 10-11; GOOG 2015-12-24 (half day) is complete up to its 13:00 close
    assert {("SPY", d) for d in ("2013-10-07", "2023-08-03")} <= set(complete)
    assert {("AAPL", d) for d in ("2014-06-05", "2014-06-06", "2014-06-09")} <= set(complete)
    assert ("GOOG", "2015-12-24") in complete and ("IBM", "2013-10-04") not in complete
    assert ("TWX", "2014-06-23") not in complete


def test_lunch_break_and_half_day_close_are_not_gaps():
    tse = get_calendar("XTKS")
    tz = "Asia/Tokyo"
    # bar starts at 11:28, 11:29, 12:30, 12:31 Tokyo: the break is not a gap
    starts = [pd.Timestamp(f"2018-01-04 {t}", tz=tz).to_pydatetime()
              for t in ("11:28", "11:29", "12:30", "12:31")]
    assert tse.intraday_gaps(starts) == []
    # 11:27 -> 12:32: 11:28, 11:29, 12:30, 12:31 missing (4 regular minutes, first at 11:28)
    gaps = tse.intraday_gaps([starts[0] - dt.timedelta(minutes=1),
                              starts[-1] + dt.timedelta(minutes=1)])
    assert gaps == [IntradayGap(_utc(2018, 1, 4, 2, 28), _utc(2018, 1, 4, 3, 32), 4)]
    # 11:29 -> 12:32: the first missing minute is 12:30, after the break
    assert tse.intraday_gaps([starts[1], starts[-1] + dt.timedelta(minutes=1)]) == [
        IntradayGap(_utc(2018, 1, 4, 3, 30), _utc(2018, 1, 4, 3, 32), 2)]
    nyse = get_calendar("XNYS")
    assert nyse.regular_minutes_between(_utc(2013, 11, 29, 17), _utc(2013, 11, 30, 0)) == 60
