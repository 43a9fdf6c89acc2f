"""Parse Pub/Sub messages into ``PriceEvent``s, dead-lettering what cannot be read.

``ParseMessages``: ``PCollection[PubsubMessage]`` (``ReadFromPubSub(with_attributes=True)``) →
``ParseResult(events: PCollection[PriceEvent], dead_letters: PCollection[DeadLetter])``.

Operations metrics (Beam, namespace ``Freshness``): ``event_lag_ms`` (a distribution of
processing time minus event time: the watermark lag of a live stream) and
``last_event_ms[<instrument>]`` (a gauge of each instrument's newest event time: freshness).
The dead-letter rate is ``ParseEvents/parse_errors`` (plus ``WriteToServingStore/dead_letter:*``)
over ``ParseEvents/events_read``; alert thresholds on these belong in Cloud Monitoring.

The message data is the ``PriceEvent.to_json()`` wire format the collector publishes; the
attributes (``CHECKED_ATTRIBUTES``: ``event_id``, ``symbol``, ``instrument_id``, ``interval``,
``source``, ``event_time``, ``schema_version``) are checked against it, and the payload's fields
follow the same grammar as a file's (``miraikakaku.grammar``). Dead-letter reasons:
``bad_encoding`` (not UTF-8), ``bad_json`` (not a PriceEvent: malformed JSON, missing fields, an
unknown schema version), the grammar's reasons (``bad_number`` for NaN, Infinity or a string
price, ``bad_sequence``, ``future_timestamp``, ...), ``bad_attribute`` and
``attribute_mismatch`` (an attribute contradicts the payload), ``unparseable`` (anything else).
The dead letter keeps the raw data and the attributes, so ``miraikakaku deadletters replay`` can
redrive a fixed message with its original attributes.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import time

import apache_beam as beam
from apache_beam.metrics import Metrics

from miraikakaku import grammar
from miraikakaku.grammar import EventLimits, FieldError
from miraikakaku.schema import SCHEMA_VERSION, DeadLetter, PriceEvent
from transforms import progress
from transforms.parsing import ParseResult

__all__ = ["ParseMessages", "message_payload", "parse_message", "STEP"]

STEP = "ParseMessages"


def message_payload(data: bytes, attributes: dict[str, str]) -> str:
    """The dead-letter payload of a message: JSON with the data (text) and the attributes."""
    return json.dumps({"data": data.decode("utf-8", errors="replace"),
                       "attributes": dict(attributes)}, sort_keys=True)


CHECKED_ATTRIBUTES = ("event_id", "symbol", "instrument_id", "interval", "source", "event_time",
                      "schema_version")
"""The attributes the collector sets (``collector.publisher.build_message``), each compared with
the payload when present; others are kept on dead letters but not judged."""


def parse_message(data: bytes, attributes: dict[str, str], limits: EventLimits | None = None,
                  now: dt.datetime | None = None) -> PriceEvent:
    """Parse one message: the same field grammar as the file parser (``miraikakaku.grammar``),
    then every attribute in ``CHECKED_ATTRIBUTES`` against the payload.

    ``event_time`` agrees when it is the payload's event time to the millisecond (the
    collector writes RFC 3339 with milliseconds); ``source`` when it names the same canonical
    source; the others when equal as text.

    Raises:
        ValueError: with the dead-letter reason as its first argument and a detail second:
            ``bad_encoding``, ``bad_json``, a grammar reason (``bad_number``,
            ``out_of_range``, ``bad_sequence``, ``bad_symbol``, ``bad_source``,
            ``bad_timestamp``, ``before_floor``, ``future_timestamp``, ...), ``bad_attribute``
            (an ``event_time`` attribute that is not a time) or ``attribute_mismatch``.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError("bad_encoding", str(e)) from None
    try:
        event = grammar.check_event(PriceEvent.from_json(text), limits, now)
    except FieldError as e:
        raise ValueError(e.reason, e.detail) from None
    except ValueError as e:  # json.JSONDecodeError is a ValueError
        raise ValueError("bad_json", str(e)[:300]) from None
    for key in CHECKED_ATTRIBUTES:
        if key not in attributes:
            continue
        given = attributes[key]
        if key == "event_time":
            try:
                when = grammar.parse_timestamp(given)
            except FieldError as e:
                raise ValueError("bad_attribute", f"attribute event_time: {e.detail}") from None
            agrees = abs((when - event.event_time).total_seconds()) < 0.001
            value: object = event.event_time.isoformat()
        elif key == "source":
            value = event.source
            agrees = isinstance(given, str) and given.strip(" \t").lower() == value
        elif key == "schema_version":
            value = SCHEMA_VERSION
            agrees = given == str(SCHEMA_VERSION)
        else:
            value = getattr(event, key)
            agrees = given == value
        if not agrees:
            raise ValueError("attribute_mismatch",
                             f"attribute {key}={grammar.preview(given)} but payload has {value!r}")
    return event


