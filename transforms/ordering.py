"""Ordered per-instrument state: source selection, features, LSTM windows and price alerts.

Only daily bars (interval ``1d``) belong here; callers filter other intervals out.

``ComputeFeatures``: ``PCollection[PriceEvent]`` (timestamped with event time) →
``OrderedResult(windows: PCollection[tuple[PredictionContext, ndarray[N, F]]],
flags: PCollection[BarFlag], alerts: PCollection[AlertEvent],
instruments: PCollection[Instrument])``.

One stateful DoFn keyed by instrument buffers events (bag state) and emits them in event-time
order on an event-time timer (ARCHITECTURE.md, "The stream's core"). Bounded input takes the
same per-instrument code (``_SequencingFn._run``) over a ``GroupByKey`` instead: the whole
history of an instrument is known at once, and the state path cost the DirectRunner ~30 % more
time (pickling every event into the bag, sizing each key's buffer in the state cache; measured
by ``benchmarks/pipeline_throughput.py``). Unbounded input: the timer fires when the watermark
passes the earliest buffered event; events up to the timer's time are processed and the timer is
set again. An event at or before the last processed time of its instrument is late: it was
already stored by the bar sink, is left out of the features and counted (``late_events``).

The per-instrument logic is the plain class ``InstrumentSequencer``, which model training uses too
(training/serving parity).

Split candidates: a ``large_move`` of the feature price (adjusted: a split the data records is
no move) near a split ratio, with the volume moving the opposite way by about the ratio, is also
flagged ``split_candidate`` for review (``miraikakaku.corporate_actions.stream_split_flag``). The
stream decides on the day: it cannot see that a bad print reverts the next session (the batch
``detect_candidates`` can), so a whole-bar bad print on high volume may be flagged here.

Source selection: the best-ranked source seen so far feeds the features (``source_priority``,
best first). A better source appearing later takes over and resets the history (flag
``source_switch``); bars of worse sources are stored but do not feed features. Bars of different
sources have different adjustments, so one series never mixes them.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import typing
from collections.abc import Iterable, Sequence
from typing import NamedTuple

import apache_beam as beam
from apache_beam.coders import PickleCoder
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import (
    BagStateSpec,
    ReadModifyWriteStateSpec,
    TimerSpec,
    on_timer,
)
from apache_beam.utils.timestamp import Timestamp

from miraikakaku.calendars import get_calendar
from miraikakaku.corporate_actions import stream_split_flag
from miraikakaku.instruments import load_master
from miraikakaku.rowkeys import bar_key
from miraikakaku.schema import SCHEMA_VERSION, PriceEvent, make_event_id
from stores.base import BarFlag
from transforms import progress
from transforms.alerts import AlertRule, evaluate_price_rules
from transforms.features import DEFAULT_WINDOW, BarPoint, StepResult, SymbolHistory

__all__ = [
    "ComputeFeatures",
    "InstrumentSequencer",
    "OrderedResult",
    "PredictionContext",
    "SequencedBar",
    "event_sort_key",
]


@dataclasses.dataclass(frozen=True)
class PredictionContext:
    """What a prediction needs besides the window (the RunInference key).

    Attributes:
        instrument_id, source: whose bars fed the window.
        as_of_date: session date of the window's last bar; ``as_of_time`` its UTC close.
        target_date: next session per the exchange calendar.
        base_price: feature price (adjusted close) at ``as_of_date``, quote currency.
        currency: quote currency.
    """

    instrument_id: str
    source: str
    as_of_date: dt.date
    as_of_time: dt.datetime
    target_date: dt.date
    base_price: float
    currency: str


@dataclasses.dataclass(frozen=True)
class SequencedBar:
    """One feature-source bar after it went through the history."""

    event: PriceEvent
    step: StepResult
    flags: tuple[str, ...]


def event_sort_key(rank: dict[str, int]):
    """Sort key for one instrument's events: event time, then source rank, then event id."""
    return lambda e: (e.event_time, rank.get(e.source, len(rank)), e.event_id)


