"""Trade aggregation in the stream (TestStream): minute bars, session bars by exchange calendar,
out-of-order and late trades. Expected bars are computed with pandas from the same real trades."""

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

from miraikakaku.calendars import get_calendar
from miraikakaku.schema import PriceEvent
from tests.conftest import SHARED
from transforms import progress
from transforms.bars import AggregateTrades, BarAccumulator
from transforms.parsing import file_spec, iter_file

pytestmark = pytest.mark.pipeline
UTC = dt.timezone.utc
TICKS = SHARED / "normalized" / "us_tick_trades_lean.normalized.csv.gz"
MINUTES = SHARED / "normalized" / "us_minute_trades_lean.normalized.csv.gz"


def _trades(symbol: str, start: dt.datetime, end: dt.datetime) -> list[PriceEvent]:
    return [e for e in iter_file(file_spec(TICKS, "lean"))
            if isinstance(e, PriceEvent) and e.symbol == symbol and start <= e.event_time < end]


def _run(events: list[PriceEvent], lateness: float = 60.0):
    """A TestStream of ``events`` in the given order (bundles of 50), and streaming options."""
    stream = TestStream()
    for chunk in (events[i:i + 50] for i in range(0, len(events), 50)):
        stream = stream.add_elements(
            [TimestampedValue(e, e.event_time.timestamp()) for e in chunk])
    stream = stream.advance_watermark_to_infinity()
    opts = PipelineOptions()
    opts.view_as(StandardOptions).streaming = True
    return stream, opts


def _ohlcv(df: pd.DataFrame) -> tuple:
    df = df.sort_values(["t", "seq"])
    return (df.price.iloc[0], df.price.max(), df.price.min(), df.price.iloc[-1],
            float(df.size_.sum()))


def _frame(events: list[PriceEvent]) -> pd.DataFrame:
    return pd.DataFrame({"t": [e.event_time for e in events], "seq": [e.sequence for e in events],
                         "price": [e.close for e in events],
                         "size_": [e.volume for e in events]})


def _bar_tuple(e: PriceEvent) -> tuple:
    return (e.interval, e.session_date.isoformat(), e.event_time.isoformat(), e.open, e.high,
            e.low, e.close, e.volume)


def test_accumulator_is_order_independent_on_real_trades():
    trades = _trades("IBM", dt.datetime(2013, 10, 7, 13, 30, tzinfo=UTC),
                     dt.datetime(2013, 10, 7, 13, 31, tzinfo=UTC))
    assert len(trades) > 20
    fwd = BarAccumulator.of(trades[0])
    for t in trades[1:]:
        fwd.add(t)
    rev = BarAccumulator.of(trades[-1])
    for t in reversed(trades[:-1]):
        rev.add(t)
    assert dataclasses.astuple(fwd) == dataclasses.astuple(rev)
    assert (fwd.open, fwd.close, fwd.count) == (trades[0].close, trades[-1].close, len(trades))


def test_minute_bars_with_out_of_order_and_late_trades():
    start = dt.datetime(2013, 10, 7, 13, 30, tzinfo=UTC)
    trades = _trades("IBM", start, start + dt.timedelta(minutes=6))
    # out of order inside the lateness: swap neighbours; one trade arrives 4 minutes late
    shuffled = list(trades)
    for i in range(0, len(shuffled) - 1, 7):
        shuffled[i], shuffled[i + 1] = shuffled[i + 1], shuffled[i]
    late = shuffled.pop(3)  # a 13:30 trade
    shuffled.append(late)
    df = _frame([t for t in trades if t is not late])
    df["minute"] = df.t.dt.floor("min")
    newest = max(t.event_time for t in trades)
    final_before = newest - dt.timedelta(seconds=60)
    expected = []
    for minute, g in df.groupby("minute"):
        end = minute.to_pydatetime() + dt.timedelta(minutes=1)
        if end <= final_before:
            o, h, lo, c, v = _ohlcv(g)
            expected.append(("1m", "2013-10-07", end.isoformat(), o, h, lo, c, v))
    assert len(expected) == 4
    progress.reset()
    stream, opts = _run(shuffled)
    with TestPipeline(options=opts) as p:
        bars = p | stream | AggregateTrades(allowed_lateness_seconds=60, idle_seconds=3600)
        assert_that(bars.minute_bars | "Minute" >> beam.Map(_bar_tuple), equal_to(expected),
                    label="MinuteBars")
        assert_that(bars.session_bars, equal_to([]), label="NoSessionBar")
    counts = progress.counters()
    assert counts[("AggregateTrades", "late_trades_minute")] == 1
    assert counts.get(("AggregateTrades", "late_trades_session"), 0) == 0  # session still open


