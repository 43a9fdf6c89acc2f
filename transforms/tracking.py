"""Track predictions in the stream: join each one with the realized bar of its target session.

``TrackPredictions``: ``(PCollection[Prediction], PCollection[PriceEvent])`` →
``TrackingResult(outcomes: PCollection[PredictionOutcome], performance:
PCollection[ModelPerformance], unmatched: PCollection[DeadLetter])``.

Both inputs are keyed by instrument and session (``{instrument_id}#{YYYYMMDD}``: the target
date of a prediction, the session date of a bar) and meet in one stateful DoFn (``_TrackFn``): a
prediction waits in state until the bar of its ``target_date`` from its own ``source`` arrives,
and a bar waits for predictions that target it, because in a bounded run or a replay the bar can
come first. Keying by session rather than by instrument alone keeps each key's state to a few
elements (one bar per source, one prediction per model version) instead of an instrument's whole
history. Each match emits a ``PredictionOutcome`` (``miraikakaku.tracking.make_outcome``) and its
one-outcome ``ModelPerformance`` row (key: model, version, instrument, target date; the stores
upsert it, so a replay rewrites the same row). State is bounded by an event-time horizon: when
the watermark passes the end of the session day plus ``horizon_days``, the key's state is
cleared and every prediction still waiting is emitted as a ``DeadLetter`` (step
``TrackPredictions``, reason ``no_realized_bar``, payload the prediction as JSON, detail naming
the sources that did have a bar that day). A prediction whose target is not 1 to 14 days after
its as-of date is dead-lettered at once (reason ``implausible_target_date``, see
``miraikakaku.tracking.plausible_target``). Counters (namespace ``TrackPredictions``):
``outcomes``, ``pending`` (predictions that had to wait), ``unmatched:<reason>``,
``bad_prices``.

On bounded input the watermark reaches the end only after every element was processed, so every
prediction meets its bar whatever the arrival order; what is left at the end (the latest
predictions, whose target session is not in the data) comes out as ``no_realized_bar``. The batch
job (``miraikakaku track``) uses the same outcome and aggregation code without Beam
(``miraikakaku.tracking.match_predictions``); a pipeline test checks both agree on real bars.
"""

from __future__ import annotations

import datetime as dt
from typing import NamedTuple

import apache_beam as beam
from apache_beam.coders import PickleCoder
from apache_beam.metrics import Metrics
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import (
    BagStateSpec,
    ReadModifyWriteStateSpec,
    TimerSpec,
    on_timer,
)
from apache_beam.transforms.window import GlobalWindows
from apache_beam.utils.timestamp import Timestamp

from miraikakaku.schema import DeadLetter, Prediction, PriceEvent
from miraikakaku.tracking import (
    MAX_TARGET_GAP_DAYS,
    UNMATCHED_IMPLAUSIBLE_TARGET,
    ModelPerformance,
    PredictionOutcome,
    bar_feature_price,
    make_outcome,
    plausible_target,
    prediction_payload,
)

__all__ = ["TrackPredictions", "TrackingResult", "STEP", "DEFAULT_HORIZON_DAYS",
           "UNMATCHED_NO_REALIZED_BAR"]

STEP = "TrackPredictions"
UNMATCHED_NO_REALIZED_BAR = "no_realized_bar"
"""Dead-letter reason: the horizon passed without a bar of the target session from the
prediction's source (the latest predictions of a bounded run, a hole in the data, a halt)."""
DEFAULT_HORIZON_DAYS = 10
"""Calendar days after the end of ``target_date`` that a prediction may wait for its bar (covers
long weekends and holiday runs such as Golden Week plus some lateness)."""

_BAR = "bar"
_PRED = "pred"


class TrackingResult(NamedTuple):
    """Outputs of ``TrackPredictions``."""

    outcomes: beam.PCollection
    performance: beam.PCollection
    unmatched: beam.PCollection


class _RealizedBar(NamedTuple):
    source: str
    session_date: dt.date
    price: float
    currency: str


def _day_end(day: dt.date, horizon_days: int) -> Timestamp:
    """Event time (UTC) of the end of ``day`` plus ``horizon_days`` days."""
    end = dt.datetime.combine(day + dt.timedelta(days=1 + horizon_days), dt.time(),
                              dt.timezone.utc)
    return Timestamp.from_utc_datetime(end)


def _session_key(instrument_id: str, day: dt.date) -> str:
    return f"{instrument_id}#{day.year:04d}{day.month:02d}{day.day:02d}"


def _key_prediction(p: Prediction):
    return _session_key(p.instrument_id, p.target_date), (_PRED, p)


def _key_bar(e: PriceEvent):
    return _session_key(e.instrument_id, e.session_date), (
        _BAR, _RealizedBar(e.source, e.session_date, bar_feature_price(e), e.currency))


