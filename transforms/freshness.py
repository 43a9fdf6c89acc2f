"""Per-instrument feed freshness: a system alert when an instrument's events stop while its
exchange is open.

``MonitorFreshness``: ``PCollection[PriceEvent]`` (timestamped with event time; unbounded) →
``PCollection[AlertEvent]`` of kind ``stale_feed``.

Rule: an instrument is stale when no event of it arrived for ``minutes`` (setting
``MIRAIKAKAKU_FRESHNESS_MINUTES``, default 15) of *open exchange time*: regular hours of the
instrument's calendar (``miraikakaku.instruments`` → ``miraikakaku.calendars``), so the count
pauses over the close, nights, weekends, holidays and Tokyo's lunch break
(``SessionCalendar.open_time_after``). A feed whose last trade came at 15:59 New York is not stale
overnight; it is stale at 09:45 the next session if nothing came by then. Only intraday events
count (``tick``, ``1s``, ``1m`` by default): a daily-bar feed is quiet all day by design.

One alert per stale period: the alert fires once, at ``detected_at`` = the instant the open-time
count reaches ``minutes`` (for a hole inside a session: last event + ``minutes``), and the next
event of the instrument re-arms the monitor. The ``AlertEvent``: ``rule_id`` ``system.freshness``,
``kind`` ``stale_feed``, ``event_time`` = detected at (UTC), ``session_date`` = the exchange-local
session of detection, ``value`` = wall-clock minutes from the last event to detection,
``threshold`` = ``minutes``, ``message`` = severity (``warning``), instrument, last event time
and detection time; ``alert_id`` = ``system.freshness/{instrument}/{last event time}``, so a
replay alerts once per stale period and two stale periods of one day stay two alerts.

Event time and runners: one stateful DoFn per instrument keeps the newest event time and an
*event-time* (watermark) timer at the stale deadline of an earlier event; when the watermark
passes it, the deadline is recomputed from the newest event: still ahead (events came) → the
timer moves there; reached → the alert. So a busy feed costs one timer per ``minutes``, not one
per event. With ``TestStream`` the test drives the watermark, so the behaviour is
deterministic. On the Python DirectRunner, ``ReadFromPubSub``'s watermark is the wall
clock (``_PubSubReadEvaluator`` holds it at ``time.time()``): for a live feed that is what we want
(stale = silent for N open minutes of real time), but for replayed history every deadline is
already in the past and would fire at once. On Dataflow the Pub/Sub watermark follows the
``event_time`` attribute (the oldest unacknowledged event time), so a replay sees the feed's
historical holes. Hence ``max_event_age``: an event older than that (event time vs wall clock at
processing) does not arm the monitor (counter ``Freshness/not_armed_old_events``); the pipeline
sets one hour, tests of replayed history pass None.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
import typing
from collections.abc import Iterable

import apache_beam as beam
from apache_beam.coders import PickleCoder
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.utils.timestamp import Timestamp

from miraikakaku.calendars import get_calendar
from miraikakaku.instruments import load_master
from miraikakaku.schema import AlertEvent, PriceEvent
from transforms import progress

__all__ = ["MonitorFreshness", "stale_alert", "default_freshness_minutes", "RULE_ID", "KIND",
           "SEVERITY", "INTRADAY_INTERVALS"]

RULE_ID = "system.freshness"
KIND = "stale_feed"
SEVERITY = "warning"
INTRADAY_INTERVALS = ("tick", "1s", "1m")
"""Intervals whose events keep an instrument fresh (daily and hourly feeds are quiet by design)."""

_ENV = "MIRAIKAKAKU_FRESHNESS_MINUTES"


def default_freshness_minutes() -> float:
    """``MIRAIKAKAKU_FRESHNESS_MINUTES`` from the environment, default 15.

    Raises:
        ValueError: if the variable is set but not a positive number.
    """
    from miraikakaku.settings import Settings

    try:
        return Settings().freshness_minutes  # the environment, then .env (pydantic-settings)
    except ValueError as e:  # pydantic's ValidationError
        raise ValueError(f"{_ENV} must be a positive number of minutes: {e}") from e


def stale_alert(instrument_id: str, symbol: str, calendar: str, last_event: dt.datetime,
                detected_at: dt.datetime, minutes: float) -> AlertEvent:
    """The ``stale_feed`` system alert (fields as in the module docstring).

    Args:
        instrument_id, symbol: the instrument (``XNYS:IBM``, ``IBM``).
        calendar: its exchange_calendars code.
        last_event: event time of its newest event (UTC aware).
        detected_at: when the stale period reached ``minutes`` of open exchange time (UTC).
        minutes: the freshness threshold.
    """
    cal = get_calendar(calendar)
    last = last_event.astimezone(dt.timezone.utc)
    stamp = f"{last:%Y%m%dT%H%M%S}.{last.microsecond // 1000:03d}"
    quiet = (detected_at - last).total_seconds() / 60.0
    return AlertEvent(
        f"{RULE_ID}/{instrument_id}/{stamp}", RULE_ID, KIND, instrument_id, detected_at,
        detected_at.astimezone(cal.tz).date(), quiet, float(minutes),
        f"{SEVERITY}: {symbol} ({instrument_id}) stale: no event for {minutes:g} min while "
        f"{calendar} is open; last event {last.isoformat()}, detected {detected_at.isoformat()}")


@dataclasses.dataclass
class _Watch:
    last: dt.datetime  # newest event time seen
    instrument_id: str
    symbol: str
    calendar: str
    live: bool = True  # False when the newest event was too old to arm (a replay)
    timer: dt.datetime | None = None  # when the set timer fires; None: not armed
    alerted_for: dt.datetime | None = None  # ``last`` of the stale period already alerted


class _FreshnessFn(beam.DoFn):
    """One watermark timer per quiet stretch, not one per event (timers cost the runner): an
    event arms the timer only when none is set; when it fires, the deadline is recomputed from
    the newest event and the timer moved there if events came in the meantime."""

    WATCH = ReadModifyWriteStateSpec("watch", PickleCoder())
    STALE = TimerSpec("stale", TimeDomain.WATERMARK)

    def __init__(self, minutes: float, max_event_age: dt.timedelta | None,
                 intervals: Iterable[str], default_mic: str) -> None:
        self._minutes = minutes
        self._span = dt.timedelta(minutes=minutes)
        self._max_age = max_event_age
        self._intervals = frozenset(intervals)
        self._default_mic = default_mic
        self._events = progress.counter("Freshness", "monitored_events")
        self._old = progress.counter("Freshness", "not_armed_old_events")
        self._behind = progress.counter("Freshness", "older_than_newest_events")
        self._alerts = progress.counter("Freshness", "stale_alerts")

    def setup(self) -> None:
        self._master = load_master(self._default_mic)

    def _arm(self, w: _Watch, stale) -> None:
        w.timer = get_calendar(w.calendar).open_time_after(w.last, self._span)
        if w.timer is not None:
            stale.set(Timestamp.from_utc_datetime(w.timer))

    def process(self, element: tuple[str, PriceEvent], watch=beam.DoFn.StateParam(WATCH),
                stale=beam.DoFn.TimerParam(STALE)):
        _, event = element
        if event.interval not in self._intervals:
            return
        self._events.inc()
        w: _Watch | None = watch.read()
        if w is not None and event.event_time <= w.last:
            self._behind.inc()  # out of order: the newest event time already counts
            return
        if w is None:
            inst = self._master.of_event(event.instrument_id, event.symbol, event.session_date)
            w = _Watch(event.event_time, event.instrument_id, event.symbol, inst.calendar)
        w.last = event.event_time
        w.live = self._max_age is None or \
            time.time() - event.event_time.timestamp() <= self._max_age.total_seconds()
        if not w.live:
            self._old.inc()  # replayed history on a wall-clock watermark: never alert
        elif w.timer is None:
            self._arm(w, stale)
        watch.write(w)

    @on_timer(STALE)
    def on_stale(self, fire=beam.DoFn.TimestampParam, watch=beam.DoFn.StateParam(WATCH),
                 stale=beam.DoFn.TimerParam(STALE)):
        w: _Watch | None = watch.read()
        if w is None:
            return
        w.timer = None
        if w.live and w.alerted_for != w.last:
            deadline = get_calendar(w.calendar).open_time_after(w.last, self._span)
            if deadline is not None and Timestamp.from_utc_datetime(deadline) > fire:
                self._arm(w, stale)  # events came since the timer was set: move it
            elif deadline is not None:
                w.alerted_for = w.last
                self._alerts.inc()
                yield stale_alert(w.instrument_id, w.symbol, w.calendar, w.last, deadline,
                                  self._minutes)
        watch.write(w)


class MonitorFreshness(beam.PTransform):
    """``PCollection[PriceEvent]`` → ``PCollection[AlertEvent]`` (``stale_feed``; see the
    module docstring).

    Args:
        minutes: open exchange minutes without an event after which an instrument is stale
            (default: ``MIRAIKAKAKU_FRESHNESS_MINUTES`` or 15).
        max_event_age: events older than this (wall clock at processing) do not arm the
            monitor (replays on a wall-clock watermark); None: every event arms it.
        intervals: event intervals that keep an instrument fresh.
        default_mic: MIC for unknown non-Tokyo symbols.

    Raises:
        ValueError: for ``minutes`` <= 0.
    """

    def __init__(self, minutes: float | None = None,
                 max_event_age: dt.timedelta | None = dt.timedelta(hours=1),
                 intervals: Iterable[str] = INTRADAY_INTERVALS,
                 default_mic: str = "XNYS") -> None:
        super().__init__()
        minutes = default_freshness_minutes() if minutes is None else float(minutes)
        if minutes <= 0:
            raise ValueError(f"freshness minutes must be positive, got {minutes}")
        self._fn = _FreshnessFn(minutes, max_event_age, tuple(intervals), default_mic)

    def expand(self, events):
        return (events
                | "KeyByInstrument" >> beam.Map(lambda e: (e.instrument_id, e))
                | "Watch" >> beam.ParDo(self._fn).with_input_types(
                    beam.typehints.Tuple[str, typing.Any]))
