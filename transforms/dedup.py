"""Deduplicate price events by ``event_id``, counting what was dropped.

``DeduplicateEvents``: ``PCollection[PriceEvent]`` → ``DeduplicationResult(events, revisions)``
(one event per ``event_id``; superseded revisions). Dropped duplicates are counted (Beam
counter ``DeduplicateEvents/duplicates``), so ``read = stored + dead-lettered + duplicates``
reconciles.

* Bounded input: group by ``event_id`` and keep one. When duplicates differ in content (two rows
  for the same source, instrument and session with different prices: a correction) the latest
  revision wins (``miraikakaku.schema.revision_key``: the later input file, then the later line
  or row), the others leave as ``SupersededRevision`` records (output ``revisions``: the
  serving store keeps them as history) and are counted in ``conflicting_duplicates`` as well
  as ``duplicates``.
* Unbounded input: events are keyed by (instrument, event-time minute) and a stateful DoFn keeps
  the kept revision of each event id seen in that bucket (duplicates share instrument and event
  time, so they meet in one bucket). An exact repeat is dropped (counted in ``duplicates``; its
  Pub/Sub message is settled at once, ``transforms.pubsub_ack``); a repeat with other content
  is a correction, decided by the same policy: the later revision (the later publish time, then
  message id) goes on whichever arrived first, the other leaves as a ``SupersededRevision``
  (counted in ``conflicting_duplicates`` and ``duplicates``; when the later revision arrives
  second it rewrites the stored bar, counted in ``rewrites``). Each bucket's state is dropped
  ``horizon_seconds`` after its first event (processing time); later repeats are absorbed by
  the idempotent sinks (row keys and insert ids are the event's).

  Why not Beam's ``DeduplicatePerKey``: it keys by event id and sets one timer per message. The
  Python DirectRunner scans every key's timers on each firing round, so a 20,000-message burst
  became quadratic (``extract_transform_timers`` dominated the profile); buckets cut the keys
  and timers to one per instrument-minute. Its event-time variant also expires at once on a
  runner whose watermark is the wall clock (the DirectRunner's Pub/Sub source) when history is
  replayed, so the horizon is measured in processing time, which for live data is the same.
"""

from __future__ import annotations

import typing

import apache_beam as beam
from apache_beam.coders import PickleCoder
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.utils.timestamp import Timestamp

from miraikakaku.schema import PriceEvent, SupersededRevision, revision_key
from transforms import progress, pubsub_ack

__all__ = ["DeduplicateEvents", "DeduplicationResult"]


class _KeepOneFn(beam.DoFn):
    REVISIONS = "revisions"

    def __init__(self, origin_order: dict[str, int] | None = None) -> None:
        self._order = dict(origin_order or {})
        self._dups = progress.counter("DeduplicateEvents", "duplicates")
        self._conflicts = progress.counter("DeduplicateEvents", "conflicting_duplicates")

    def process(self, element: tuple[str, list[PriceEvent]]):
        _, events = element
        events = sorted(events, key=lambda e: revision_key(e, self._order))
        if len(events) == 1:
            yield events[0]
            return
        self._dups.inc(len(events) - 1)
        winner = events[-1]
        by = _where(winner)
        payload = winner.to_json()
        for loser in events[:-1]:
            if loser.to_json() != payload:
                self._conflicts.inc()
                yield beam.pvalue.TaggedOutput(self.REVISIONS, SupersededRevision(loser, by))
        yield winner


