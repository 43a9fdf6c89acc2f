"""Parse Pub/Sub messages into ``PriceEvent``s, dead-lettering what cannot be read.

``ParseMessages``: ``PCollection[PubsubMessage]`` (``ReadFromPubSub(with_attributes=True)``) →
``ParseResult(events: PCollection[PriceEvent], dead_letters: PCollection[DeadLetter])``.

Operations metrics (Beam, namespace ``Freshness``): ``event_lag_ms`` (a distribution of
processing time minus event time: the watermark lag of a live stream) and
``last_event_ms[<instrument>]`` (a gauge of each instrument's newest event time: freshness).
The dead-letter rate is ``ParseEvents/parse_errors`` (plus ``WriteToServingStore/dead_letter:*``)
over ``ParseEvents/events_read``; alert thresholds on these belong in Cloud Monitoring.

The message data is the ``PriceEvent.to_json()`` wire format the collector publishes; the
attributes (``symbol``, ``event_time``, ``event_id``) are checked against it. Dead-letter reasons:
``bad_encoding`` (not UTF-8), ``bad_json`` (not a PriceEvent: malformed JSON, missing fields, an
unknown schema version), ``attribute_mismatch`` (an attribute contradicts the payload). The dead
letter keeps the raw data and the attributes, so ``miraikakaku deadletters replay`` can redrive a
fixed message with its original attributes.
"""

from __future__ import annotations

import json
import time

import apache_beam as beam
from apache_beam.metrics import Metrics

from miraikakaku.schema import DeadLetter, PriceEvent
from transforms import progress
from transforms.parsing import ParseResult

__all__ = ["ParseMessages", "message_payload", "parse_message", "STEP"]

STEP = "ParseMessages"


def message_payload(data: bytes, attributes: dict[str, str]) -> str:
    """The dead-letter payload of a message: JSON with the data (text) and the attributes."""
    return json.dumps({"data": data.decode("utf-8", errors="replace"),
                       "attributes": dict(attributes)}, sort_keys=True)


def parse_message(data: bytes, attributes: dict[str, str]) -> PriceEvent:
    """Parse one message.

    Raises:
        ValueError: with the dead-letter reason as its first argument and a detail second.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError("bad_encoding", str(e)) from None
    try:
        event = PriceEvent.from_json(text)
    except ValueError as e:  # json.JSONDecodeError is a ValueError
        raise ValueError("bad_json", str(e)[:300]) from None
    if not isinstance(event.open, (int, float)) or isinstance(event.open, bool):
        raise ValueError("bad_json", "prices must be numbers")
    for key, value in (("event_id", event.event_id), ("symbol", event.symbol)):
        if key in attributes and attributes[key] != value:
            raise ValueError("attribute_mismatch",
                             f"attribute {key}={attributes[key]!r} but payload has {value!r}")
    return event


class _ParseMessageFn(beam.DoFn):
    DEAD_LETTER = "dead_letter"

    def __init__(self, origin: str) -> None:
        self._origin = origin
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
        attributes = dict(message.attributes or {})
        try:
            event = parse_message(message.data, attributes)
            self._observe(event)
            yield event
        except ValueError as e:
            self._bad.inc()
            reason, detail = (e.args + ("",))[:2]
            yield beam.pvalue.TaggedOutput(self.DEAD_LETTER, DeadLetter(
                STEP, str(reason), str(detail), message_payload(message.data, attributes),
                self._origin))


class ParseMessages(beam.PTransform):
    """``PCollection[PubsubMessage]`` → ``ParseResult(events, dead_letters)``.

    Args:
        origin: where the messages come from (the subscription path), kept on dead letters.
    """

    def __init__(self, origin: str) -> None:
        super().__init__()
        self._origin = origin

    def expand(self, messages) -> ParseResult:
        out = messages | "Parse" >> beam.ParDo(_ParseMessageFn(self._origin)).with_outputs(
            _ParseMessageFn.DEAD_LETTER, main="events")
        return ParseResult(out.events, out[_ParseMessageFn.DEAD_LETTER])
