"""A hostile Pub/Sub message corpus: real IBM trades of the Lean tick file (2013-10-07), each
message mutated one way (its payload or its attributes), with the fate each must meet.

``build(trades)`` returns ``MessageCase``s in publish order. Every message carries the
attribute ``case`` (not one the parser judges: ``transforms.messages.CHECKED_ATTRIBUTES``), so
its dead letter — whose payload keeps the attributes — can be matched to it. Fates: ``stored``
(the trade is in the store under ``event_id`` with price ``close``), ``dead`` (a dead letter
``step:reason``), ``duplicate`` (dropped and counted; the store keeps one row of the event, with
price ``close`` for a correction). ``tests/integration/test_stream_hostile.py`` publishes the
corpus to the emulator, runs the pipeline and checks every message's fate in Bigtable and on
the dead-letter topic.

Prices are never invented: a message starts from one real trade (each case its own trade, so
cases do not collide unless the case is a collision) and changes one thing.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterator
from typing import Any

from collector.publisher import build_message
from miraikakaku.schema import PriceEvent, event_id_of

PARSE = "ParseMessages"
VALIDATE = "ValidateEvents"


@dataclasses.dataclass
class MessageCase:
    """One message to publish and its expected fate (see the module docstring)."""

    case: str
    data: bytes
    attributes: dict[str, str]
    fate: str
    reason: str = ""  # "step:reason" of a dead letter
    event_id: str = ""  # stored, duplicate: the event the store must hold
    close: float | None = None  # stored, duplicate: the price the store must hold


def _wire(e: PriceEvent) -> dict[str, Any]:
    return json.loads(e.to_json())


def build(trades: list[PriceEvent]) -> list[MessageCase]:
    """The corpus (publish order matters only for duplicates and corrections, which follow
    their originals).

    Args:
        trades: real trades, sorted by time, with distinct event ids; at least 200.

    Raises:
        ValueError: too few trades.
    """
    if len(trades) < 200:
        raise ValueError(f"need at least 200 trades, got {len(trades)}")
    pool: Iterator[PriceEvent] = iter(trades)
    cases: list[MessageCase] = []

    def take() -> PriceEvent:
        return next(pool)

    def add(name: str, data: bytes, attributes: dict[str, str], fate: str, **kw: Any) -> None:
        cases.append(MessageCase(name, data, {**attributes, "case": name}, fate, **kw))

    def stored(name: str, e: PriceEvent | None = None,
               payload: Callable[[dict[str, Any]], Any] | None = None,
               attrs: Callable[[dict[str, str]], Any] | None = None,
               text: Callable[[str], str] | None = None, close: float | None = None) -> None:
        e = e or take()
        d, a = _wire(e), dict(build_message(e).attributes)
        if payload:
            payload(d)
        if attrs:
            attrs(a)
        body = json.dumps(d)
        if text:
            body = text(body)
        add(name, body.encode(), a, "stored", event_id=e.event_id,
            close=e.close if close is None else close)

    def dead(name: str, reason: str, payload: Callable[[dict[str, Any]], Any] | None = None,
             attrs: Callable[[dict[str, str]], Any] | None = None,
             raw: bytes | Callable[[str], str] | None = None, step: str = PARSE) -> None:
        e = take()
        d, a = _wire(e), dict(build_message(e).attributes)
        if payload:
            payload(d)
        if attrs:
            attrs(a)
        if isinstance(raw, bytes):
            data = raw
        else:
            body = json.dumps(d)
            data = (raw(body) if raw else body).encode("utf-8", errors="surrogatepass")
        add(name, data, a, "dead", reason=f"{step}:{reason}")

    def setter(**values: Any) -> Callable[[dict[str, Any]], None]:
        return lambda d: d.update(values)

    def prices(value: Any) -> Callable[[dict[str, Any]], None]:
        return setter(open=value, high=value, low=value, close=value)

    def drop(key: str) -> Callable[[dict[str, Any]], None]:
        return lambda d: d.pop(key)

    # -- real trades, and spellings the grammar accepts ------------------------------------
    for i in range(20):
        stored(f"real_{i:02d}")
    stored("no_attributes", attrs=lambda a: a.clear())
    stored("unknown_attribute", attrs=lambda a: a.update(collector_host="tk-3"))
    stored("attribute_event_time_other_offset",
           attrs=lambda a: a.update(event_time=a["event_time"].replace("Z", "+00:00")))
    stored("source_in_capitals", payload=setter(source="LEAN"),
           attrs=lambda a: a.update(source="LEAN"))
    stored("pretty_printed_json", text=lambda s: json.dumps(json.loads(s), indent=2))
    stored("keys_in_other_order", text=lambda s: json.dumps(dict(sorted(json.loads(s).items(),
                                                                        reverse=True))))
    e = take()
    stored("integer_price", e, payload=prices(int(e.close)) if e.close == int(e.close) else
           prices(e.close))
    e = take()
    big = dataclasses.replace(e, sequence=2**53 + 1)
    big = dataclasses.replace(big, event_id=event_id_of(big))
    stored("sequence_above_2_53", big)
    e = take()
    exact = dataclasses.replace(e, sequence=2**63 - 1)
    exact = dataclasses.replace(exact, event_id=event_id_of(exact))
    stored("sequence_2_63_minus_1", exact)
    late = trades[-1]  # the latest trade, published now, before the ones after it in time
    stored("out_of_order_latest_first", late)

    # -- payloads that are not a price event -----------------------------------------------
    dead("not_utf8", "bad_encoding", raw=b"\xff\xfe{}")
    dead("latin1_symbol", "bad_encoding", raw=lambda s: s.replace('"IBM"', '"IBM\udce9"'))
    dead("not_json", "bad_json", raw=b"{not json")
    dead("empty_data", "bad_json", raw=b"")
    dead("json_array", "bad_json", raw=b"[]")
    dead("json_string", "bad_json", raw=b'"IBM"')
    dead("json_null", "bad_json", raw=b"null")
    dead("json_number", "bad_json", raw=b"185.5")
    dead("trailing_garbage", "bad_json", raw=lambda s: s + "}")
    dead("two_objects", "bad_json", raw=lambda s: s + s)
    dead("utf8_bom", "bad_json", raw=lambda s: "\ufeff" + s)
    dead("nul_byte", "bad_json", raw=lambda s: s.replace("{", "{\x00", 1))
    dead("key_twice", "bad_json", raw=lambda s: s.replace('"close":', '"close":1.0,"close":', 1))
    dead("missing_close", "bad_json", payload=drop("close"))
    dead("missing_event_time", "bad_json", payload=drop("event_time"))
    dead("unknown_field", "bad_json", payload=setter(venue="XNYS"))
    dead("schema_version_2", "bad_json", payload=setter(schema_version=2))
    dead("schema_version_text", "bad_json", payload=setter(schema_version="1"))
    dead("flags_a_string", "bad_json", payload=setter(flags="suspicious"))
    dead("flags_null", "bad_json", payload=setter(flags=None))

    # -- numbers ---------------------------------------------------------------------------
    for name, value in [("nan", "NaN"), ("infinity", "Infinity"), ("minus_infinity", "-Infinity")]:
        dead(f"close_{name}", "bad_number", raw=lambda s, v=value: _replace_number(s, "close", v))
    dead("close_as_text", "bad_number", payload=lambda d: d.update(close=str(d["close"])))
    dead("close_true", "bad_number", payload=setter(close=True))
    dead("close_null", "bad_number", payload=setter(close=None))
    dead("close_a_list", "bad_number", payload=lambda d: d.update(close=[d["close"]]))
    dead("close_an_object", "bad_number", payload=lambda d: d.update(close={"v": d["close"]}))
    dead("high_nan", "bad_number", raw=lambda s: _replace_number(s, "high", "NaN"))
    dead("volume_as_text", "bad_number", payload=lambda d: d.update(volume=str(d["volume"])))
    dead("volume_nan", "bad_number", raw=lambda s: _replace_number(s, "volume", "NaN"))
    dead("close_1e300", "out_of_range", payload=prices(1e300))
    dead("close_1e-30", "out_of_range", payload=prices(1e-30))
    dead("close_1e309", "bad_number", raw=lambda s: _replace_number(s, "close", "1e309"))
    dead("close_integer_beyond_float", "out_of_range",
         raw=lambda s: _replace_number(s, "close", "1" + "0" * 400))
    dead("volume_1e20", "out_of_range", payload=setter(volume=1e20))
    dead("open_1e-7", "out_of_range", payload=setter(open=1e-7))

    # -- sequences (the event id follows the changed sequence where it can) ----------------
    for name, value in [("negative", -1), ("2_63", 2**63), ("2_64", 2**64)]:
        dead(f"sequence_{name}", "bad_sequence", payload=setter(sequence=value))
    dead("sequence_float", "bad_sequence", payload=setter(sequence=1.5))
    dead("sequence_float_integral", "bad_sequence", payload=setter(sequence=1000.0))
    dead("sequence_text", "bad_sequence", payload=setter(sequence="7"))
    dead("sequence_true", "bad_sequence", payload=setter(sequence=True))

    # -- times -----------------------------------------------------------------------------
    dead("event_time_without_offset", "bad_timestamp",
         payload=lambda d: d.update(event_time=d["event_time"][:19]))
    dead("event_time_garbage", "bad_timestamp", payload=setter(event_time="yesterday"))
    dead("event_time_space", "bad_timestamp",
         payload=lambda d: d.update(event_time=d["event_time"].replace("T", " ")))
    dead("event_time_offset_25h", "bad_timestamp",
         payload=lambda d: d.update(event_time=d["event_time"][:19] + "+25:00"))
    dead("event_time_a_number", "bad_timestamp", payload=setter(event_time=1381152600))
    dead("session_date_junk", "bad_timestamp",
         payload=lambda d: d.update(session_date=d["session_date"] + "junk"))
    dead("session_date_month_13", "bad_timestamp", payload=setter(session_date="2013-13-07"))
    dead("session_date_empty", "bad_timestamp", payload=setter(session_date=""))
    dead("session_date_a_number", "bad_timestamp", payload=setter(session_date=20131007))
    dead("year_2099", "future_timestamp", payload=lambda d: d.update(
        event_time="2099" + d["event_time"][4:], session_date="2099" + d["session_date"][4:]))
    dead("year_1899", "before_floor", payload=lambda d: d.update(
        event_time="1899" + d["event_time"][4:], session_date="1899" + d["session_date"][4:]))

    # -- names -----------------------------------------------------------------------------
    for name, value in [("empty", ""), ("fullwidth", "ＩＢＭ"), ("ligature", "ﬀ"),
                        ("punctuation", "$$$"), ("too_long", "A" * 21), ("space", "I B M"),
                        ("newline", "IBM\n"), ("a_number", 7)]:
        dead(f"symbol_{name}", "bad_symbol", payload=setter(symbol=value))
    for name, value in [("too_long", "x" * 65), ("accent", "lé"), ("empty", ""),
                        ("space", "le an"), ("huge", "s" * 100_000)]:
        dead(f"source_{name}", "bad_source", payload=setter(source=value))
    for name, value in [("2m", "2m"), ("empty", ""), ("capitals", "TICK"), ("null", None)]:
        dead(f"interval_{name}", "bad_interval", payload=setter(interval=value))
    for name, value in [("no_mic", "IBM"), ("no_code", "XNYS:"), ("newline", "XNYS:IBM\n"),
                        ("a_number", 5)]:
        dead(f"instrument_{name}", "bad_instrument", payload=setter(instrument_id=value))
    for name, value in [("lower", "usd"), ("short", "US"), ("empty", ""), ("null", None)]:
        dead(f"currency_{name}", "bad_currency", payload=setter(currency=value))
    dead("event_id_foreign", "bad_event_id", payload=setter(event_id="x"))
    dead("event_id_other_sequence", "bad_event_id",
         payload=lambda d: d.update(event_id=d["event_id"].rsplit("/", 1)[0] + "/99"))
    dead("event_id_non_ascii", "bad_event_id",
         payload=lambda d: d.update(event_id=d["event_id"] + "é"))
    dead("sequence_without_its_id", "bad_event_id", payload=setter(sequence=12345))
    dead("instrument_of_another", "bad_event_id", payload=setter(instrument_id="XNAS:MSFT"))
    dead("flags_numbers", "bad_flag", payload=setter(flags=[1]))
    dead("flags_non_ascii", "bad_flag", payload=setter(flags=["ﬂag"]))
    dead("flags_too_long", "bad_flag", payload=setter(flags=["f" * 65]))

    # -- attributes against the payload ----------------------------------------------------
    dead("attr_event_time_garbage", "bad_attribute", attrs=lambda a: a.update(event_time="now"))
    dead("attr_event_time_millis", "bad_attribute",
         attrs=lambda a: a.update(event_time="1381152600000"))
    dead("attr_event_time_2h_off", "attribute_mismatch",
         attrs=lambda a: a.update(event_time=_shift(a["event_time"], hours=2)))
    dead("attr_symbol_other", "attribute_mismatch", attrs=lambda a: a.update(symbol="MSFT"))
    dead("attr_event_id_other", "attribute_mismatch",
         attrs=lambda a: a.update(event_id=a["event_id"] + "0"))
    dead("attr_instrument_other", "attribute_mismatch",
         attrs=lambda a: a.update(instrument_id="XNAS:MSFT"))
    dead("attr_interval_other", "attribute_mismatch", attrs=lambda a: a.update(interval="1m"))
    dead("attr_source_other", "attribute_mismatch", attrs=lambda a: a.update(source="chart0"))
    dead("attr_schema_version_2", "attribute_mismatch",
         attrs=lambda a: a.update(schema_version="2"))

    # -- validation rules (stream: basic, the suite's block rules) -------------------------
    dead("price_zero", "non_positive_price", payload=prices(0.0), step=VALIDATE)
    dead("price_negative", "non_positive_price",
         payload=lambda d: prices(-d["close"])(d), step=VALIDATE)
    dead("high_below_low", "high_below_low",
         payload=lambda d: d.update(high=d["close"] - 0.5, low=d["close"]), step=VALIDATE)
    dead("volume_negative", "negative_volume", payload=lambda d: d.update(volume=-d["volume"]),
         step=VALIDATE)

    # -- collisions: repeats and corrections -----------------------------------------------
    first = cases[0]
    add("repeat_of_real_00", first.data, {k: v for k, v in first.attributes.items()
                                          if k != "case"}, "duplicate",
        event_id=first.event_id, close=first.close)
    second = cases[1]
    d = json.loads(second.data)
    add("repeat_reformatted", json.dumps(d, indent=1).encode(),
        {k: v for k, v in second.attributes.items() if k != "case"}, "duplicate",
        event_id=second.event_id, close=second.close)
    third = cases[2]
    corrected = next(t.close for t in trades if t.close != third.close)
    d = json.loads(third.data)
    d.update(open=corrected, high=corrected, low=corrected, close=corrected)
    add("correction_of_real_02", json.dumps(d).encode(),
        {k: v for k, v in third.attributes.items() if k != "case"}, "duplicate",
        event_id=third.event_id, close=corrected)
    third.close = corrected  # the later revision wins: the store holds the corrected price
    return cases


def _replace_number(text: str, key: str, literal: str) -> str:
    """Put a bare literal (``NaN``, ``1e309``) where ``key``'s number is in ``json.dumps`` text."""
    d = json.loads(text)
    marker = "__NUMBER__"
    d[key] = marker
    return json.dumps(d).replace(f'"{marker}"', literal)


def _shift(rfc3339: str, hours: int) -> str:
    import datetime as dt

    t = dt.datetime.fromisoformat(rfc3339.replace("Z", "+00:00")) + dt.timedelta(hours=hours)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"
