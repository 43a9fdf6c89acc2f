"""The accepted grammar of every price-record field, defined once for files and streams.

Both ways in use these functions: the file parser (``transforms.parsing.parse_fields``: CSV
text or Parquet values) and the stream parser (``transforms.messages.parse_message``: the JSON
wire format, checked by ``check_event``). Anything outside the grammar raises ``FieldError``
with a dead-letter reason; nothing is repaired, truncated or guessed.

Fields (README, "Block or flag"):

* **numbers** (``open, high, low, close, adj_close, volume``; ``price, size`` of a trade): ASCII
  decimal ``[+-]digits[.digits][e[+-]digits]`` (``NUMBER_RE``) after trimming ASCII spaces and
  tabs; no ``_`` separators, no non-ASCII digits, no ``inf``/``nan``/hex (Python's ``float()``
  takes all of those, so it runs only on text that matched). Reason ``bad_number``. In JSON a
  number must be a JSON number (not a string, not ``true``); ``NaN``/``Infinity`` are
  ``bad_number``.
* **magnitudes**: a price's absolute value must lie in ``[PRICE_MIN, PRICE_MAX]`` unless it is 0
  (zero and negative prices are the validation rule ``non_positive_price``), a volume's in
  ``[0, VOLUME_MAX]`` apart from the sign (negative volume is ``negative_volume``). Reason
  ``out_of_range``. The bounds are far outside any listed share price (Berkshire Hathaway A
  traded near 7e5 USD in 2024; Tokyo's highest share prices are near 1e5 JPY) yet keep every
  log ratio of two prices finite (``math.log(PRICE_MAX / PRICE_MIN)`` ≈ 41).
* **sequence**: ASCII digits only, ``0 ≤ n ≤ SEQUENCE_MAX`` (2^63 − 1, the signed 64-bit range
  of the stores and of BigQuery's INTEGER); parsed as an integer, never through a float (a
  float changes integers above 2^53); a bar's is 0 (``check_bar_sequence``). Reason
  ``bad_sequence``.
* **date** (daily bars): exactly ``YYYY-MM-DD`` (``DATE_RE``; ``YYYY/MM/DD`` is read as the same
  format with the other separator, one separator per value), nothing before or after. Reason
  ``bad_timestamp``.
* **timestamp** (intraday bars and trades): ISO 8601 ``YYYY-MM-DDTHH:MM[:SS[.fff…]]`` with a UTC
  offset (``Z`` or ``±HH:MM``; ``TIMESTAMP_RE``). Reason ``bad_timestamp``.
* **time bounds**: a session date before ``DATE_FLOOR`` (1900-01-01) is ``before_floor``; an
  event time later than now plus a tolerance (``EventLimits``: 24 hours for daily bars, whose
  event time is the session close, so today's bar passes and tomorrow's does not; 5 minutes
  for intraday bars and trades; settings ``MIRAIKAKAKU_FUTURE_TOLERANCE_DAILY_HOURS`` and
  ``MIRAIKAKAKU_FUTURE_TOLERANCE_INTRADAY_SECONDS``) is ``future_timestamp``.
* **symbol**: ASCII only, 1–``SYMBOL_MAX`` characters of ``A–Z a–z 0–9 . - ^ = / :``, at least one
  letter or digit (``SYMBOL_RE``), checked **before** any case mapping (``"ﬀ".upper()`` is
  ``"FF"``). Reason ``bad_symbol``.
* **source**: ASCII only, 1–``SOURCE_MAX`` characters of ``a–z 0–9 _ . : -`` after lower-casing
  (``SOURCE_RE``), starting with a letter or digit; the stored name is the lower-cased one, so
  ``Chart0`` and ``chart0`` are one series. Reason ``bad_source``.
* **currency**: three ASCII capitals (ISO 4217). Reason ``bad_currency``.

Raises everywhere: ``FieldError`` (a ``ValueError`` with ``reason`` and ``detail``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import re
from typing import Any

__all__ = [
    "FieldError",
    "EventLimits",
    "NUMBER_RE",
    "DATE_RE",
    "TIMESTAMP_RE",
    "SYMBOL_RE",
    "SOURCE_RE",
    "PRICE_MIN",
    "PRICE_MAX",
    "VOLUME_MAX",
    "SEQUENCE_MAX",
    "SYMBOL_MAX",
    "SOURCE_MAX",
    "DATE_FLOOR",
    "INTERVALS",
    "parse_number",
    "parse_price",
    "parse_volume",
    "parse_sequence",
    "check_bar_sequence",
    "parse_date",
    "parse_timestamp",
    "check_symbol",
    "normalize_source",
    "check_price",
    "check_volume",
    "check_event_time",
    "check_event",
    "preview",
]

NUMBER_RE = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]{1,3})?")
DATE_RE = re.compile(r"([0-9]{4})([-/])([0-9]{2})\2([0-9]{2})")
TIMESTAMP_RE = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:\.[0-9]{1,9})?)?"
    r"(?:Z|[+-][0-9]{2}:[0-9]{2})")
SYMBOL_MAX = 20
SOURCE_MAX = 64
SYMBOL_RE = re.compile(rf"(?=.*[A-Za-z0-9])[A-Za-z0-9.\-^=/:]{{1,{SYMBOL_MAX}}}")
SOURCE_RE = re.compile(rf"[a-z0-9][a-z0-9_.:\-]{{0,{SOURCE_MAX - 1}}}")
_CURRENCY_RE = re.compile(r"[A-Z]{3}")
PRICE_MIN = 1e-6
"""Smallest positive price accepted (quote currency): sub-penny quotes go to 1e-4."""
PRICE_MAX = 1e12
"""Largest price accepted (quote currency): also bounds indices and unusual currencies."""
VOLUME_MAX = 1e13
"""Largest volume accepted (shares or units per bar)."""
SEQUENCE_MAX = 2**63 - 1
DATE_FLOOR = dt.date(1900, 1, 1)
INTERVALS: dict[str, int | None] = {"1d": None, "1h": 3600, "1m": 60, "1s": 1, "tick": 0}
"""Supported intervals and their length in seconds (None: a session)."""

_ASCII_BLANK = " \t"


class FieldError(ValueError):
    """A field outside the accepted grammar.

    Attributes:
        reason: machine-readable dead-letter reason (``bad_number``, ``out_of_range``, ...).
        detail: human-readable explanation, quoting at most ``preview`` of the value.
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclasses.dataclass(frozen=True)
class EventLimits:
    """How far in the future an event time may lie, and the earliest date accepted.

    Attributes:
        daily_future: tolerance for a daily bar's event time (its session close) beyond now.
        intraday_future: tolerance for an intraday bar's end or a trade's time beyond now.
        floor: the earliest session date accepted.
    """

    daily_future: dt.timedelta = dt.timedelta(hours=24)
    intraday_future: dt.timedelta = dt.timedelta(minutes=5)
    floor: dt.date = DATE_FLOOR

    @classmethod
    def from_settings(cls, settings: Any = None) -> EventLimits:
        """The limits from ``miraikakaku.settings`` (the environment, ``.env``)."""
        if settings is None:
            from miraikakaku.settings import get_settings

            settings = get_settings()
        return cls(dt.timedelta(hours=settings.future_tolerance_daily_hours),
                   dt.timedelta(seconds=settings.future_tolerance_intraday_seconds))