class InstrumentSequencer:
    """Per-instrument ordered state: picks the feature source and feeds ``SymbolHistory``.

    Args:
        calendar: exchange_calendars code of the instrument (session ordinals for gaps).
        source_priority: source names, best first; unknown sources rank last.
        window: LSTM timesteps N.
        max_gap_sessions: gaps longer than this reset the history.
    """

    def __init__(self, calendar: str, source_priority: Sequence[str],
                 window: int = DEFAULT_WINDOW, max_gap_sessions: int = 5) -> None:
        self.calendar = calendar
        self.rank = {s: i for i, s in enumerate(source_priority)}
        self.active_source: str | None = None
        self.last_time: dt.datetime | None = None
        self.history = SymbolHistory(window, max_gap_sessions)

    def _rank(self, source: str) -> int:
        return self.rank.get(source, len(self.rank))

    def is_late(self, event: PriceEvent) -> bool:
        """True when ``event`` comes before the last processed event time, or is not after the
        last feature bar of its own (active) source: it can no longer join the features."""
        if self.last_time is not None and event.event_time < self.last_time:
            return True
        bars = self.history.bars
        return (event.source == self.active_source and bool(bars)
                and event.session_date <= bars[-1].session_date)

    def step(self, event: PriceEvent) -> SequencedBar | None:
        """Process the next event in order; None when its source does not feed features.

        Raises:
            ValueError: if the event is not after the last processed feature bar.
        """
        self.last_time = event.event_time if self.last_time is None else max(
            self.last_time, event.event_time)
        flags: tuple[str, ...] = ()
        if self.active_source is None or self._rank(event.source) < self._rank(self.active_source):
            if self.active_source is not None:
                flags = ("source_switch",)
            self.active_source = event.source
            self.history.reset()
        elif event.source != self.active_source:
            return None
        cal = get_calendar(self.calendar)
        point = BarPoint(event.session_date, cal.ordinal(event.session_date), event.feature_price,
                         event.high, event.low, event.close, event.volume)
        res = self.history.push(point)
        flags += res.flags
        if "large_move" in res.flags:  # split-like jump of the (adjusted) feature price?
            bars = list(self.history.bars)  # this bar last; up to 20 before it
            if stream_split_flag(bars[-2].price, point.price, point.volume,
                                 [b.volume for b in bars[:-1]]):
                flags += ("split_candidate",)
        return SequencedBar(event, res, flags)

    def context(self, bar: SequencedBar) -> PredictionContext:
        """The prediction key for a bar that produced a window."""
        e = bar.event
        target = get_calendar(self.calendar).next_session(e.session_date)
        return PredictionContext(e.instrument_id, e.source, e.session_date, e.event_time, target,
                                 e.feature_price, e.currency)


class OrderedResult(NamedTuple):
    """Outputs of ``ComputeFeatures``."""

    windows: beam.PCollection
    flags: beam.PCollection
    alerts: beam.PCollection
    instruments: beam.PCollection