class _DeduplicateInBucketFn(beam.DoFn):
    """Per (instrument, event-time minute) bucket: the kept revision of each event id.

    An exact repeat (a redelivery, the collector's retry) is dropped and counted; a repeat with
    other content is a correction: the later revision (``revision_key``: publish time, then
    message id) is kept and goes on, the other leaves as a ``SupersededRevision`` — whichever
    arrived first — so the stored value does not depend on arrival order.
    """

    SEEN = ReadModifyWriteStateSpec("seen", PickleCoder())
    EXPIRY = TimerSpec("expiry", TimeDomain.REAL_TIME)
    REVISIONS = _KeepOneFn.REVISIONS

    def __init__(self, horizon_seconds: float) -> None:
        self._horizon = horizon_seconds
        self._dups = progress.counter("DeduplicateEvents", "duplicates")
        self._conflicts = progress.counter("DeduplicateEvents", "conflicting_duplicates")
        self._rewrites = progress.counter("DeduplicateEvents", "rewrites")

    def process(self, element, seen=beam.DoFn.StateParam(SEEN),
                expiry=beam.DoFn.TimerParam(EXPIRY)):
        _, event = element
        kept = seen.read()
        if kept is None:
            kept = {}
            expiry.set(Timestamp.now() + self._horizon)
        old = kept.get(event.event_id)
        if old is None:
            kept[event.event_id] = event
            seen.write(kept)
            yield event
            return
        self._dups.inc()
        if old == event:  # same content (provenance is not compared): a repeat
            if revision_key(event) > revision_key(old):  # it is the latest revision so far
                kept[event.event_id] = event
                seen.write(kept)
            pubsub_ack.settle((event,))
            return
        self._conflicts.inc()
        if revision_key(event) > revision_key(old):
            kept[event.event_id] = event
            seen.write(kept)
            yield beam.pvalue.TaggedOutput(self.REVISIONS, SupersededRevision(old, _where(event)))
            self._rewrites.inc()  # the stored bar is written again: one row, not two
            yield event
        else:
            yield beam.pvalue.TaggedOutput(self.REVISIONS, SupersededRevision(event, _where(old)))

    @on_timer(EXPIRY)
    def expire(self, seen=beam.DoFn.StateParam(SEEN)):
        seen.clear()


def _where(event: PriceEvent) -> str:
    """``{origin} {position}`` of an event: ``SupersededRevision.superseded_by``."""
    return " ".join(p for p in event.provenance[:2] if p)


class DeduplicateEvents(beam.PTransform):
    """``PCollection[PriceEvent]`` → ``DeduplicationResult(events, revisions)``: events unique
    by ``event_id``; ``SupersededRevision`` records of corrected events.

    Args:
        bounded: True for bounded input (group and keep one); False for streaming.
        horizon_seconds: streaming only: how long (processing time) a bucket of ids is kept.
        origin_order: bounded only: input origin → its index in the run's inputs (the
            correction policy's file order).
    """

    def __init__(self, bounded: bool = True, horizon_seconds: int = 3 * 24 * 3600,
                 origin_order: dict[str, int] | None = None) -> None:
        super().__init__()
        self._bounded = bounded
        self._horizon = horizon_seconds
        self._order = dict(origin_order or {})

    def expand(self, events):
        if self._bounded:
            out = (events
                   | "KeyByEventId" >> beam.Map(lambda e: (e.event_id, e))
                   | "GroupByEventId" >> beam.GroupByKey()
                   | "KeepOne" >> beam.ParDo(_KeepOneFn(self._order)).with_outputs(
                       _KeepOneFn.REVISIONS, main="events"))
            return DeduplicationResult(out.events, out[_KeepOneFn.REVISIONS])
        unique = (events
                  | "KeyByInstrumentMinute" >> beam.Map(
                      lambda e: (f"{e.instrument_id}|{e.event_time:%Y%m%dT%H%M}", e)
                  ).with_output_types(beam.typehints.Tuple[str, typing.Any])
                  | "DeduplicateInBucket" >> beam.ParDo(
                      _DeduplicateInBucketFn(self._horizon)).with_outputs(
                      _DeduplicateInBucketFn.REVISIONS, main="events"))
        return DeduplicationResult(unique.events, unique[_DeduplicateInBucketFn.REVISIONS])


class DeduplicationResult(typing.NamedTuple):
    """Outputs of ``DeduplicateEvents``: one event per id, and the superseded revisions."""

    events: beam.PCollection
    revisions: beam.PCollection