def preview(value: Any, limit: int = 40) -> str:
    """``repr`` of at most ``limit`` characters of ``value`` (for dead-letter details)."""
    text = value if isinstance(value, str) else repr(value)
    return repr(text[:limit]) + ("…" if len(text) > limit else "")


def parse_number(raw: Any, name: str) -> float:
    """Parse a decimal number (text of ``NUMBER_RE``, or an int/float from Parquet).

    Raises:
        FieldError: ``bad_number`` for anything else or a non-finite value.
    """
    if isinstance(raw, bool):
        raise FieldError("bad_number", f"field {name!r} is a boolean: {raw!r}")
    if isinstance(raw, (int, float)):
        try:
            value = float(raw)
        except OverflowError:
            raise FieldError("out_of_range", f"field {name!r} is beyond the float range") from None
    elif isinstance(raw, str):
        text = raw.strip(_ASCII_BLANK)
        if not NUMBER_RE.fullmatch(text):
            raise FieldError("bad_number", f"field {name!r} is not a number: {preview(raw)}")
        value = float(text)
    else:
        raise FieldError("bad_number", f"field {name!r} is a {type(raw).__name__}, not a number")
    if not math.isfinite(value):
        raise FieldError("bad_number", f"field {name!r} is not finite: {preview(raw)}")
    return value


def check_price(value: float, name: str) -> float:
    """Check a price's magnitude (0 and the sign are validation's ``non_positive_price``).

    Raises:
        FieldError: ``bad_number`` (not finite) or ``out_of_range``.
    """
    if not math.isfinite(value):
        raise FieldError("bad_number", f"field {name!r} is not finite: {value!r}")
    size = abs(value)
    if size != 0 and not PRICE_MIN <= size <= PRICE_MAX:
        raise FieldError("out_of_range", f"field {name!r} = {value!r} is outside "
                                         f"[{PRICE_MIN:g}, {PRICE_MAX:g}]")
    return value


def check_volume(value: float, name: str = "volume") -> float:
    """Check a volume's magnitude (a negative volume is validation's ``negative_volume``).

    Raises:
        FieldError: ``bad_number`` (not finite) or ``out_of_range``.
    """
    if not math.isfinite(value):
        raise FieldError("bad_number", f"field {name!r} is not finite: {value!r}")
    if abs(value) > VOLUME_MAX:
        raise FieldError("out_of_range", f"field {name!r} = {value!r} exceeds {VOLUME_MAX:g}")
    return value


