"""Aggregate trades into 1-minute bars and exchange-session bars, per instrument.

``AggregateTrades``: ``PCollection[PriceEvent]`` (trades, interval ``tick``) →
``BarsResult(minute_bars: PCollection[PriceEvent], session_bars: PCollection[PriceEvent],
provisional: PCollection[PriceEvent])``.

Sessions come from the exchange calendar, not UTC days: a session bar holds the trades inside
the regular session [open, close) of its exchange (13:00 close on NYSE half days; Tokyo's lunch
break inside), its event time is the session close and its interval ``1d``; pre-market and
after-hours trades go into minute bars only (counter ``extended_hours_trades``).

Event time and lateness: one stateful DoFn per instrument keeps the open bars and a per-instrument
watermark derived from the data, ``max(trade time seen) - allowed_lateness``. A bar is final once
that watermark passes its end: it is emitted once on the main outputs. A trade for a bar already
final is late: it stays stored as a trade but is left out of bars (counters ``late_trades_minute``,
``late_trades_session``). This works the same on every runner (the Python DirectRunner's Pub/Sub
watermark is the wall clock, useless for replayed history) and with out-of-order trades inside
the allowed lateness. When an instrument goes quiet, a processing-time timer (``idle_seconds``)
emits its open bars as *provisional* (upserts under the same row key, replaced by the final bar
later) so the latest minute shows up without waiting for the next trade.

Gaps inside a session: a final minute bar inside regular hours that follows missing regular
minutes of the same session (no trade in them) carries the quality flag ``intraday_gap``
(``SessionCalendar.intraday_gaps``: the lunch break and a half day's early close are not gaps;
counter ``intraday_gaps``). Provisional bars are not flagged.

Restarts: the state lives in the runner; after a restart (a new pipeline), an instrument's first
trade warms its state from the trades of the same session already in the serving store (stored
before they were acknowledged, so none is missing), so the session bar is the whole session's,
not the part after the restart; redelivered trades that were stored before are not counted twice.

The accumulator (``BarAccumulator``) is plain Python and unit-tested without Beam.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
import typing
from typing import NamedTuple

import apache_beam as beam
from apache_beam.coders import PickleCoder
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.utils.timestamp import Timestamp

from miraikakaku.calendars import FLAG_INTRADAY_GAP, get_calendar
from miraikakaku.instruments import load_master
from miraikakaku.schema import SCHEMA_VERSION, PriceEvent, make_event_id
from transforms import progress

__all__ = ["AggregateTrades", "BarAccumulator", "BarsResult", "minute_start"]

UTC = dt.timezone.utc


def minute_start(t: dt.datetime) -> dt.datetime:
    """The start of the UTC minute containing ``t``."""
    return t.astimezone(UTC).replace(second=0, microsecond=0)


@dataclasses.dataclass
class BarAccumulator:
    """OHLCV of a set of trades, order-independent: open/close are the earliest/latest trade
    by (event time, sequence), whatever order the trades arrive in.

    Attributes:
        open, high, low, close: prices in the quote currency.
        volume: shares.
        count: trades.
        first, last: (event time, sequence) of the opening and closing trades.
    """

    open: float
    high: float
    low: float
    close: float
    volume: float
    count: int
    first: tuple[dt.datetime, int]
    last: tuple[dt.datetime, int]

    @classmethod
    def of(cls, trade: PriceEvent) -> BarAccumulator:
        """A bar of one trade."""
        key = (trade.event_time, trade.sequence)
        return cls(trade.close, trade.close, trade.close, trade.close, trade.volume or 0.0, 1,
                   key, key)

    def add(self, trade: PriceEvent) -> None:
        """Add a trade (any order)."""
        key = (trade.event_time, trade.sequence)
        p = trade.close
        self.high = max(self.high, p)
        self.low = min(self.low, p)
        self.volume += trade.volume or 0.0
        self.count += 1
        if key < self.first:
            self.first, self.open = key, p
        if key >= self.last:
            self.last, self.close = key, p

    def to_event(self, like: PriceEvent, interval: str, start_text: str, session_date: dt.date,
                 event_time: dt.datetime) -> PriceEvent:
        """The bar as a ``PriceEvent`` of ``like``'s instrument, source and currency."""
        return PriceEvent(SCHEMA_VERSION,
                          make_event_id(like.source, like.instrument_id, interval, start_text, 0),
                          like.instrument_id, like.symbol, like.source, 0, interval, session_date,
                          event_time, self.open, self.high, self.low, self.close, self.volume,
                          None, like.currency, ())


class BarsResult(NamedTuple):
    """Outputs of ``AggregateTrades``."""

    minute_bars: beam.PCollection
    session_bars: beam.PCollection
    provisional: beam.PCollection


