"""In-stream data quality: Great Expectations validation of micro-batches inside a DoFn.

``ValidateWithSuite``: ``PCollection[PriceEvent]`` → ``SuiteValidationResult(events:
PCollection[PriceEvent], dead_letters: PCollection[DeadLetter], results:
PCollection[QualityResult])``.

How it runs (bounded files and the unbounded Pub/Sub stream alike):

1. ``KeepTimestamps``: each event is paired with its element timestamp, so the events leave the
   step with the timestamps (and windows) they came with, as
   ``transforms.validation.ValidateEvents`` leaves them (``BatchElements`` emits its
   global-window batches at the end of the window).
2. ``BatchEvents``: ``beam.BatchElements`` of fixed size ``batch_size`` (20000): stateless,
   keeps windows, batches within a bundle; a bounded DirectRunner run is a few large bundles, so
   batches are full. Measured against ``GroupIntoBatches`` per instrument group (exchange MIC +
   hash bucket; bag state and timers, so batches span bundles): in a stream of 10-element
   bundles (TestStream, 600 events) ``BatchElements`` made 60 GX calls in 26.7 s and
   ``GroupIntoBatches`` 1 call in 3.9 s, but its timers hold no watermark, so the re-stamped
   events of a buffered batch can come out behind the watermark (later than the trades' allowed
   lateness downstream); and on bounded input on the DirectRunner its end-of-window flush
   reaches downstream GroupByKeys after they completed (AssertionError in the bundle-based
   runner, lost outputs under TestPipeline). So: ``BatchElements``, and ``miraikakaku run
   --subscription`` on the DirectRunner (a bundle per Pub/Sub pull, often a few messages) keeps
   ``--validation basic`` unless told otherwise. The GX result does not depend on the
   batching: every in-stream rule is row-level (below).
3. ``ValidateBatches`` (``_ValidateBatchFn``): one ``quality.validate.validate_frame`` call per
   batch (one GX validation of the suite on the batch's frame; the GX context, suite and batch
   definition are reused per process by ``quality.validate``). Per row:

   * a **block** failure → ``DeadLetter(step="ValidateEvents", reason=<rule name>, detail=<the
     GX expectation type, its kwargs and the row's observed values>, payload=event JSON,
     origin=event.source, event_time)``; with several block failures the reason is the first in
     the suite's rule order (``missing_field``, ``non_positive_price``, ``high_below_low``,
     ``negative_volume``: the order ``validate_event`` checks in) and the detail names them all;
   * else the **flag** rules that failed are appended to ``event.flags`` (suite order, each once).

   Counters (``transforms.progress``: Beam metrics + the local mirror): namespace
   ``ValidateEvents``: ``blocked``, ``flagged`` (as ``ValidateEvents`` counts them),
   ``evaluated``, ``batches``, ``failed:<rule>``; per instrument, namespace
   ``ValidateEvents:<instrument_id>``: ``evaluated``, ``blocked``, ``flagged`` — 3 counters per
   instrument (~1,500 for the 505 instruments of the default inputs); the per-rule breakdown per
   instrument goes to the quality-results table, not to counters, to keep metric cardinality
   bounded on Dataflow.
4. Tallies → ``QualityResult`` rows: per batch the DoFn sums, per (instrument, quality window),
   rows evaluated and failures per rule, and emits one tally timestamped at the latest event time
   it covers; ``WindowTallies`` assigns ``FixedWindows(window_seconds, offset)`` on event time,
   ``SumTallies`` (``CombinePerKey``) adds them per instrument and window, ``ToQualityResults``
   writes one row per window × instrument × rule (``evaluated``, ``failed``), then the rows are
   re-windowed into the global window (they are flattened with the other records). In a stream a
   window's rows come when the watermark passes its end; tallies later than
   ``allowed_lateness_seconds`` are dropped by Beam (the events themselves are not affected).

Which rules run in the stream (``stream_rules``): the suite's rules that judge a row on its
own (``missing_field``, ``bad_number``, ``non_positive_price``, ``high_below_low``,
``negative_volume``, ``ohlc_inconsistent``, ``extreme_range``, ``zero_volume`` in today's
``price_events`` suite) less ``outside_session`` (``NOT_IN_STREAM``). Rules over several rows of
an instrument (``time_not_increasing``, ``duplicate_key``, ``large_move``, ``gap``,
``intraday_gap``) are left to the ordered per-instrument state (``transforms.ordering``) and
to ``DeduplicateEvents``: in a micro-batch they would see an arbitrary slice of an out-of-order
stream.

``evaluated`` in a quality-results row = the instrument's rows in that window that reached the
rule (every in-stream rule sees every row; GX skips NULLs in value-range expectations, which the
``missing_field`` rule blocks). Validation runs before de-duplication (as today's
``ValidateEvents`` does), so a redelivered message is evaluated twice.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import apache_beam as beam
from apache_beam.transforms import window as beam_window
from apache_beam.utils.timestamp import Timestamp

from miraikakaku.schema import DeadLetter, PriceEvent, utc
from transforms import progress
from transforms.validation import STEP

__all__ = [
    "QUALITY_RESULTS_TABLE",
    "MULTI_ROW_RULES",
    "QualityResult",
    "SuiteValidationResult",
    "ValidateWithSuite",
    "stream_rules",
    "window_bounds",
]

QUALITY_RESULTS_TABLE = "quality_results"
"""The BigQuery / analytics table of ``QualityResult`` rows (``stores.bigquery.TABLE_SPECS``)."""

MULTI_ROW_RULES = frozenset({"time_not_increasing", "duplicate_key", "large_move", "gap",
                             "intraday_gap"})
"""Rules that judge a row against other rows of its instrument: not run in micro-batches."""

NOT_IN_STREAM = frozenset({"outside_session"})
"""Row-level rules left out by default: ``outside_session`` because parsing already flags daily
bars off the calendar (``not_a_session``, ``miraikakaku.calendars``) and a stream's pre- and
after-market trades are real trades outside the regular session (a calendar lookup per trade to
flag all of them would be noise); ``miraikakaku quality`` runs it in batch."""

DAY = 86_400
MONDAY_OFFSET = 4 * DAY
"""1970-01-01 was a Thursday: weekly windows with this offset start on Monday 00:00 UTC."""


@dataclasses.dataclass(frozen=True)
class QualityResult:
    """One rule's outcome on one instrument's events in one quality window.

    Attributes:
        window_start: window start, UTC (inclusive).
        window_end: window end, UTC (exclusive).
        instrument_id: exchange-qualified id (``XNAS:AAPL``).
        suite: the suite name (``price_events``).
        rule: the rule name (``high_below_low``), the dead-letter reason / flag it gives.
        severity: ``block`` or ``flag``.
        evaluated: rows of the instrument in the window the rule evaluated.
        failed: rows among them that failed the rule.
        run_id: the pipeline run (Dataflow job name, or ``local-<UTC start>``).
        validated_at: when the row was made (processing time, UTC).
        pane_index: Beam pane of the window (0 on time; late panes count only the late rows).
    """

    window_start: dt.datetime
    window_end: dt.datetime
    instrument_id: str
    suite: str
    rule: str
    severity: str
    evaluated: int
    failed: int
    run_id: str
    validated_at: dt.datetime
    pane_index: int = 0

    @property
    def insert_id(self) -> str:
        """Deterministic row id: suite/rule/instrument/window/pane. A replay of the same input
        gives the same ids (the analytics SQL keeps one row per id); the run id is a column."""
        return (f"{self.suite}/{self.rule}/{self.instrument_id}/"
                f"{self.window_start:%Y%m%dT%H%M%S}-{self.window_end:%Y%m%dT%H%M%S}/"
                f"p{self.pane_index}")


class SuiteValidationResult(NamedTuple):
    """Outputs of ``ValidateWithSuite``."""

    events: beam.PCollection
    dead_letters: beam.PCollection
    results: beam.PCollection


def window_bounds(event_time: dt.datetime, size: int, offset: int = 0
                  ) -> tuple[dt.datetime, dt.datetime]:
    """The ``FixedWindows(size, offset)`` window of an event time, as UTC datetimes."""
    ts = utc(event_time).timestamp()
    start = math.floor((ts - offset) / size) * size + offset
    return (dt.datetime.fromtimestamp(start, dt.timezone.utc),
            dt.datetime.fromtimestamp(start + size, dt.timezone.utc))


def stream_rules(suite: Any, names: Sequence[str] | None = None) -> tuple[Any, ...]:
    """The rules of ``suite`` that run in micro-batches (see the module docstring).

    Args:
        suite: a ``quality.suites.QualitySuite``.
        names: rule names to run; default: every rule less ``MULTI_ROW_RULES`` and
            ``NOT_IN_STREAM``.

    Returns:
        The rules (``quality.suites.Rule``), in suite order. Their columns are those of
        ``quality.validate.events_to_frame`` or row-level columns ``validate_frame`` derives
        (``add_row_columns``); ``_ValidateBatchFn`` checks on its first batch that GX
        evaluated every one of them.

    Raises:
        KeyError: a name that is not a rule of the suite.
        ValueError: a named rule that needs other rows of its instrument (``MULTI_ROW_RULES``).
    """
    if names is None:
        return tuple(r for r in suite.rules
                     if r.name not in MULTI_ROW_RULES and r.name not in NOT_IN_STREAM)
    chosen = suite.select(list(names))
    bad = {r.name for r in chosen if r.name in MULTI_ROW_RULES}
    if bad:
        raise ValueError(f"rules that cannot run on a micro-batch: {sorted(bad)}")
    return chosen


_NUMBER_FIELDS = ("open", "high", "low", "close", "volume", "adj_close")


def _numeric_view(event: PriceEvent) -> tuple[PriceEvent, str]:
    """``(event for the frame, problem)``: null prices as NaN; problem names a non-number."""
    changes = {}
    for name in _NUMBER_FIELDS:
        value = getattr(event, name)
        if value is None:
            if name in ("open", "high", "low", "close"):
                changes[name] = math.nan
        elif isinstance(value, bool) or not isinstance(value, (int, float)):
            return event, f"{name} = {value!r} is not a number"
    return (dataclasses.replace(event, **changes) if changes else event), ""


def _describe(rules: Sequence[Any], event: PriceEvent) -> str:
    """``type(kwargs): column=value, ...`` for each expectation of the failed rules."""
    parts = []
    for rule in rules:
        exp = rule.expectation
        kwargs = {k: v for k, v in exp.configuration.kwargs.items() if k != "result_format"}
        args = ", ".join(f"{k}={v}" for k, v in kwargs.items())
        observed = ", ".join(f"{c}={getattr(event, c, None)}" for c in rule.columns)
        parts.append(f"{rule.name}: {exp.expectation_type}({args}) observed {observed}")
    return "; ".join(parts)


# Tally: (instrument_id, (evaluated, (failed per rule...)))
def _add_tallies(a: tuple[int, tuple[int, ...]], b: tuple[int, tuple[int, ...]]
                 ) -> tuple[int, tuple[int, ...]]:
    return a[0] + b[0], tuple(x + y for x, y in zip(a[1], b[1], strict=True))


class _SumTalliesFn(beam.CombineFn):
    def create_accumulator(self):
        return None

    def add_input(self, acc, value):
        return value if acc is None else _add_tallies(acc, value)

    def merge_accumulators(self, accs):
        out = None
        for a in accs:
            if a is not None:
                out = a if out is None else _add_tallies(out, a)
        return out

    def extract_output(self, acc):
        return acc


class _ValidateBatchFn(beam.DoFn):
    """``list[(PriceEvent, Timestamp)]`` → events (main), dead letters, tallies (tagged)."""

    DEAD_LETTER = "dead_letter"
    TALLIES = "tallies"

    def __init__(self, suite: str, window_seconds: int, window_offset: int,
                 rules: Sequence[str] | None) -> None:
        self._suite_name = suite
        self._rule_filter = None if rules is None else tuple(rules)
        self._size = window_seconds
        self._offset = window_offset
        self._blocked = progress.counter(STEP, "blocked")
        self._flagged = progress.counter(STEP, "flagged")
        self._evaluated = progress.counter(STEP, "evaluated")
        self._batches = progress.counter(STEP, "batches")
        self._per_instrument: dict[tuple[str, str], Any] = {}
        self._per_rule: dict[str, Any] = {}

    def setup(self) -> None:
        from quality import suites, validate

        self._validate = validate
        suite = suites.get_suite(self._suite_name)
        self._rules = stream_rules(suite, self._rule_filter)
        if not self._rules:
            raise ValueError(f"suite {self._suite_name!r} has no row-level rule to run in-stream")
        self._by_name: dict[str, list[Any]] = {}
        for r in self._rules:
            self._by_name.setdefault(r.name, []).append(r)
        self._rule_names = tuple(self._by_name)
        self._validate_frame = validate.validate_frame
        self._checked = False
        self._severity = {n: rs[0].severity for n, rs in self._by_name.items()}
        self._index = {n: i for i, n in enumerate(self._rule_names)}

    def _count(self, instrument_id: str, name: str, n: int = 1) -> None:
        key = (instrument_id, name)
        c = self._per_instrument.get(key)
        if c is None:
            c = self._per_instrument[key] = progress.counter(f"{STEP}:{instrument_id}", name)
        c.inc(n)

    def _rule_counter(self, rule: str, n: int) -> None:
        c = self._per_rule.get(rule)
        if c is None:
            c = self._per_rule[rule] = progress.counter(STEP, f"failed:{rule}")
        c.inc(n)

    def process(self, batch: list[tuple[PriceEvent, Timestamp]]):
        # A Pub/Sub message can carry null or non-numeric prices (PriceEvent.from_json does
        # not check types): null → NaN in the frame (GX's not-null rule: missing_field);
        # anything else that is not a number is blocked here as bad_number, the suite's name.
        clean: list[tuple[PriceEvent, Timestamp, PriceEvent]] = []
        for event, ts in batch:
            fixed, bad = _numeric_view(event)
            if bad:
                self._blocked.inc()
                self._count(event.instrument_id, "blocked")
                yield beam.pvalue.TaggedOutput(self.DEAD_LETTER, beam_window.TimestampedValue(
                    DeadLetter.of_event(STEP, "bad_number", bad, event), ts))
                continue
            clean.append((event, ts, fixed))
        if not clean:
            return
        batch = [(e, ts) for e, ts, _ in clean]
        frame = self._validate.events_to_frame([f for _, _, f in clean])
        if "outside_session" not in self._index:
            # not run: skip validate_frame's calendar lookups for the in_session column
            frame["in_session"] = True
        outcome = self._validate_frame(frame, self._suite_name, rules=self._rule_names)
        if not self._checked:
            missing = set(self._rule_names) - set(outcome.per_rule)
            if missing:
                raise ValueError(f"GX did not evaluate the in-stream rules {sorted(missing)}: "
                                 "their columns are not in the micro-batch frame")
            self._checked = True
        self._batches.inc()
        self._evaluated.inc(len(batch))
        n_rules = len(self._rule_names)
        # (instrument, window start) -> [evaluated, failed per rule, latest event time]
        tallies: dict[tuple[str, float], list] = {}
        per_inst: dict[str, list[int]] = {}  # instrument -> [evaluated, blocked, flagged]
        rule_totals = [0] * n_rules
        for pos, (event, ts) in enumerate(batch):
            failures = outcome.row_failures.get(pos, ())
            t = utc(event.event_time).timestamp()
            start = math.floor((t - self._offset) / self._size) * self._size + self._offset
            tally = tallies.get((event.instrument_id, start))
            if tally is None:
                tally = tallies[(event.instrument_id, start)] = [0, [0] * n_rules, t]
            tally[0] += 1
            tally[2] = max(tally[2], t)
            inst = per_inst.setdefault(event.instrument_id, [0, 0, 0])
            inst[0] += 1
            failed_names = []
            for name, _severity in failures:
                i = self._index.get(name)
                if i is not None and name not in failed_names:
                    failed_names.append(name)
                    tally[1][i] += 1
                    rule_totals[i] += 1
            blocks = [n for n in self._rule_names
                      if n in failed_names and self._severity[n] == "block"]
            if blocks:
                inst[1] += 1
                self._blocked.inc()
                detail = _describe([r for n in blocks for r in self._by_name[n]], event)
                yield beam.pvalue.TaggedOutput(self.DEAD_LETTER, beam_window.TimestampedValue(
                    DeadLetter.of_event(STEP, blocks[0], detail, event), ts))
                continue
            new = tuple(n for n in self._rule_names
                        if n in failed_names and n not in event.flags)
            if new:
                event = dataclasses.replace(event, flags=event.flags + new)
            if event.flags:
                inst[2] += 1
                self._flagged.inc()
            yield beam_window.TimestampedValue(event, ts)
        for i, n in enumerate(rule_totals):
            if n:
                self._rule_counter(self._rule_names[i], n)
        for instrument_id, (evaluated, blocked, flagged) in per_inst.items():
            self._count(instrument_id, "evaluated", evaluated)
            if blocked:
                self._count(instrument_id, "blocked", blocked)
            if flagged:
                self._count(instrument_id, "flagged", flagged)
        for (instrument_id, _start), (evaluated, failed, latest) in tallies.items():
            yield beam.pvalue.TaggedOutput(self.TALLIES, beam_window.TimestampedValue(
                (instrument_id, (evaluated, tuple(failed))), latest))


class _ToQualityResultsFn(beam.DoFn):
    """``(instrument, (evaluated, failed per rule))`` per window → ``QualityResult`` rows."""

    def __init__(self, suite: str, run_id: str, rules: Sequence[str] | None) -> None:
        self._suite_name = suite
        self._run_id = run_id
        self._rule_filter = None if rules is None else tuple(rules)

    def setup(self) -> None:
        from quality import suites

        rules = stream_rules(suites.get_suite(self._suite_name), self._rule_filter)
        names: dict[str, str] = {}
        for r in rules:
            names.setdefault(r.name, r.severity)
        self._rules = tuple(names.items())

    def process(self, element, window=beam.DoFn.WindowParam, pane=beam.DoFn.PaneInfoParam):
        instrument_id, (evaluated, failed) = element
        start = window.start.to_utc_datetime(has_tz=True)
        end = window.end.to_utc_datetime(has_tz=True)
        now = dt.datetime.now(dt.timezone.utc)
        pane_index = pane.index if pane is not None else 0
        for (rule, severity), n in zip(self._rules, failed, strict=True):
            yield QualityResult(start, end, instrument_id, self._suite_name, rule, severity,
                                int(evaluated), int(n), self._run_id, now, pane_index)


def _with_timestamp(event, ts=beam.DoFn.TimestampParam):
    return event, ts


class ValidateWithSuite(beam.PTransform):
    """Validate price events with a GX suite in micro-batches (see the module docstring).

    ``PCollection[PriceEvent]`` → ``SuiteValidationResult(events: PCollection[PriceEvent],
    dead_letters: PCollection[DeadLetter], results: PCollection[QualityResult])``; events keep
    their timestamps and windows, results are in the global window.

    Args:
        suite: the ``quality.suites.SUITES`` key (``price_events``).
        run_id: written to every quality-results row.
        window_seconds: quality window size in event time (default 2,419,200: 4 weeks; the
            pipeline uses 3,600 for a stream). Rows are dense (every rule, every instrument
            with events in the window), so the size sets their number: ~8 rules / ~20 daily
            bars = 0.4 rows per daily bar with 4 weeks, 1.6 with 1 week.
        window_offset: window offset in seconds (default: whole weeks start Monday 00:00 UTC;
            0 for other sizes).
        batch_size: rows per GX validation call (``BatchElements`` min = max = this). A call
            costs ~0.1-1 s whatever its size (GX builds the metric graph per expectation), so
            large batches amortize it (benchmarks/quality_validation.py).
        allowed_lateness_seconds: how late a tally may arrive and still count in its window.
        rules: rule names to run (default: ``stream_rules``' choice).

    Raises:
        ValueError: a non-positive size, or (at setup) a suite without row-level rules.
    """

    def __init__(self, suite: str = "price_events", *, run_id: str = "local",
                 window_seconds: int = 28 * DAY, window_offset: int | None = None,
                 batch_size: int = 20_000,
                 allowed_lateness_seconds: float = 0.0,
                 rules: Sequence[str] | None = None) -> None:
        super().__init__()
        if window_seconds <= 0 or batch_size <= 0:
            raise ValueError("window_seconds and batch_size must be positive")
        self._suite = suite
        self._run_id = run_id
        self._size = int(window_seconds)
        if window_offset is None:
            window_offset = MONDAY_OFFSET if self._size % (7 * DAY) == 0 else 0
        self._offset = int(window_offset) % self._size
        self._batch_size = batch_size
        self._lateness = allowed_lateness_seconds
        self._rules = None if rules is None else tuple(rules)

    def expand(self, events) -> SuiteValidationResult:
        stamped = events | "KeepTimestamps" >> beam.Map(_with_timestamp)
        batches = stamped | "BatchEvents" >> beam.BatchElements(
            min_batch_size=self._batch_size, max_batch_size=self._batch_size)
        out = batches | "ValidateBatches" >> beam.ParDo(
            _ValidateBatchFn(self._suite, self._size, self._offset, self._rules)).with_outputs(
            _ValidateBatchFn.DEAD_LETTER, _ValidateBatchFn.TALLIES, main="events")
        results = (out[_ValidateBatchFn.TALLIES]
                   | "WindowTallies" >> beam.WindowInto(
                       beam_window.FixedWindows(self._size, self._offset),
                       allowed_lateness=self._lateness)
                   | "SumTallies" >> beam.CombinePerKey(_SumTalliesFn())
                   | "ToQualityResults" >> beam.ParDo(
                       _ToQualityResultsFn(self._suite, self._run_id, self._rules))
                   | "GlobalWindowResults" >> beam.WindowInto(beam_window.GlobalWindows()))
        return SuiteValidationResult(out.events, out[_ValidateBatchFn.DEAD_LETTER], results)