def _publish_time(message) -> str:
    """The message's Pub/Sub publish time, RFC 3339 UTC with microseconds (``""`` when the
    runner gives none): the revision of a correction (``miraikakaku.schema.revision_key``)."""
    when = getattr(message, "publish_time", None)
    if not isinstance(when, dt.datetime):
        return ""
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    return when.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class _ParseMessageFn(beam.DoFn):
    DEAD_LETTER = "dead_letter"

    def __init__(self, origin: str, limits: EventLimits) -> None:
        self._origin = origin
        self._limits = limits
        self._read = progress.counter("ParseEvents", "events_read")
        self._bad = progress.counter("ParseEvents", "parse_errors")

    def setup(self) -> None:
        self._lag = Metrics.distribution("Freshness", "event_lag_ms")
        self._fresh: dict[str, object] = {}

    def _observe(self, event: PriceEvent) -> None:
        # operations metrics: processing time minus event time (the watermark lag a live
        # stream runs behind), and per instrument the newest event time seen (freshness; an
        # alert policy compares it with the clock while the exchange is open)
        now_ms = int(time.time() * 1000)
        event_ms = int(event.event_time.timestamp() * 1000)
        self._lag.update(max(0, now_ms - event_ms))
        gauge = self._fresh.get(event.instrument_id)
        if gauge is None:
            gauge = self._fresh[event.instrument_id] = Metrics.gauge(
                "Freshness", f"last_event_ms[{event.instrument_id}]")
        gauge.set(event_ms)

    def process(self, message):
        self._read.inc()
        progress.tick("read")
        data = message.data if isinstance(message.data, bytes) else b""
        attributes: dict[str, str] = {}
        position = ""
        try:
            attributes = {str(k): str(v) for k, v in dict(message.attributes or {}).items()}
            position = f"message:{message.message_id}" if getattr(
                message, "message_id", None) else ""
            event = parse_message(data, attributes, self._limits)
            self._observe(event)
        except ValueError as e:
            reason, detail = (e.args + ("",))[:2]
            yield self._dead_letter(str(reason), str(detail), data, attributes, position)
            return
        except Exception as e:  # noqa: BLE001 - one message must never stop the stream
            yield self._dead_letter("unparseable", f"{type(e).__name__}: {str(e)[:200]}",
                                    data, attributes, position)
            return
        yield dataclasses.replace(event, provenance=(
            self._origin, position, _publish_time(message))) if position \
            else event

    def _dead_letter(self, reason: str, detail: str, data: bytes, attributes: dict[str, str],
                     position: str):
        self._bad.inc()
        return beam.pvalue.TaggedOutput(self.DEAD_LETTER, DeadLetter(
            STEP, reason, detail, message_payload(data, attributes), self._origin,
            position=position))


class ParseMessages(beam.PTransform):
    """``PCollection[PubsubMessage]`` → ``ParseResult(events, dead_letters)``.

    Never fails on a message: whatever its data or attributes, it becomes an event or a dead
    letter (an unexpected error: reason ``unparseable``).

    Args:
        origin: where the messages come from (the subscription path), kept on dead letters.
        limits: time bounds (``EventLimits``); default: from the settings.
    """

    def __init__(self, origin: str, limits: EventLimits | None = None) -> None:
        super().__init__()
        self._origin = origin
        self._limits = limits or EventLimits.from_settings()

    def expand(self, messages) -> ParseResult:
        out = messages | "Parse" >> beam.ParDo(
            _ParseMessageFn(self._origin, self._limits)).with_outputs(
                _ParseMessageFn.DEAD_LETTER, main="events")
        return ParseResult(out.events, out[_ParseMessageFn.DEAD_LETTER])