class _SequencingFn(beam.DoFn):
    """What both variants share: setup, warm start and running events through a sequencer."""

    FLAGS, ALERTS, INSTRUMENTS = "flags", "alerts", "instruments"

    def __init__(self, source_priority: Sequence[str], rules: Sequence[AlertRule], window: int,
                 bounded: bool, default_mic: str, warm_store=None) -> None:
        self._warm_store = warm_store
        self._priority = list(source_priority)
        self._rules = list(rules)
        self._window = window
        self._bounded = bounded
        self._default_mic = default_mic
        self._late = progress.counter("ComputeFeatures", "late_events")
        self._windows = progress.counter("ComputeFeatures", "windows")
        self._warm = progress.counter("ComputeFeatures", "warm_start_bars")

    def setup(self) -> None:
        self._master = load_master(self._default_mic)
        self._store = None

    def _instrument(self, event: PriceEvent):
        """The event's instrument by its id (a reused ticker's symbol names two), else by rule."""
        return self._master.of_event(event.instrument_id, event.symbol, event.session_date)

    def _warm_start(self, seq: InstrumentSequencer, first: PriceEvent) -> None:
        """Replay the instrument's recent daily bars from the serving store into ``seq``."""
        if self._warm_store is None:
            return
        if self._store is None:
            try:
                self._store = self._warm_store.open(read_only=True)
            except FileNotFoundError:
                return
        end = first.session_date - dt.timedelta(days=1)
        rows = self._store.get_bars(first.instrument_id, interval="1d",
                                    start=end - dt.timedelta(days=200), end=end)
        events = [bar_row_to_event(r, first.symbol) for r in rows]
        for e in sorted(events, key=event_sort_key(seq.rank)):
            if not seq.is_late(e):
                seq.step(e)
                self._warm.inc()

    def _run(self, seq: InstrumentSequencer, events: Iterable[PriceEvent]):
        for event in sorted(events, key=event_sort_key(seq.rank)):
            if seq.is_late(event):
                self._late.inc()
                continue
            progress.tick("ordered")
            bar = seq.step(event)
            if bar is None:
                continue
            if bar.flags:
                key = bar_key(event.instrument_id, event.interval, event.session_date)
            for flag in bar.flags:
                yield beam.pvalue.TaggedOutput(self.FLAGS, BarFlag(key, event.source, flag))
            for alert in evaluate_price_rules(self._rules, event, bar.step.prev_close,
                                              bar.step.prev_price):
                yield beam.pvalue.TaggedOutput(self.ALERTS, alert)
            if bar.step.window is not None:
                self._windows.inc()
                yield seq.context(bar), bar.step.window


class _OrderedFeaturesFn(_SequencingFn):
    """Ordered per-instrument state for any input: bag state plus an event-time timer."""

    BUFFER = BagStateSpec("buffer", PickleCoder())
    STATE = ReadModifyWriteStateSpec("sequencer", PickleCoder())
    NEXT = ReadModifyWriteStateSpec("next_timer", PickleCoder())
    FLUSH = TimerSpec("flush", TimeDomain.WATERMARK)

    def process(self, element: tuple[str, PriceEvent], buffer=beam.DoFn.StateParam(BUFFER),
                state=beam.DoFn.StateParam(STATE), next_timer=beam.DoFn.StateParam(NEXT),
                flush=beam.DoFn.TimerParam(FLUSH)):
        _, event = element
        seq: InstrumentSequencer | None = state.read()
        if seq is not None and seq.is_late(event):
            self._late.inc()
            return
        buffer.add(event)
        ts = Timestamp.from_utc_datetime(event.event_time)
        current = next_timer.read()
        if current is None or ts < current:
            flush.set(ts)
            next_timer.write(ts)

    @on_timer(FLUSH)
    def flush(self, key=beam.DoFn.KeyParam, fire=beam.DoFn.TimestampParam,
              buffer=beam.DoFn.StateParam(BUFFER), state=beam.DoFn.StateParam(STATE),
              next_timer=beam.DoFn.StateParam(NEXT), flush=beam.DoFn.TimerParam(FLUSH)):
        events: list[PriceEvent] = list(buffer.read())
        buffer.clear()
        next_timer.clear()
        if self._bounded:
            ready, rest = events, []
        else:
            ready = [e for e in events if Timestamp.from_utc_datetime(e.event_time) <= fire]
            rest = [e for e in events if Timestamp.from_utc_datetime(e.event_time) > fire]
        seq: InstrumentSequencer | None = state.read()
        if seq is None:
            inst = self._instrument(events[0]) if events else None
            if inst is None:
                return
            yield beam.pvalue.TaggedOutput(self.INSTRUMENTS, inst)
            seq = InstrumentSequencer(inst.calendar, self._priority, self._window)
            if ready:
                self._warm_start(seq, min(ready, key=lambda e: e.event_time))
        yield from self._run(seq, ready)
        state.write(seq)
        for e in rest:
            buffer.add(e)
        if rest:
            nxt = min(Timestamp.from_utc_datetime(e.event_time) for e in rest)
            flush.set(nxt)
            next_timer.write(nxt)