def test_session_bar_closes_at_the_exchange_close_not_utc_midnight():
    # last regular half hour of 2013-10-07, its after-hours trades, then the 10-08 open
    d1 = _trades("IBM", dt.datetime(2013, 10, 7, 19, 30, tzinfo=UTC),
                 dt.datetime(2013, 10, 8, 0, 0, tzinfo=UTC))
    d2 = _trades("IBM", dt.datetime(2013, 10, 8, 13, 30, tzinfo=UTC),
                 dt.datetime(2013, 10, 8, 13, 35, tzinfo=UTC))
    close = get_calendar("XNYS").session_close(dt.date(2013, 10, 7))[0]
    regular = [t for t in d1 if t.event_time < close]
    assert len(regular) < len(d1), "the fixture needs after-hours trades"
    o, h, lo, c, v = _ohlcv(_frame(regular))
    progress.reset()
    stream, opts = _run(d1 + d2)
    with TestPipeline(options=opts) as p:
        bars = p | stream | AggregateTrades(allowed_lateness_seconds=60, idle_seconds=3600)
        assert_that(bars.session_bars | beam.Map(_bar_tuple),
                    equal_to([("1d", "2013-10-07", close.isoformat(), o, h, lo, c, v)]))
    assert progress.counters()[("AggregateTrades", "extended_hours_trades")] == \
        len(d1) - len(regular)


def test_half_day_session_closes_at_13_new_york():
    # GOOG 2015-12-24: NYSE half day, regular session 09:30-13:00 ET; sparse after-hours trades
    # follow until 16:11. Each real minute trade bar of the Lean file is used as one trade at its
    # start (price = close, size = volume); 2015-12-28 closes the session.
    spec = file_spec(MINUTES, "lean")
    rows = [e for e in iter_file(spec) if isinstance(e, PriceEvent) and e.symbol == "GOOG"
            and e.session_date in (dt.date(2015, 12, 24), dt.date(2015, 12, 28))]
    trades = [dataclasses.replace(e, interval="tick", sequence=i,
                                  event_time=e.event_time - dt.timedelta(minutes=1),
                                  open=e.close, high=e.close, low=e.close)
              for i, e in enumerate(rows)]
    trades = [t for t in trades if t.event_time < dt.datetime(2015, 12, 28, 15, tzinfo=UTC)]
    close = get_calendar("XNYS").session_close(dt.date(2015, 12, 24))[0]
    assert close == dt.datetime(2015, 12, 24, 18, tzinfo=UTC)
    opened = dt.datetime(2015, 12, 24, 14, 30, tzinfo=UTC)
    regular = [t for t in trades if opened <= t.event_time < close]
    o, h, lo, c, v = _ohlcv(_frame(regular))
    stream, opts = _run(trades)
    with TestPipeline(options=opts) as p:
        bars = p | stream | AggregateTrades(allowed_lateness_seconds=60, idle_seconds=3600)
        assert_that(bars.session_bars | beam.Map(_bar_tuple),
                    equal_to([("1d", "2015-12-24", close.isoformat(), o, h, lo, c, v)]))
