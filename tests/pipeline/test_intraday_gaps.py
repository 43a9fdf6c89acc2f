"""Minute bars built in the stream carry ``intraday_gap`` when regular-session minutes of their
session are missing before them (TestStream, real Lean data). Expectations are computed with
pandas from the same rows."""

from __future__ import annotations

import dataclasses
import datetime as dt

import apache_beam as beam
import pandas as pd
import pytest
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import TimestampedValue

from miraikakaku.schema import PriceEvent
from tests.conftest import SHARED
from transforms import progress
from transforms.bars import AggregateTrades
from transforms.parsing import file_spec, iter_file

pytestmark = pytest.mark.pipeline
MINUTES = SHARED / "normalized" / "us_minute_trades_lean.normalized.csv.gz"
NY = "America/New_York"


def _minute_trades(symbol: str, day: dt.date) -> list[PriceEvent]:
    """Each real Lean minute trade bar of the day as one trade at its start (price = close,
    size = volume), as test_bars does for GOOG."""
    rows = [e for e in iter_file(file_spec(MINUTES, "lean"))
            if isinstance(e, PriceEvent) and e.symbol == symbol and e.session_date == day]
    return [dataclasses.replace(e, interval="tick", sequence=i,
                                event_time=e.event_time - dt.timedelta(minutes=1),
                                open=e.close, high=e.close, low=e.close)
            for i, e in enumerate(rows)]


def _expected(trades: list[PriceEvent], lateness: float) -> list[tuple[str, tuple]]:
    """(bar start, flags) of the final minute bars: flagged when the previous bar inside the
    09:30-16:00 New York session is not the minute before."""
    df = pd.DataFrame({"start": [pd.Timestamp(t.event_time).floor("min") for t in trades]})
    newest = max(t.event_time for t in trades)
    starts = sorted(s for s in df.start.unique()
                    if s + pd.Timedelta(minutes=1) <= newest - dt.timedelta(seconds=lateness))
    out, prev = [], None
    for s in starts:
        hm = s.tz_convert(NY).strftime("%H:%M")
        regular = "09:30" <= hm < "16:00"
        gap = regular and prev is not None and s - prev > pd.Timedelta(minutes=1)
        out.append((s.isoformat(), ("intraday_gap",) if gap else ()))
        if regular:
            prev = s
    return out


def _run(trades: list[PriceEvent]):
    stream = TestStream()
    for chunk in (trades[i:i + 100] for i in range(0, len(trades), 100)):
        stream = stream.add_elements(
            [TimestampedValue(e, e.event_time.timestamp()) for e in chunk])
    opts = PipelineOptions()
    opts.view_as(StandardOptions).streaming = True
    p = TestPipeline(options=opts)
    bars = p | stream.advance_watermark_to_infinity() | AggregateTrades(
        allowed_lateness_seconds=60, idle_seconds=3600)
    out = bars.minute_bars | beam.Map(
        lambda b: ((b.event_time - dt.timedelta(minutes=1)).isoformat(), b.flags))
    return p, out


def test_real_missing_minute_of_ibm_2013_10_04_flags_the_next_bar():
    trades = _minute_trades("IBM", dt.date(2013, 10, 4))
    expected = _expected(trades, 60)
    flagged = [s for s, f in expected if f]
    assert len(flagged) == 1  # IBM misses one regular minute that day (389 of 390)
    progress.reset()
    p, out = _run(trades)
    with p:
        assert_that(out, equal_to(expected))
    assert progress.counters()[("AggregateTrades", "intraday_gaps")] == 1


def test_cut_minutes_in_spy_flag_once_and_extended_hours_do_not():
    # SPY 2013-10-07 has every regular minute; cut 10:00-10:05 New York; pre-market and
    # after-hours bars are sparse and never flagged
    trades = _minute_trades("SPY", dt.date(2013, 10, 7))
    lo, hi = pd.Timestamp("2013-10-07 10:00", tz=NY), pd.Timestamp("2013-10-07 10:05", tz=NY)
    cut = [t for t in trades if not lo <= t.event_time < hi]
    assert len(trades) - len(cut) == 5
    assert _expected(trades, 60) and not any(f for _, f in _expected(trades, 60))
    expected = _expected(cut, 60)
    assert [s for s, f in expected if f] == [hi.tz_convert("UTC").isoformat()]
    p, out = _run(cut)
    with p:
        assert_that(out, equal_to(expected))