class _OrderedGroupsFn(_SequencingFn):
    """Bounded runs: the same per-instrument sequencing over ``GroupByKey`` output.

    For bounded input the whole history of an instrument is known at once, so a GroupByKey
    replaces the bag state and the timer (as ``TrackPredictions(bounded=True)`` does). On the
    DirectRunner the state path pickled every event into the bag and had Beam's state cache size
    each key's growing buffer (``objsize``) on every commit; the outputs are the same.
    """

    def process(self, element: tuple[str, Iterable[PriceEvent]]):  # type: ignore[override]
        _, grouped = element
        events = list(grouped)
        if not events:
            return
        inst = self._instrument(events[0])
        yield beam.pvalue.TaggedOutput(self.INSTRUMENTS, inst)
        seq = InstrumentSequencer(inst.calendar, self._priority, self._window)
        self._warm_start(seq, min(events, key=lambda e: e.event_time))
        yield from self._run(seq, events)


def bar_row_to_event(row, symbol: str) -> PriceEvent:
    """A stored daily bar (``stores.base.BarRow``) as the ``PriceEvent`` it was written from."""
    return PriceEvent(SCHEMA_VERSION,
                      make_event_id(row.source, row.instrument_id, row.interval,
                                    f"{row.session_date:%Y%m%d}", 0),
                      row.instrument_id, symbol, row.source, 0, row.interval, row.session_date,
                      row.event_time, row.open, row.high, row.low, row.close, row.volume,
                      row.adj_close, row.currency, row.flags)


class ComputeFeatures(beam.PTransform):
    """``PCollection[PriceEvent]`` → ``OrderedResult`` (see the module docstring).

    Args:
        source_priority: source names, best first.
        rules: market alert rules (``transforms.alerts.load_rules``).
        window: LSTM timesteps N.
        bounded: True for bounded input: one ``GroupByKey`` per instrument, every event
            processed in order (no state or timers).
        default_mic: MIC for unknown non-Tokyo symbols.
        warm_store: a ``stores.spec.StoreSpec``: on an instrument's first event, its recent
            daily bars are read from this store and replayed into the state (restarts, updates),
            so predictions are right from the first event. None: no warm start.
    """

    def __init__(self, source_priority: Sequence[str], rules: Sequence[AlertRule] = (),
                 window: int = DEFAULT_WINDOW, bounded: bool = True,
                 default_mic: str = "XNYS", warm_store=None) -> None:
        super().__init__()
        fn_class = _OrderedGroupsFn if bounded else _OrderedFeaturesFn
        self._bounded = bounded
        self._fn = fn_class(source_priority, rules, window, bounded, default_mic, warm_store)

    def expand(self, events: beam.PCollection) -> OrderedResult:
        keyed = events | "KeyByInstrument" >> beam.Map(lambda e: (e.instrument_id, e))
        if self._bounded:  # bounded: one group per instrument instead of state and a timer
            keyed = keyed | "GroupByInstrument" >> beam.GroupByKey()
        out = (keyed
               | "OrderPerInstrument" >> beam.ParDo(self._fn).with_input_types(
                   beam.typehints.Tuple[str, typing.Any]).with_outputs(
                   _OrderedFeaturesFn.FLAGS, _OrderedFeaturesFn.ALERTS,
                   _OrderedFeaturesFn.INSTRUMENTS, main="windows"))
        return OrderedResult(out.windows, out[_OrderedFeaturesFn.FLAGS],
                             out[_OrderedFeaturesFn.ALERTS], out[_OrderedFeaturesFn.INSTRUMENTS])