class _MatchFn(beam.DoFn):
    """What both matching paths share: the counters and the outcome / dead-letter records."""

    UNMATCHED = "unmatched"

    def __init__(self) -> None:
        self._outcomes = Metrics.counter(STEP, "outcomes")
        self._bad = Metrics.counter(STEP, "bad_prices")
        self._expired = Metrics.counter(STEP, f"unmatched:{UNMATCHED_NO_REALIZED_BAR}")
        self._implausible = Metrics.counter(STEP, f"unmatched:{UNMATCHED_IMPLAUSIBLE_TARGET}")

    def _emit(self, p: Prediction, bar: _RealizedBar):
        try:
            outcome = make_outcome(p, bar.price, bar.currency)
        except ValueError as e:  # a non-positive price slipped through: dead-letter, go on
            self._bad.inc()
            return [beam.pvalue.TaggedOutput(self.UNMATCHED, DeadLetter(
                STEP, "bad_price", str(e)[:500], prediction_payload(p),
                f"{p.model_name}:{p.model_version}", p.as_of_time))]
        self._outcomes.inc()
        return [outcome]

    def _no_bar(self, p: Prediction, where: str, sources) -> beam.pvalue.TaggedOutput:
        self._expired.inc()
        return beam.pvalue.TaggedOutput(self.UNMATCHED, DeadLetter(
            STEP, UNMATCHED_NO_REALIZED_BAR,
            f"no {p.source} bar of {p.instrument_id} on {p.target_date} {where} "
            f"(bars of that session from: {', '.join(sorted(sources)) or 'none'})",
            prediction_payload(p), f"{p.model_name}:{p.model_version}", p.as_of_time))

    def _reject_implausible(self, p: Prediction) -> beam.pvalue.TaggedOutput:
        self._implausible.inc()
        return beam.pvalue.TaggedOutput(self.UNMATCHED, _implausible(p))


class _TrackFn(_MatchFn):
    """Keyed by ``{instrument_id}#{YYYYMMDD}`` of the session (the target date of predictions,
    the session date of bars); elements ``(kind, Prediction | _RealizedBar)``.

    State per key: the bars of that session (one per source) and the predictions waiting for
    one of them; one event-time timer at the end of the session day plus the horizon clears
    both and dead-letters the predictions still waiting. With ``grace_seconds > 0`` that timer
    only starts a processing-time grace period and the clearing happens when it ends: a replay
    of history through Pub/Sub has a wall-clock watermark (years past the events), so the
    event-time timer fires as soon as a key is armed, before the prediction meets its bar.
    """

    PENDING = BagStateSpec("pending", PickleCoder())
    BARS = BagStateSpec("bars", PickleCoder())
    ARMED = ReadModifyWriteStateSpec("armed", PickleCoder())
    EXPIRY = TimerSpec("expiry", TimeDomain.WATERMARK)

    def __init__(self, horizon_days: int) -> None:
        super().__init__()
        self._horizon = horizon_days
        self._pending = Metrics.counter(STEP, "pending")

    def process(self, element, pending=beam.DoFn.StateParam(PENDING),
                bars=beam.DoFn.StateParam(BARS), armed=beam.DoFn.StateParam(ARMED),
                timer=beam.DoFn.TimerParam(EXPIRY)):
        yield from self._process(element, pending, bars, armed, timer)

    @on_timer(EXPIRY)
    def expire(self, pending=beam.DoFn.StateParam(PENDING), bars=beam.DoFn.StateParam(BARS),
               armed=beam.DoFn.StateParam(ARMED)):
        yield from self._clear(pending, bars, armed)

    def _process(self, element, pending, bars, armed, timer):
        _, (kind, item) = element
        if kind == _PRED and not plausible_target(item):
            yield self._reject_implausible(item)
            return
        if not armed.read():
            day = item.session_date if kind == _BAR else item.target_date
            timer.set(_day_end(day, self._horizon))
            armed.write(True)
        if kind == _BAR:
            waiting = list(pending.read())
            if waiting:
                pending.clear()
                for p in waiting:
                    if p.source == item.source:
                        yield from self._emit(p, item)
                    else:
                        pending.add(p)
            bars.add(item)
            return
        p: Prediction = item
        for bar in bars.read():
            if bar.source == p.source:
                yield from self._emit(p, bar)
                return
        pending.add(p)
        self._pending.inc()

    def _clear(self, pending, bars, armed):
        others = {b.source for b in bars.read()}
        for p in pending.read():
            yield self._no_bar(p, f"within {self._horizon} days", others)
        pending.clear()
        bars.clear()
        armed.clear()


class _TrackWithGraceFn(_TrackFn):
    """``_TrackFn`` whose event-time expiry starts a processing-time grace period; the state is
    cleared (and waiting predictions dead-lettered) when the grace period ends.

    Its own timer specs (Beam binds one callback per spec) and a separate class because the
    DirectRunner mishandles a processing-time timer on bounded input (outputs after a downstream
    GroupByKey completed), so only streaming runs get it.
    """

    GRACE_EXPIRY = TimerSpec("grace_expiry", TimeDomain.WATERMARK)
    CLEANUP = TimerSpec("cleanup", TimeDomain.REAL_TIME)

    def __init__(self, horizon_days: int, grace_seconds: float) -> None:
        super().__init__(horizon_days)
        self._grace = float(grace_seconds)

    def process(self, element, pending=beam.DoFn.StateParam(_TrackFn.PENDING),
                bars=beam.DoFn.StateParam(_TrackFn.BARS),
                armed=beam.DoFn.StateParam(_TrackFn.ARMED),
                timer=beam.DoFn.TimerParam(GRACE_EXPIRY)):
        yield from self._process(element, pending, bars, armed, timer)

    @on_timer(GRACE_EXPIRY)
    def start_grace(self, cleanup=beam.DoFn.TimerParam(CLEANUP)):
        cleanup.set(Timestamp.now() + self._grace)

    @on_timer(CLEANUP)
    def clean_up(self, pending=beam.DoFn.StateParam(_TrackFn.PENDING),
                 bars=beam.DoFn.StateParam(_TrackFn.BARS),
                 armed=beam.DoFn.StateParam(_TrackFn.ARMED)):
        yield from self._clear(pending, bars, armed)


