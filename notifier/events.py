"""The notifier's event wire format: one JSON message per price event, prediction or alert.

The pipeline's serving store writes every record it stores to its ``outbox`` table (topic and
JSON payload from ``encode_event``, in the same transaction); in Google Cloud mode the same
payloads go to Pub/Sub topics of the same names. Consumers (the notifier, delivery channels) read
them back with ``decode_event`` into one flat ``MarketEvent``.

Topics and payloads (compact JSON, UTF-8, timestamps ISO 8601 with ``+00:00``):

* ``prices``: ``PriceEvent.to_json()`` (the schema's own wire format, ``schema_version`` 1);
* ``predictions``: the ``Prediction`` fields, dates ISO, plus ``event_id``;
* ``alerts``: ``alert_id, rule_id, kind, instrument_id, event_time, session_date, value,
  threshold, message`` (the layout the store's outbox has always had).

Try it::

    python -m notifier.events   # prints one encoded event of each type and its decoded form
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from typing import Any, Literal

from miraikakaku.schema import AlertEvent, Prediction, PriceEvent, utc

__all__ = [
    "TOPICS",
    "TOPIC_PRICES",
    "TOPIC_PREDICTIONS",
    "TOPIC_ALERTS",
    "MarketEvent",
    "encode_event",
    "decode_event",
    "event_id_of",
    "message_id",
    "prediction_event_id",
]

TOPIC_PRICES = "prices"
TOPIC_PREDICTIONS = "predictions"
TOPIC_ALERTS = "alerts"
TOPICS = (TOPIC_PRICES, TOPIC_PREDICTIONS, TOPIC_ALERTS)
"""Every topic ``encode_event`` produces."""

EventType = Literal["price", "prediction", "alert"]
_TYPE_OF_TOPIC: dict[str, EventType] = {
    TOPIC_PRICES: "price", TOPIC_PREDICTIONS: "prediction", TOPIC_ALERTS: "alert"}


@dataclasses.dataclass(frozen=True)
class MarketEvent:
    """One decoded event, whatever its topic; fields that do not apply to its type are None.

    Attributes:
        type: ``price``, ``prediction`` or ``alert``.
        event_id: stable id (a replay has the same one; idempotency keys use it):
            ``PriceEvent.event_id``, ``prediction_event_id(...)``, or ``AlertEvent.alert_id``.
        instrument_id: exchange-qualified id (``XNAS:AAPL``).
        event_time: UTC aware: a bar's session close, a prediction's ``as_of_time``, the
            alert's event time.
        session_date: exchange-local session date (a prediction's ``as_of_date``).
        close: bar close, quote currency (price events).
        volume: bar volume in shares (price events; None when the source has none).
        adj_close: adjusted close, quote currency (price events; None when the source has none).
        currency: ISO 4217 quote currency (price events).
        symbol, source, interval: as in ``PriceEvent`` (source also for predictions).
        base_price: the prediction's base price, quote currency.
        predicted_log_return: forecast ln(P_target / P_as_of) (predictions).
        predicted_price: forecast price, quote currency (predictions).
        target_date: the session the prediction is for.
        model_name, model_version, role: the prediction's model (role ``champion`` or
            ``challenger``).
        alert_rule_id: the pipeline alert rule id (alerts).
        alert_kind: ``price_cross``, ``pct_move`` or ``predicted_move`` (alerts).
        alert_value, alert_threshold: the value that crossed and the level (alerts).
        alert_message: one-line English description (alerts).
    """

    type: EventType
    event_id: str
    instrument_id: str
    event_time: dt.datetime
    session_date: dt.date
    close: float | None = None
    volume: float | None = None
    adj_close: float | None = None
    currency: str | None = None
    symbol: str | None = None
    source: str | None = None
    interval: str | None = None
    base_price: float | None = None
    predicted_log_return: float | None = None
    predicted_price: float | None = None
    target_date: dt.date | None = None
    model_name: str | None = None
    model_version: str | None = None
    role: str | None = None
    alert_rule_id: str | None = None
    alert_kind: str | None = None
    alert_value: float | None = None
    alert_threshold: float | None = None
    alert_message: str | None = None

    @property
    def topic(self) -> str:
        """The topic this event travels on."""
        return {v: k for k, v in _TYPE_OF_TOPIC.items()}[self.type]

    @property
    def feature_price(self) -> float | None:
        """``adj_close`` when present, else ``close`` (price events), else None."""
        return self.adj_close if self.adj_close is not None else self.close


def prediction_event_id(p: Prediction) -> str:
    """Stable id of a prediction event:
    ``prediction/{instrument_id}/{model_name}/{model_version}/{role}/{yyyymmdd as-of}``."""
    return (f"prediction/{p.instrument_id}/{p.model_name}/{p.model_version}/{p.role}/"
            f"{p.as_of_date:%Y%m%d}")


def event_id_of(record: PriceEvent | Prediction | AlertEvent) -> str:
    """The stable event id of a record (see ``MarketEvent.event_id``).

    Raises:
        TypeError: for any other record type.
    """
    if isinstance(record, PriceEvent):
        return record.event_id
    if isinstance(record, Prediction):
        return prediction_event_id(record)
    if isinstance(record, AlertEvent):
        return record.alert_id
    raise TypeError(f"not an event: {type(record).__name__}")


def message_id(topic: str, event_id: str) -> str:
    """Outbox message id (its primary key): ``{topic}/{event_id}``; a replay is ignored."""
    return f"{topic}/{event_id}"


def _dumps(d: dict[str, Any]) -> str:
    return json.dumps(d, separators=(",", ":"), ensure_ascii=False)


def _ts(value: dt.datetime) -> str:
    return utc(value).isoformat()


def encode_event(record: PriceEvent | Prediction | AlertEvent) -> tuple[str, str]:
    """Encode a record for the outbox / Pub/Sub.

    Args:
        record: a ``PriceEvent``, ``Prediction`` or ``AlertEvent``.

    Returns:
        ``(topic, payload)``: topic ``prices``, ``predictions`` or ``alerts``; the payload is
        compact JSON text.

    Raises:
        TypeError: for any other record type.
        ValueError: for a naive timestamp.
    """
    if isinstance(record, PriceEvent):
        return TOPIC_PRICES, record.to_json()
    if isinstance(record, Prediction):
        d = dataclasses.asdict(record)
        d["event_id"] = prediction_event_id(record)
        d["as_of_date"] = record.as_of_date.isoformat()
        d["as_of_time"] = _ts(record.as_of_time)
        d["target_date"] = record.target_date.isoformat()
        return TOPIC_PREDICTIONS, _dumps(d)
    if isinstance(record, AlertEvent):
        return TOPIC_ALERTS, _dumps({
            "alert_id": record.alert_id, "rule_id": record.rule_id, "kind": record.kind,
            "instrument_id": record.instrument_id, "event_time": _ts(record.event_time),
            "session_date": record.session_date.isoformat(), "value": record.value,
            "threshold": record.threshold, "message": record.message})
    raise TypeError(f"cannot encode a {type(record).__name__} as an event")


def _time(text: str) -> dt.datetime:
    return utc(dt.datetime.fromisoformat(text))


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)


def decode_event(topic: str, payload: str | bytes) -> MarketEvent:
    """Decode a payload written by ``encode_event``.

    Args:
        topic: ``prices``, ``predictions`` or ``alerts``.
        payload: the JSON text (or UTF-8 bytes).

    Returns:
        The ``MarketEvent`` (UTC aware ``event_time``).

    Raises:
        ValueError: unknown topic, malformed JSON, a missing field, a naive timestamp or an
            unknown schema version.
    """
    if topic not in _TYPE_OF_TOPIC:
        raise ValueError(f"unknown event topic {topic!r}; expected one of {TOPICS}")
    if topic == TOPIC_PRICES:
        e = PriceEvent.from_json(payload)
        return MarketEvent(
            type="price", event_id=e.event_id, instrument_id=e.instrument_id,
            event_time=e.event_time, session_date=e.session_date, close=e.close,
            volume=e.volume, adj_close=e.adj_close, currency=e.currency, symbol=e.symbol,
            source=e.source, interval=e.interval)
    try:
        d: dict[str, Any] = json.loads(payload)
        if topic == TOPIC_PREDICTIONS:
            return MarketEvent(
                type="prediction", event_id=str(d["event_id"]),
                instrument_id=str(d["instrument_id"]), event_time=_time(d["as_of_time"]),
                session_date=dt.date.fromisoformat(d["as_of_date"]), source=d.get("source"),
                base_price=_opt_float(d["base_price"]),
                predicted_log_return=float(d["predicted_log_return"]),
                predicted_price=_opt_float(d["predicted_price"]),
                target_date=dt.date.fromisoformat(d["target_date"]),
                model_name=d.get("model_name"), model_version=d.get("model_version"),
                role=d.get("role", "champion"))
        return MarketEvent(
            type="alert", event_id=str(d["alert_id"]), instrument_id=str(d["instrument_id"]),
            event_time=_time(d["event_time"]),
            session_date=dt.date.fromisoformat(d["session_date"]),
            alert_rule_id=d.get("rule_id"), alert_kind=d.get("kind"),
            alert_value=_opt_float(d.get("value")), alert_threshold=_opt_float(d.get("threshold")),
            alert_message=d.get("message"))
    except (KeyError, TypeError, AttributeError, json.JSONDecodeError) as e:
        raise ValueError(f"bad {topic} event payload: {e!r}") from e


if __name__ == "__main__":  # pragma: no cover - demo
    _t = dt.datetime(2018, 2, 7, 21, tzinfo=dt.timezone.utc)
    _d = dt.date(2018, 2, 7)
    for _r in (
        PriceEvent(1, "sp500_5yr/XNAS:AAPL/1d/20180207/0", "XNAS:AAPL", "AAPL", "sp500_5yr", 0,
                   "1d", _d, _t, 163.1, 163.4, 159.1, 159.5, 51_608_580.0, None, "USD"),
        Prediction("XNAS:AAPL", "sp500_5yr", _d, _t, dt.date(2018, 2, 8), 159.5, 0.01, 161.1,
                   "lstm_daily", "3"),
        AlertEvent("drop/XNAS:AAPL/20180207", "drop", "pct_move", "XNAS:AAPL", _t, _d, -0.025,
                   0.02, "AAPL moved -2.5%"),
    ):
        _topic, _payload = encode_event(_r)
        print(_topic, _payload)
        print("  ->", decode_event(_topic, _payload))