def parse_price(raw: Any, name: str) -> float:
    """``parse_number`` then ``check_price``."""
    return check_price(parse_number(raw, name), name)


def parse_volume(raw: Any, name: str = "volume") -> float:
    """``parse_number`` then ``check_volume``."""
    return check_volume(parse_number(raw, name), name)


def parse_sequence(raw: Any) -> int:
    """Parse a sequence number: ASCII digits (or a non-negative int), at most ``SEQUENCE_MAX``.

    Raises:
        FieldError: ``bad_sequence``.
    """
    if isinstance(raw, bool) or not isinstance(raw, (int, str)):
        raise FieldError("bad_sequence", f"sequence is not an integer: {preview(raw)}")
    if isinstance(raw, str):
        text = raw.strip(_ASCII_BLANK)
        if not text.isascii() or not text.isdigit() or len(text) > 19:
            raise FieldError("bad_sequence", f"sequence is not ASCII digits: {preview(raw)}")
        raw = int(text)
    if not 0 <= raw <= SEQUENCE_MAX:
        raise FieldError("bad_sequence", f"sequence {preview(raw)} is outside [0, 2^63 - 1]")
    return raw


def check_bar_sequence(sequence: int) -> int:
    """A bar's sequence must be 0: a bar is identified by its start (its row key has no
    sequence), so two bars of one session with other sequences would be one row in the store
    and two events in the counts.

    Raises:
        FieldError: ``bad_sequence``.
    """
    if sequence != 0:
        raise FieldError("bad_sequence", f"a bar's sequence must be 0 (got {sequence}): a bar "
                         "is identified by its start")
    return sequence


def parse_date(raw: Any, limits: EventLimits | None = None) -> dt.date:
    """Parse a session date ``YYYY-MM-DD`` (or ``YYYY/MM/DD``), the whole field.

    Raises:
        FieldError: ``bad_timestamp`` (grammar, impossible date) or ``before_floor``.
    """
    if isinstance(raw, dt.datetime):
        raise FieldError("bad_timestamp", f"a date field holds a time: {preview(raw)}")
    if isinstance(raw, dt.date):
        day = raw
    else:
        text = raw.strip(_ASCII_BLANK) if isinstance(raw, str) else None
        m = DATE_RE.fullmatch(text) if text is not None else None
        if m is None:
            raise FieldError("bad_timestamp", f"not a YYYY-MM-DD date: {preview(raw)}")
        try:
            day = dt.date(int(m[1]), int(m[3]), int(m[4]))
        except ValueError:
            raise FieldError("bad_timestamp", f"no such date: {preview(raw)}") from None
    floor = (limits or _DEFAULT).floor
    if day < floor:
        raise FieldError("before_floor", f"date {day} is before {floor}")
    return day


def parse_timestamp(raw: Any) -> dt.datetime:
    """Parse an ISO 8601 timestamp with a UTC offset into an aware UTC datetime.

    Raises:
        FieldError: ``bad_timestamp``.
    """
    if isinstance(raw, dt.datetime):
        if raw.tzinfo is None:
            raise FieldError("bad_timestamp", f"timestamp without a UTC offset: {raw!r}")
        return raw.astimezone(dt.timezone.utc)
    text = raw.strip(_ASCII_BLANK) if isinstance(raw, str) else None
    if text is None or not TIMESTAMP_RE.fullmatch(text):
        raise FieldError("bad_timestamp", f"not an ISO 8601 time with a UTC offset: "
                                          f"{preview(raw)}")
    frac = re.search(r"\.([0-9]+)", text)
    if frac and len(frac[1]) > 6:  # fromisoformat takes 3 or 6 digits: microseconds at most
        text = text.replace(frac[0], "." + frac[1][:6].ljust(6, "0"), 1)
    elif frac:
        text = text.replace(frac[0], "." + frac[1].ljust(6, "0"), 1)
    try:
        value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        return value.astimezone(dt.timezone.utc)
    except (ValueError, OverflowError):
        raise FieldError("bad_timestamp", f"no such time: {preview(raw)}") from None


def check_symbol(raw: Any) -> str:
    """Check a ticker's spelling; return it trimmed (case is the instrument master's job).

    Raises:
        FieldError: ``bad_symbol``.
    """
    if not isinstance(raw, str):
        raise FieldError("bad_symbol", f"symbol is not text: {preview(raw)}")
    text = raw.strip(_ASCII_BLANK)
    if not text.isascii() or not SYMBOL_RE.fullmatch(text):
        raise FieldError("bad_symbol", f"symbol outside [A-Za-z0-9.-^=/:]{{1,{SYMBOL_MAX}}} "
                                       f"with a letter or digit: {preview(raw)}")
    return text


