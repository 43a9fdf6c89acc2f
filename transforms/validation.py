"""Validate parsed price events: block the impossible, flag the suspicious.

``ValidateEvents``: ``PCollection[PriceEvent]`` →
``ValidationResult(events: PCollection[PriceEvent], dead_letters: PCollection[DeadLetter])``.

Severities (ARCHITECTURE.md, "The stream's core"):

* **block** → dead letter with step ``ValidateEvents`` and a reason: ``non_positive_price`` (any
  of open/high/low/close/adj_close ≤ 0), ``high_below_low``, ``negative_volume``;
* **flag** → stored with the flag: ``ohlc_inconsistent`` (open or close outside [low, high], e.g.
  the CHD 2014-05-19 and LNT 2016-05-19 prints in the S&P 500 file), ``zero_volume``
  (Yahoo's phantom holiday rows, index rows). Calendar flags come from parsing; per-instrument
  flags (``large_move``, ``gap``) from the ordered feature state.

The pure function ``validate_event`` does the work. This is ``miraikakaku run --validation
basic`` (and the TFX example builder's step); the pipeline's default, ``--validation suite``, is
``quality.stream.ValidateWithSuite``: the great-expectations ``price_events`` suite
(``quality/suites.py``) on micro-batches, with the same block reasons and flags for these rules,
plus the suite's other row-level rules (``missing_field``, ``bad_number``, ``extreme_range``),
per-instrument counters and ``quality_results`` rows.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import apache_beam as beam

from miraikakaku.schema import DeadLetter, PriceEvent
from transforms import progress

__all__ = ["BlockedEvent", "ValidateEvents", "ValidationResult", "validate_event", "STEP"]

STEP = "ValidateEvents"


class BlockedEvent(ValueError):
    """An event that must not be stored. Attributes: ``reason``, ``detail``."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def validate_event(event: PriceEvent) -> PriceEvent:
    """Return ``event`` with quality flags added, or raise for a blocking problem.

    Raises:
        BlockedEvent: ``non_positive_price``, ``high_below_low`` or ``negative_volume``.
    """
    for name in ("open", "high", "low", "close", "adj_close"):
        value = getattr(event, name)
        if value is not None and value <= 0:
            raise BlockedEvent("non_positive_price", f"{name} = {value}")
    if event.high < event.low:
        raise BlockedEvent("high_below_low", f"high {event.high} < low {event.low}")
    if event.volume is not None and event.volume < 0:
        raise BlockedEvent("negative_volume", f"volume = {event.volume}")
    flags = list(event.flags)
    if not (event.low <= event.open <= event.high and event.low <= event.close <= event.high):
        flags.append("ohlc_inconsistent")
    if event.volume == 0:
        flags.append("zero_volume")
    if len(flags) == len(event.flags):
        return event
    return dataclasses.replace(event, flags=tuple(flags))


class ValidationResult(NamedTuple):
    """Outputs of ``ValidateEvents``."""

    events: beam.PCollection
    dead_letters: beam.PCollection


class _ValidateEventFn(beam.DoFn):
    DEAD_LETTER = "dead_letter"

    def __init__(self) -> None:
        self._blocked = progress.counter("ValidateEvents", "blocked")
        self._flagged = progress.counter("ValidateEvents", "flagged")

    def process(self, event: PriceEvent):
        try:
            out = validate_event(event)
        except BlockedEvent as e:
            self._blocked.inc()
            yield beam.pvalue.TaggedOutput(
                self.DEAD_LETTER,
                DeadLetter.of_event(STEP, e.reason, e.detail, event))
            return
        if out.flags:
            self._flagged.inc()
        yield out


class ValidateEvents(beam.PTransform):
    """``PCollection[PriceEvent]`` → ``ValidationResult(events, dead_letters)``."""

    def expand(self, pcoll: beam.PCollection) -> ValidationResult:
        out = pcoll | "Validate" >> beam.ParDo(_ValidateEventFn()).with_outputs(
            _ValidateEventFn.DEAD_LETTER, main="events")
        return ValidationResult(out.events, out[_ValidateEventFn.DEAD_LETTER])
