"""Deduplicate price events by ``event_id``, counting what was dropped.

``DeduplicateEvents``: ``PCollection[PriceEvent]`` → ``PCollection[PriceEvent]`` (one per
``event_id``). Dropped duplicates are counted (Beam counter ``DeduplicateEvents/duplicates``), so
``read = stored + dead-lettered + duplicates`` reconciles.

* Bounded input: group by ``event_id`` and keep one. When duplicates differ in content (two rows
  for the same source, instrument and session with different prices) the one whose JSON sorts
  first is kept, deterministically, and ``conflicting_duplicates`` is counted as well.
* Unbounded input: Beam's ``DeduplicatePerKey`` keeps each id for ``horizon_seconds`` and then
  drops its state; repeats after the horizon are absorbed by the idempotent sinks (row keys and
  insert ids are the event's). The horizon is measured in processing time, not event time:
  for live data the two agree, but a replay of history (event times years back) on a runner
  whose watermark is the wall clock (the Python DirectRunner's Pub/Sub source) would expire
  event-time state at once and deduplicate nothing; processing time bounds the state the same
  way on every runner.
"""

from __future__ import annotations

import typing

import apache_beam as beam
from apache_beam.transforms.deduplicate import DeduplicatePerKey
from apache_beam.utils.timestamp import Duration

from miraikakaku.schema import PriceEvent
from transforms import progress

__all__ = ["DeduplicateEvents"]


class _KeepOneFn(beam.DoFn):
    def __init__(self) -> None:
        self._dups = progress.counter("DeduplicateEvents", "duplicates")
        self._conflicts = progress.counter("DeduplicateEvents", "conflicting_duplicates")

    def process(self, element: tuple[str, list[PriceEvent]]):
        _, events = element
        events = list(events)
        if len(events) == 1:
            yield events[0]
            return
        self._dups.inc(len(events) - 1)
        payloads = sorted((e.to_json(), i) for i, e in enumerate(events))
        if payloads[0][0] != payloads[-1][0]:
            self._conflicts.inc()
        yield events[payloads[0][1]]


class _CountFn(beam.DoFn):
    def __init__(self, name: str) -> None:
        self._counter = progress.counter("DeduplicateEvents", name)

    def process(self, element):
        self._counter.inc()
        yield element


class DeduplicateEvents(beam.PTransform):
    """``PCollection[PriceEvent]`` → ``PCollection[PriceEvent]``, unique by ``event_id``.

    Args:
        bounded: True for bounded input (group and keep one); False for streaming.
        horizon_seconds: streaming only: how long (event time) an id is remembered.
    """

    def __init__(self, bounded: bool = True, horizon_seconds: int = 3 * 24 * 3600) -> None:
        super().__init__()
        self._bounded = bounded
        self._horizon = horizon_seconds

    def expand(self, events):
        keyed = events | "KeyByEventId" >> beam.Map(lambda e: (e.event_id, e)).with_output_types(
            beam.typehints.Tuple[str, typing.Any])
        if self._bounded:
            return (keyed | "GroupByEventId" >> beam.GroupByKey()
                    | "KeepOne" >> beam.ParDo(_KeepOneFn()))
        counted_in = keyed | "CountIn" >> beam.ParDo(_CountFn("streaming_in"))
        return (counted_in
                | "DeduplicatePerKey" >> DeduplicatePerKey(
                    processing_time_duration=Duration(seconds=self._horizon))
                | "CountOut" >> beam.ParDo(_CountFn("streaming_out"))
                | "DropKey" >> beam.Values())