def normalize_source(raw: Any) -> str:
    """Check a source name and return its canonical (lower-case) spelling.

    Raises:
        FieldError: ``bad_source``.
    """
    if not isinstance(raw, str):
        raise FieldError("bad_source", f"source is not text: {preview(raw)}")
    text = raw.strip(_ASCII_BLANK)
    if not text.isascii() or not SOURCE_RE.fullmatch(text.lower()):
        raise FieldError("bad_source", f"source outside [a-z0-9_.:-]{{1,{SOURCE_MAX}}}: "
                                       f"{preview(raw)}")
    return text.lower()


_DEFAULT = EventLimits()


def check_event_time(event_time: dt.datetime, interval: str, limits: EventLimits | None = None,
                     now: dt.datetime | None = None) -> None:
    """Refuse an event time beyond now plus the interval's tolerance.

    Raises:
        FieldError: ``future_timestamp``.
    """
    limits = limits or _DEFAULT
    now = now or dt.datetime.now(dt.timezone.utc)
    tolerance = limits.daily_future if interval == "1d" else limits.intraday_future
    if event_time > now + tolerance:
        raise FieldError("future_timestamp",
                         f"event time {event_time.isoformat()} is after now "
                         f"({now:%Y-%m-%dT%H:%M:%SZ}) + {tolerance}")


def _json_number(value: Any, name: str, *, optional: bool = False) -> float | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise FieldError("bad_number", f"field {name!r} is not a JSON number: {preview(value)}")
    try:
        return float(value)
    except OverflowError:  # an integer beyond the float range
        raise FieldError("out_of_range", f"field {name!r} is beyond the float range") from None


def check_event(event: Any, limits: EventLimits | None = None,
                now: dt.datetime | None = None) -> Any:
    """Apply the field grammar to an already-typed ``PriceEvent`` (the stream's wire format).

    Returns:
        The event, with its source name in canonical spelling and its numbers as floats.

    Raises:
        FieldError: with the reasons above, plus ``bad_interval``, ``bad_instrument``,
            ``bad_currency``, ``bad_flag`` and ``bad_event_id`` (not ASCII, or not the id the
            event's fields give: ``miraikakaku.schema.event_id_of``).
    """
    from miraikakaku.instruments import INSTRUMENT_ID_RE

    prices = {}
    for name in ("open", "high", "low", "close", "adj_close"):
        value = _json_number(getattr(event, name), name, optional=name == "adj_close")
        prices[name] = None if value is None else check_price(value, name)
    volume = _json_number(event.volume, "volume", optional=True)
    if volume is not None:
        check_volume(volume)
    sequence = event.sequence
    if not isinstance(sequence, int):
        raise FieldError("bad_sequence", f"sequence is not an integer: {preview(sequence)}")
    parse_sequence(sequence)
    if not isinstance(event.interval, str) or event.interval not in INTERVALS:
        raise FieldError("bad_interval", f"unknown interval {preview(event.interval)}")
    if event.interval != "tick":
        check_bar_sequence(sequence)
    if not isinstance(event.instrument_id, str) or not INSTRUMENT_ID_RE.fullmatch(
            event.instrument_id):
        raise FieldError("bad_instrument",
                         f"instrument id outside MIC:CODE: {preview(event.instrument_id)}")
    check_symbol(event.symbol)
    source = normalize_source(event.source)
    if not isinstance(event.currency, str) or not _CURRENCY_RE.fullmatch(event.currency):
        raise FieldError("bad_currency", f"currency is not ISO 4217: {preview(event.currency)}")
    if not isinstance(event.event_id, str) or not event.event_id.isascii() or len(
            event.event_id) > 200:
        raise FieldError("bad_event_id", f"event id is not ASCII text: {preview(event.event_id)}")
    if not all(isinstance(f, str) and f.isascii() and len(f) <= 64 for f in event.flags):
        raise FieldError("bad_flag", f"flags are not short ASCII names: {preview(event.flags)}")
    parse_date(event.session_date, limits)
    check_event_time(event.event_time, event.interval, limits, now)
    from miraikakaku.schema import event_id_of

    own = event_id_of(dataclasses.replace(event, source=source))
    if event.event_id != own:
        raise FieldError("bad_event_id", f"event id {preview(event.event_id)} is not the "
                         f"event's own ({own}): ids key deduplication and the stores")
    changes: dict[str, Any] = {k: v for k, v in prices.items()
                               if v is not None and type(getattr(event, k)) is not float}
    if volume is not None and type(event.volume) is not float:
        changes["volume"] = volume
    if source != event.source:
        changes["source"] = source
    return dataclasses.replace(event, **changes) if changes else event
