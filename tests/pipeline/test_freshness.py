"""Feed freshness in the stream (TestStream drives the watermark): a stale_feed system alert once
per stale period while the exchange is open; none over the close, the night, pre-market silence or
Tokyo's lunch break.

US cases use real IBM trades (Lean ticks 2013-10-07..08). Expected alerts are derived from the
ticks with pandas and exchange_calendars' schedule directly, not from ``SessionCalendar``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools

import apache_beam as beam
import exchange_calendars as xcals
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
from transforms.freshness import KIND, RULE_ID, MonitorFreshness, default_freshness_minutes
from transforms.parsing import file_spec, iter_file

pytestmark = pytest.mark.pipeline
UTC = dt.timezone.utc
NY = "America/New_York"
TICKS = SHARED / "normalized" / "us_tick_trades_lean.normalized.csv.gz"
JP_DAILY = SHARED / "normalized" / "jp_daily.normalized.csv.gz"
N = 15  # minutes


@functools.cache
def _ibm_trades() -> tuple[PriceEvent, ...]:
    """Real IBM trades of 2013-10-07 (04:00-20:00 New York incl. extended hours) and 2013-10-08
    up to 10:00 New York, thinned to the first and last trade of each minute: every quiet stretch
    longer than a minute is kept exactly (its ends are the last trade of one minute and the
    first of a later one)."""
    end = pd.Timestamp("2013-10-08 10:00", tz=NY)
    events = [e for e in iter_file(file_spec(TICKS, "lean"))
              if isinstance(e, PriceEvent) and e.symbol == "IBM" and e.event_time < end]
    by_minute: dict[dt.datetime, list[PriceEvent]] = {}
    for e in events:
        by_minute.setdefault(e.event_time.replace(second=0, microsecond=0), []).append(e)
    kept = {id(x): x for g in by_minute.values() for x in (g[0], g[-1])}
    return tuple(sorted(kept.values(), key=lambda e: (e.event_time, e.sequence)))


def _stream(events: list[PriceEvent]) -> TestStream:
    """Events in time order; the watermark moves to an element's time before it arrives whenever
    more than a minute passed since the previous one (as a live source's watermark would), and
    on for 4 days after the last one."""
    stream = TestStream()
    chunk: list[PriceEvent] = []
    for e in events:
        if chunk and (e.event_time - chunk[-1].event_time).total_seconds() > 60:
            stream = _add(stream, chunk)
            chunk = []
        chunk.append(e)
    if chunk:
        stream = _add(stream, chunk)
    # a live watermark keeps moving after the last event (the alert after it fires then); a jump
    # straight to infinity would make that alert late for assert_that's global window
    end = chunk[-1].event_time + dt.timedelta(days=4) if chunk else dt.datetime.now(UTC)
    return stream.advance_watermark_to(end.timestamp()).advance_watermark_to_infinity()


def _add(stream: TestStream, chunk: list[PriceEvent]) -> TestStream:
    return stream.advance_watermark_to(chunk[0].event_time.timestamp()).add_elements(
        [TimestampedValue(e, e.event_time.timestamp()) for e in chunk])


def _streaming() -> PipelineOptions:
    opts = PipelineOptions()
    opts.view_as(StandardOptions).streaming = True
    return opts


def _run(events: list[PriceEvent], **kwargs):
    """A pipeline (run it with ``with p:``) and its alerts as comparable tuples."""
    progress.reset()
    p = TestPipeline(options=_streaming())
    alerts = p | _stream(events) | MonitorFreshness(**kwargs)
    out = alerts | beam.Map(lambda a: (a.alert_id, a.rule_id, a.kind, a.instrument_id,
                                       a.event_time, a.session_date, a.threshold))
    return p, out


def _spans(schedule: pd.DataFrame) -> list[tuple[pd.Timestamp, pd.Timestamp]]:
    """Trading intervals (lunch excluded) from exchange_calendars' raw schedule."""
    out = []
    for _, s in schedule.iterrows():
        out += [(s.open, s.close)] if pd.isna(s.break_start) else [
            (s.open, s.break_start), (s.break_end, s.close)]
    return out


def _expected(symbol_id: str, calendar: str, times: list[pd.Timestamp]) -> list[tuple]:
    """Independent oracle: after each event, walk the schedule until N open minutes have passed;
    if the next event comes later than that instant, an alert fires there (the last event's
    alert fires when the stream ends and the watermark goes to infinity)."""
    cal = xcals.get_calendar(calendar, start="2013-01-01", end="2025-12-31")
    lo = times[0].tz_convert(cal.tz).date().isoformat()
    hi = (times[-1] + pd.Timedelta(days=10)).tz_convert(cal.tz).date().isoformat()
    spans = _spans(cal.schedule.loc[lo:hi])
    out = []
    for a, b in zip(times, times[1:] + [None], strict=True):
        left = pd.Timedelta(minutes=N)
        hit = None
        for s0, s1 in spans:
            if s1 <= a:
                continue
            start = max(s0, a)
            if start + left <= s1:
                hit = start + left
                break
            left -= s1 - start
        if b is None or b > hit:
            stamp = f"{a:%Y%m%dT%H%M%S}.{a.microsecond // 1000:03d}"
            out.append((f"{RULE_ID}/{symbol_id}/{stamp}", RULE_ID, KIND, symbol_id,
                        hit.to_pydatetime(), hit.tz_convert(cal.tz).date(), float(N)))
    return out


def test_a_30_minute_hole_in_real_ticks_alerts_once_at_hole_start_plus_n():
    trades = list(_ibm_trades())
    hole = (pd.Timestamp("2013-10-07 11:00", tz=NY), pd.Timestamp("2013-10-07 11:30", tz=NY))
    holed = [e for e in trades if not hole[0] <= e.event_time < hole[1]]
    assert len(trades) - len(holed) == 60  # first and last trade of each minute of the hole
    times = [pd.Timestamp(e.event_time) for e in holed]
    gaps = pd.Series(times).diff().dt.total_seconds()
    assert gaps.max() > 5 * 3600  # the night: much longer than N, yet closed
    assert (gaps > N * 60).sum() >= 5  # pre-market and after-hours silences of the real feed
    last_before = max(e.event_time for e in holed if e.event_time < hole[0])
    final = pd.Timestamp(holed[-1].event_time)
    expected = _expected("XNYS:IBM", "XNYS", times)
    # one alert in the hole (at its last trade + 15 min, inside the session) and the one after
    # the stream ends at 10:00 on 10-08; nothing before the open, after the close or overnight
    assert [a[4] for a in expected] == [last_before + dt.timedelta(minutes=N),
                                        (final + pd.Timedelta(minutes=N)).to_pydatetime()]
    assert hole[0] < pd.Timestamp(expected[0][4]) < hole[1]
    p, out = _run(holed, minutes=N, max_event_age=None)
    with p:
        assert_that(out, equal_to(expected))
    counts = progress.counters()
    assert counts[("Freshness", "stale_alerts")] == 2
    assert counts[("Freshness", "monitored_events")] == len(holed)


def test_real_ticks_without_a_hole_alert_only_after_the_stream_ends():
    trades = list(_ibm_trades())
    expected = _expected("XNYS:IBM", "XNYS", [pd.Timestamp(e.event_time) for e in trades])
    assert len(expected) == 1  # the real feed has no 15-minute silence in regular hours
    p, out = _run(trades, minutes=N, max_event_age=None)
    with p:
        assert_that(out, equal_to(expected))


def test_replayed_history_does_not_arm_on_a_wall_clock_watermark():
    # the pipeline's default: events an hour older than the wall clock (a replay of 2013 ticks
    # on the DirectRunner, whose Pub/Sub watermark is the wall clock) never alert
    trades = list(_ibm_trades())[:400]
    p, out = _run(trades, minutes=N)
    with p:
        assert_that(out, equal_to([]))
    counts = progress.counters()
    newer = pd.Series([e.event_time for e in trades]).diff().dt.total_seconds().fillna(1) > 0
    assert counts[("Freshness", "not_armed_old_events")] == newer.sum()  # equal times: counted
    assert counts[("Freshness", "older_than_newest_events")] == (~newer).sum() > 0


def _toyota_close(day: dt.date) -> float:
    df = pd.read_csv(JP_DAILY, dtype=str)
    row = df[(df.symbol == "7203.T") & (df.date == day.isoformat()) & (df.source == "mlbot")]
    return float(row.close.iloc[0])


def _tokyo_trades(day: dt.date, skip: tuple[str, str] | None = None) -> list[PriceEvent]:
    """Trades of 7203.T at hh:mm:30 Tokyo for every minute of the 2018-01-04 regular session
    (09:00-11:30, 12:30-15:00; no lunch-break trades). There is no real Tokyo intraday file in
    ../shared/data: the times are a schedule, the price is that day's real close (mlbot)."""
    price = _toyota_close(day)
    tz = "Asia/Tokyo"
    minutes = [*pd.date_range(f"{day} 09:00:30", f"{day} 11:29:30", freq="min", tz=tz),
               *pd.date_range(f"{day} 12:30:30", f"{day} 14:59:30", freq="min", tz=tz)]
    if skip:
        lo, hi = (pd.Timestamp(f"{day} {s}", tz=tz) for s in skip)
        minutes = [m for m in minutes if not lo <= m < hi]
    return [PriceEvent(1, f"test/XTKS:7203/tick/{m:%Y%m%dT%H%M%S}/{i}", "XTKS:7203", "7203.T",
                       "test", i, "tick", day, m.tz_convert(UTC).to_pydatetime(), price, price,
                       price, price, 100.0, None, "JPY") for i, m in enumerate(minutes)]


def test_tokyo_lunch_break_is_not_a_stale_period():
    day = dt.date(2018, 1, 4)
    trades = _tokyo_trades(day)
    assert trades[0].close == _toyota_close(day) > 0
    wall = pd.Series([pd.Timestamp(e.event_time) for e in trades]).diff().max()
    assert wall == pd.Timedelta(minutes=61)  # 11:29:30 -> 12:30:30, longer than N
    expected = _expected("XTKS:7203", "XTKS", [pd.Timestamp(e.event_time) for e in trades])
    # only the alert after the stream ends: 14:59:30 leaves 30 s of the session, the other
    # 14.5 minutes run from the next session's open (2018-01-05 09:14:30 Tokyo)
    assert [a[4] for a in expected] == [dt.datetime(2018, 1, 5, 0, 14, 30, tzinfo=UTC)]
    p, out = _run(trades, minutes=N, max_event_age=None)
    with p:
        assert_that(out, equal_to(expected))


def test_tokyo_hole_in_the_afternoon_alerts():
    day = dt.date(2018, 1, 4)
    trades = _tokyo_trades(day, skip=("13:00", "13:30"))
    expected = _expected("XTKS:7203", "XTKS", [pd.Timestamp(e.event_time) for e in trades])
    assert [a[4] for a in expected][0] == dt.datetime(2018, 1, 4, 4, 14, 30, tzinfo=UTC)
    assert len(expected) == 2
    p, out = _run(trades, minutes=N, max_event_age=None)
    with p:
        assert_that(out, equal_to(expected))


def test_settings_and_bad_threshold(monkeypatch):
    monkeypatch.delenv("MIRAIKAKAKU_FRESHNESS_MINUTES", raising=False)
    assert default_freshness_minutes() == 15.0
    monkeypatch.setenv("MIRAIKAKAKU_FRESHNESS_MINUTES", "5")
    assert default_freshness_minutes() == 5.0
    monkeypatch.setenv("MIRAIKAKAKU_FRESHNESS_MINUTES", "0")
    with pytest.raises(ValueError, match="positive"):
        default_freshness_minutes()
    with pytest.raises(ValueError, match="positive"):
        MonitorFreshness(minutes=-1)


def test_daily_bars_do_not_keep_a_feed_fresh_or_stale():
    # a daily bar (the Tokyo close of 2018-01-04, event time = session close) is not monitored
    trades = _tokyo_trades(dt.date(2018, 1, 4))[:1]
    bar = dataclasses.replace(trades[0], interval="1d", event_time=dt.datetime(
        2018, 1, 4, 6, tzinfo=UTC))
    p, out = _run([bar], minutes=N, max_event_age=None)
    with p:
        assert_that(out, equal_to([]))
    assert progress.counters().get(("Freshness", "monitored_events"), 0) == 0


def test_streaming_graph_routes_stale_alerts_to_the_store_and_the_alerts_topic(tmp_path):
    # the graph `miraikakaku run --subscription ... --alerts_topic ...` builds (not run)
    from apache_beam.pipeline import PipelineVisitor

    from miraikakaku.settings import Settings
    from pipelines.prices import _resolve, build_pipeline

    argv = ["--subscription", "projects/mk-graph/subscriptions/prices", "--skip_inference", "true",
            "--alerts_topic", "projects/mk-graph/topics/alerts", "--store_path",
            str(tmp_path / "s.db"), "--analytics_dir", ""]
    opts = PipelineOptions(argv)
    p = beam.Pipeline(options=opts)
    build_pipeline(p, _resolve(opts, Settings(data_dir=tmp_path)), freshness_minutes=N)

    consumers: dict = {}
    labels: dict = {}

    class _Graph(PipelineVisitor):
        def visit_transform(self, node):
            labels[node.full_label] = node
            for pc in node.inputs:
                consumers.setdefault(pc, []).append(node)

        enter_composite_transform = visit_transform

    p.visit(_Graph())
    seen, todo = set(), list(labels["MonitorFreshness"].outputs.values())
    while todo:
        pc = todo.pop()
        for node in consumers.get(pc, []):
            if node.full_label not in seen:
                seen.add(node.full_label)
                todo += list(node.outputs.values())
    assert {"PublishAlerts", "WriteToServingStore"} <= {s.split("/")[0] for s in seen}
    # --freshness_minutes 0 leaves it out
    p0 = beam.Pipeline(options=opts)
    build_pipeline(p0, _resolve(opts, Settings(data_dir=tmp_path)), freshness_minutes=0)
    labels.clear()
    p0.visit(_Graph())
    assert "MonitorFreshness" not in labels and "AggregateTrades" in labels