class _MatchSessionFn(_MatchFn):
    """Bounded input: one ``GroupByKey`` group per session key, matched at once (the state and
    timers of ``_TrackFn`` give the same result on bounded input, only slower)."""

    def process(self, element):
        _, items = element
        bars: dict[str, _RealizedBar] = {}
        preds: list[Prediction] = []
        for kind, item in items:
            if kind == _BAR:
                bars.setdefault(item.source, item)
            else:
                preds.append(item)
        for p in preds:
            if not plausible_target(p):
                yield self._reject_implausible(p)
                continue
            bar = bars.get(p.source)
            if bar is None:
                yield self._no_bar(p, "in the input", bars)
                continue
            yield from self._emit(p, bar)


def _implausible(p: Prediction) -> DeadLetter:
    return DeadLetter(STEP, UNMATCHED_IMPLAUSIBLE_TARGET,
                      f"target {p.target_date} is not 1-{MAX_TARGET_GAP_DAYS} days after as-of "
                      f"{p.as_of_date}", prediction_payload(p),
                      f"{p.model_name}:{p.model_version}", p.as_of_time)


class TrackPredictions(beam.PTransform):
    """``(predictions, bars)`` → ``TrackingResult(outcomes, performance, unmatched)``.

    Input: a tuple ``(PCollection[Prediction], PCollection[PriceEvent])``; bars of intervals other
    than ``1d`` are ignored. Both are re-windowed into the global window (state must outlive
    any window the caller used). Outputs: ``PCollection[PredictionOutcome]``,
    ``PCollection[ModelPerformance]`` (one row per outcome; rows are keyed by model, version,
    instrument and target date, so writing them upserts) and ``PCollection[DeadLetter]``.

    Args:
        horizon_days: calendar days past the target day that a prediction (and a bar) stays in
            state; default ``DEFAULT_HORIZON_DAYS``.
        bounded: the inputs are bounded (a batch run): match each session's group after a
            ``GroupByKey`` instead of holding state with timers. Same outputs (at the end of
            bounded input the stateful step dead-letters whatever is left, exactly what the
            grouped match does), several times faster on the DirectRunner.
        grace_seconds: processing time a session's state outlives its event-time expiry
            (0: none). Streaming runs that may replay history need it: their watermark can be
            far ahead of the events' times (see ``_TrackFn``).

    Raises:
        ValueError: if ``horizon_days`` is negative.
    """

    def __init__(self, horizon_days: int = DEFAULT_HORIZON_DAYS, *, bounded: bool = False,
                 grace_seconds: float = 0.0) -> None:
        super().__init__()
        if horizon_days < 0:
            raise ValueError(f"horizon_days must be >= 0, got {horizon_days}")
        self._horizon = int(horizon_days)
        self._bounded = bool(bounded)
        self._grace = float(grace_seconds)

    def expand(self, inputs):
        predictions, bars = inputs
        keyed_p = (predictions | "GlobalWindowPredictions" >> beam.WindowInto(GlobalWindows())
                   | "KeyPredictions" >> beam.Map(_key_prediction))
        keyed_b = (bars | "GlobalWindowBars" >> beam.WindowInto(GlobalWindows())
                   | "SelectDailyBars" >> beam.Filter(lambda e: e.interval == "1d")
                   | "KeyBars" >> beam.Map(_key_bar))
        keyed = (keyed_p, keyed_b) | "FlattenKeyed" >> beam.Flatten()
        if self._bounded:
            tracked = (keyed | "GroupBySession" >> beam.GroupByKey()
                       | "MatchSessions" >> beam.ParDo(_MatchSessionFn()).with_outputs(
                           _TrackFn.UNMATCHED, main="outcomes"))
        else:
            fn = (_TrackWithGraceFn(self._horizon, self._grace) if self._grace > 0
                  else _TrackFn(self._horizon))
            tracked = keyed | "MatchRealizedBars" >> beam.ParDo(fn).with_outputs(
                    _TrackFn.UNMATCHED, main="outcomes")
        performance = tracked.outcomes | "ToPerformanceRows" >> beam.Map(_performance_row)
        return TrackingResult(tracked.outcomes, performance, tracked[_TrackFn.UNMATCHED])


def _performance_row(o: PredictionOutcome) -> ModelPerformance:
    return ModelPerformance.from_outcomes([o])