@dataclasses.dataclass
class _State:
    like: PriceEvent
    minutes: dict[dt.datetime, BarAccumulator] = dataclasses.field(default_factory=dict)
    sessions: dict[dt.date, BarAccumulator] = dataclasses.field(default_factory=dict)
    max_time: dt.datetime | None = None
    final_minute_end: dt.datetime | None = None
    final_session: dt.date | None = None
    last_regular_minute: dt.datetime | None = None  # start of the last final in-session bar
    last_activity: float = 0.0  # processing time (Unix seconds) of the last trade
    idle_armed: bool = False
    # (event time, sequence) of the trades read back from the store at a warm start: a
    # redelivered trade among them is already in the bars (cleared when its session is final)
    seen: set[tuple[dt.datetime, int]] = dataclasses.field(default_factory=set)


class _AggregateTradesFn(beam.DoFn):
    SESSION, PROVISIONAL = "session", "provisional"
    STATE = ReadModifyWriteStateSpec("bars", PickleCoder())
    IDLE = TimerSpec("idle", TimeDomain.REAL_TIME)

    def __init__(self, allowed_lateness: dt.timedelta, idle_seconds: float,
                 default_mic: str, warm_store=None) -> None:
        self._lateness = allowed_lateness
        self._idle = idle_seconds
        self._default_mic = default_mic
        self._warm_store = warm_store
        self._warmed = progress.counter("AggregateTrades", "warm_start_trades")
        self._redelivered = progress.counter("AggregateTrades", "redelivered_trades")
        self._late_minute = progress.counter("AggregateTrades", "late_trades_minute")
        self._late_session = progress.counter("AggregateTrades", "late_trades_session")
        self._extended = progress.counter("AggregateTrades", "extended_hours_trades")
        self._minute_bars = progress.counter("AggregateTrades", "minute_bars")
        self._session_bars = progress.counter("AggregateTrades", "session_bars")
        self._in_bars = progress.counter("AggregateTrades", "trades_in_minute_bars")
        self._provisional = progress.counter("AggregateTrades", "provisional_bars")
        self._gaps = progress.counter("AggregateTrades", "intraday_gaps")

    def setup(self) -> None:
        self._master = load_master(self._default_mic)
        self._store = None

    def _stored_trades(self, trade: PriceEvent) -> list[PriceEvent]:
        """The trades of ``trade``'s regular session (same instrument and source) already in
        the serving store, as events, in (event time, sequence) order."""
        if self._warm_store is None:
            return []
        if self._store is None:
            try:
                self._store = self._warm_store.open(read_only=True)
            except FileNotFoundError:
                return []
        cal = self._calendar(trade)
        session = cal.regular_session(trade.event_time)
        if session is None:
            return []
        day = trade.event_time.astimezone(UTC).date()
        rows = self._store.get_bars(trade.instrument_id, interval="tick",
                                    start=day - dt.timedelta(days=1),
                                    end=day + dt.timedelta(days=1), source=trade.source,
                                    limit=5_000_000)
        out = []
        for r in rows:
            if cal.regular_session(r.event_time) != session:
                continue
            sequence = int(r.row_key.rsplit("#", 1)[1])
            out.append(dataclasses.replace(
                trade, event_id="", sequence=sequence, session_date=r.session_date,
                event_time=r.event_time, open=r.close, high=r.close, low=r.close, close=r.close,
                volume=r.volume, flags=r.flags, provenance=("", "", "")))
        return sorted(out, key=lambda e: (e.event_time, e.sequence))

    def _warm_start(self, st: _State, trade: PriceEvent):
        """Rebuild the open session (and its minutes) from the trades already stored, so a
        restart continues the session bar instead of starting it again from the trades after
        the restart (which overwrote the right bar with a partial one: open 181.38 for
        181.89, volume 550,205 for 990,466). Final minutes are emitted again, with the same
        values (idempotent rewrites)."""
        stored = self._stored_trades(trade)
        for t in stored:
            self._accumulate(st, t)
            st.seen.add((t.event_time, t.sequence))
        self._warmed.inc(len(stored))
        if stored:
            st.max_time = stored[-1].event_time
            yield from self._flush(st, st.max_time - self._lateness)

    def _calendar(self, trade: PriceEvent):
        inst = self._master.of_event(trade.instrument_id, trade.symbol, trade.session_date)
        return get_calendar(inst.calendar)

    def process(self, element: tuple[str, PriceEvent], state=beam.DoFn.StateParam(STATE),
                idle=beam.DoFn.TimerParam(IDLE)):
        _, trade = element
        st: _State | None = state.read()
        if st is None:  # the instrument's first trade since the pipeline started
            st = _State(trade)
            yield from self._warm_start(st, trade)
        if (trade.event_time, trade.sequence) in st.seen:
            self._redelivered.inc()  # stored before a restart and already in the bars
        else:
            self._accumulate(st, trade)
        st.max_time = trade.event_time if st.max_time is None else max(st.max_time,
                                                                         trade.event_time)
        yield from self._flush(st, st.max_time - self._lateness)
        # one idle timer per quiet period, not one per trade (timers cost the runner)
        st.last_activity = time.time()
        if not st.idle_armed:
            idle.set(Timestamp.of(st.last_activity + self._idle))
            st.idle_armed = True
        state.write(st)

    def _accumulate(self, st: _State, trade: PriceEvent) -> None:
        start = minute_start(trade.event_time)
        if st.final_minute_end is not None and start + dt.timedelta(minutes=1) <= \
                st.final_minute_end:
            self._late_minute.inc()
        else:
            acc = st.minutes.get(start)
            if acc is None:
                st.minutes[start] = BarAccumulator.of(trade)
            else:
                acc.add(trade)
            self._in_bars.inc()
        session = self._calendar(trade).regular_session(trade.event_time)
        if session is None:
            self._extended.inc()
        elif st.final_session is not None and session <= st.final_session:
            self._late_session.inc()
        else:
            acc = st.sessions.get(session)
            if acc is None:
                st.sessions[session] = BarAccumulator.of(trade)
            else:
                acc.add(trade)

    def _flush(self, st: _State, watermark: dt.datetime):
        cal = self._calendar(st.like)
        for start in sorted(m for m in st.minutes if m + dt.timedelta(minutes=1) <= watermark):
            acc = st.minutes.pop(start)
            end = start + dt.timedelta(minutes=1)
            st.final_minute_end = end if st.final_minute_end is None else max(
                st.final_minute_end, end)
            self._minute_bars.inc()
            bar = acc.to_event(st.like, "1m", f"{start:%Y%m%dT%H%M%S}",
                               start.astimezone(cal.tz).date(), end)
            if cal.is_open(start):
                prev = getattr(st, "last_regular_minute", None)  # None in pre-gap-flag state
                if prev is not None and cal.intraday_gaps([prev, start]):
                    self._gaps.inc()
                    bar = dataclasses.replace(bar, flags=bar.flags + (FLAG_INTRADAY_GAP,))
                st.last_regular_minute = start
            yield bar
        for day in sorted(st.sessions):
            close, _ = cal.session_close(day)
            if close > watermark:
                continue
            acc = st.sessions.pop(day)
            st.final_session = day if st.final_session is None else max(st.final_session, day)
            st.seen = {k for k in getattr(st, "seen", set())
                       if cal.regular_session(k[0]) not in (None, day)}
            self._session_bars.inc()
            yield beam.pvalue.TaggedOutput(self.SESSION, acc.to_event(
                st.like, "1d", f"{day:%Y%m%d}", day, close))

    @on_timer(IDLE)
    def on_idle(self, state=beam.DoFn.StateParam(STATE), idle=beam.DoFn.TimerParam(IDLE)):
        st: _State | None = state.read()
        if st is None:
            return
        quiet_until = st.last_activity + self._idle
        if time.time() < quiet_until:  # trades came in since the timer was set: re-arm
            idle.set(Timestamp.of(quiet_until))
            return
        st.idle_armed = False
        state.write(st)
        cal = self._calendar(st.like)
        self._provisional.inc(len(st.minutes) + len(st.sessions))
        for start, acc in sorted(st.minutes.items()):
            yield beam.pvalue.TaggedOutput(self.PROVISIONAL, acc.to_event(
                st.like, "1m", f"{start:%Y%m%dT%H%M%S}", start.astimezone(cal.tz).date(),
                start + dt.timedelta(minutes=1)))
        for day, acc in sorted(st.sessions.items()):
            close, _ = cal.session_close(day)
            yield beam.pvalue.TaggedOutput(self.PROVISIONAL, acc.to_event(
                st.like, "1d", f"{day:%Y%m%d}", day, close))


class AggregateTrades(beam.PTransform):
    """``PCollection[PriceEvent]`` of trades → ``BarsResult`` (see the module docstring).

    Args:
        allowed_lateness_seconds: how far behind the newest trade of an instrument a trade may
            arrive and still join its bars.
        idle_seconds: processing-time quiet period after which open bars are emitted as
            provisional.
        default_mic: MIC for unknown non-Tokyo symbols.
        warm_store: a ``stores.spec.StoreSpec``: on an instrument's first trade since the
            start, the trades of its session already stored are read back and aggregated first
            (``warm_start_trades``), and a redelivered trade among them is not counted twice
            (``redelivered_trades``). None: no warm start.
    """

    def __init__(self, allowed_lateness_seconds: float = 60.0, idle_seconds: float = 5.0,
                 default_mic: str = "XNYS", warm_store=None) -> None:
        super().__init__()
        self._fn = _AggregateTradesFn(dt.timedelta(seconds=allowed_lateness_seconds),
                                      idle_seconds, default_mic, warm_store)

    def expand(self, trades) -> BarsResult:
        out = (trades
               | "KeyByInstrumentSource" >> beam.Map(
                   lambda e: (f"{e.instrument_id}|{e.source}", e))
               | "Aggregate" >> beam.ParDo(self._fn).with_input_types(
                   beam.typehints.Tuple[str, typing.Any]).with_outputs(
                       _AggregateTradesFn.SESSION, _AggregateTradesFn.PROVISIONAL,
                       main="minute_bars"))
        return BarsResult(out.minute_bars, out[_AggregateTradesFn.SESSION],
                          out[_AggregateTradesFn.PROVISIONAL])
