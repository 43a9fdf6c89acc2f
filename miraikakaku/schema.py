"""The records that flow through the platform: PriceEvent, DeadLetter, Prediction, AlertEvent.

These are the seams every stage shares, locked by ``tests/unit/test_schema.py``. Changing a
field means bumping ``SCHEMA_VERSION`` and saying so in the changelog of the issue that does it.

Conventions (see ../shared/ARCHITECTURE.md, "Identity and time"):

* prices are in the instrument's quote currency (``currency``, ISO 4217), as given by the source;
* ``open/high/low/close`` are the source's prices on the source's own basis (raw or split-adjusted,
  see ``SOURCES``); ``adj_close`` is the adjusted close when the source provides one, never mixed
  with the raw fields;
* every timestamp is a timezone-aware ``datetime`` in UTC; a daily bar's ``event_time`` is the
  session close from the exchange calendar, not midnight;
* ``event_id`` is deterministic: ``{source}/{instrument_id}/{interval}/{start}/{sequence}``, so a
  replayed event has the same id and idempotent sinks absorb it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
from typing import Any

__all__ = [
    "SCHEMA_VERSION",
    "SOURCES",
    "SourceInfo",
    "PriceEvent",
    "DeadLetter",
    "Prediction",
    "PREDICTION_ROLES",
    "AlertEvent",
    "SupersededRevision",
    "revision_key",
    "make_event_id",
    "utc",
]

SCHEMA_VERSION = 1
"""Version of the PriceEvent/DeadLetter/Prediction/AlertEvent layouts below."""


def utc(value: dt.datetime) -> dt.datetime:
    """Return ``value`` as an aware UTC datetime.

    Raises:
        ValueError: if ``value`` is naive (no tzinfo): we never guess a time zone.
    """
    if value.tzinfo is None:
        raise ValueError(f"naive datetime {value!r}: timestamps must carry a time zone")
    return value.astimezone(dt.timezone.utc)


@dataclasses.dataclass(frozen=True)
class SourceInfo:
    """What a data source's prices mean.

    Attributes:
        name: short source id used in event ids and store keys (``chart0``).
        ohlc_basis: ``raw`` (as traded), ``split_adjusted`` or ``split_dividend_adjusted``.
        has_adj_close: whether the source supplies an adjusted close column.
        description: where the data comes from (see ../shared/data/README.md).
    """

    name: str
    ohlc_basis: str
    has_adj_close: bool
    description: str


SOURCES: dict[str, SourceInfo] = {
    s.name: s
    for s in (
        SourceInfo("sp500_5yr", "split_adjusted", False,
                   "Kaggle 'S&P 500 stock data' (IEX via pandas-datareader), 2013-2018"),
        SourceInfo("chart0", "split_adjusted", False,
                   "J-Quants (JPX) daily via keroppa88/chart0, 2004-2026"),
        SourceInfo("yfinance", "raw", True, "Yahoo Finance via yfinance, 2013-2024"),
        SourceInfo("mlbot", "raw", True,
                   "Yahoo-style TSE daily via traningtrading/MLbot, 1983-2018"),
        SourceInfo("lean", "raw", False,
                   "QuantConnect Lean / AlgoSeek intraday trades and bars (New York times)"),
        SourceInfo("alphavantage", "raw", False,
                   "Alpha Vantage GLOBAL_QUOTE (live quotes, raw prices, no adjusted close)"),
        SourceInfo("alphavantage_daily", "raw", True,
                   "Alpha Vantage TIME_SERIES_DAILY_ADJUSTED via Pooksoft, 1999-2021 (raw OHLC, "
                   "adjusted close, dividends, split coefficients; tickers as of 2021-04-21)"),
        SourceInfo("user", "split_adjusted", False, "a user's own file (basis assumed adjusted)"),
    )
}
"""Known sources. A file with a ``source`` column names its own; otherwise the pipeline's
``--source`` option (default: derived from the file name) applies. Unknown names are allowed and
treated like ``user``."""


def make_event_id(source: str, instrument_id: str, interval: str, start: str, sequence: int) -> str:
    """Build the deterministic event id ``{source}/{instrument_id}/{interval}/{start}/{sequence}``.

    Args:
        source: source name (``chart0``).
        instrument_id: exchange-qualified id (``XTKS:7203``).
        interval: bar interval (``1d``) or ``tick``.
        start: bar start as compact text (``20180207`` for a daily bar).
        sequence: per-source sequence number; 0 for bars, whose identity is their start.
    """
    return f"{source}/{instrument_id}/{interval}/{start}/{sequence}"


def event_start_text(interval: str, session_date: dt.date, event_time: dt.datetime) -> str:
    """The ``start`` part of an event id: one spelling per event, whoever builds it.

    Daily bars: the session date, ``YYYYMMDD``. Trades (``tick``): the trade's time in UTC to the
    millisecond, ``YYYYMMDDTHHMMSS.mmm``. Intraday bars: the bar's start (event time minus the
    interval) in UTC, ``YYYYMMDDTHHMMSS``. UTC, not the offset the source wrote, so that
    ``09:30-04:00`` and ``13:30Z`` are one event.

    Raises:
        KeyError: an interval outside ``miraikakaku.grammar.INTERVALS``.
    """
    from miraikakaku.grammar import INTERVALS

    if interval == "1d":
        return f"{session_date.year:04d}{session_date.month:02d}{session_date.day:02d}"
    width = INTERVALS[interval]
    t = event_time.astimezone(dt.timezone.utc)
    if interval == "tick" or not width:
        return f"{t.year:04d}{t.month:02d}{t.day:02d}T{t:%H%M%S}.{t.microsecond // 1000:03d}"
    t -= dt.timedelta(seconds=width)
    return f"{t.year:04d}{t.month:02d}{t.day:02d}T{t:%H%M%S}"


def event_id_of(event: PriceEvent) -> str:
    """The event id ``event``'s own fields give (``make_event_id`` of its source, instrument,
    interval, ``event_start_text`` and sequence): the stream parser refuses a message whose
    ``event_id`` differs (``bad_event_id``), since ids key deduplication and the stores.

    Raises:
        KeyError: an unknown interval.
    """
    return make_event_id(event.source, event.instrument_id, event.interval,
                         event_start_text(event.interval, event.session_date, event.event_time),
                         event.sequence)


@dataclasses.dataclass(frozen=True)
class PriceEvent:
    """One OHLCV bar or one trade.

    Daily bars (``interval="1d"``), intraday bars (``1h``, ``1m``, ``1s``: event time = bar end)
    and trades (``interval="tick"``: open = high = low = close = the trade price, volume = the
    trade size, ``sequence`` = the per-source sequence number) share this layout.

    Attributes:
        schema_version: ``SCHEMA_VERSION`` at creation.
        event_id: deterministic id, see ``make_event_id``.
        instrument_id: exchange-qualified id (``XNAS:AAPL``).
        symbol: the ticker as the source spelled it (``AAPL``, ``7203.T``).
        source: source name (``SOURCES``).
        sequence: per-source sequence number (0 for bars).
        interval: ``1d``, ``1h``, ``1m``, ``1s`` or ``tick``.
        session_date: the exchange-local trading date of the bar.
        event_time: UTC session close of ``session_date`` (aware datetime).
        open, high, low, close: prices in ``currency`` on the source's basis.
        volume: shares traded (None when the source has none, e.g. an index).
        adj_close: adjusted close in ``currency``, or None when the source has none.
        currency: ISO 4217 quote currency (``USD``, ``JPY``).
        flags: quality flags (suspicious but stored), e.g. ``ohlc_inconsistent``.
        provenance: where the record was read: ``(origin, position, revision)``, origin and
            position as in ``DeadLetter`` (``("prices.csv", "line:12", "")``,
            ``(subscription, "message:<id>", "<publish time>")``), carried to the dead letters
            of later steps so that two identical bad rows stay two; ``revision`` orders two
            revisions of one event id (``revision_key``): a message's Pub/Sub publish time
            (RFC 3339, UTC, microseconds), empty for a file's record. Transport metadata: not
            part of the wire format (``to_json``), of equality or of any store.
    """

    schema_version: int
    event_id: str
    instrument_id: str
    symbol: str
    source: str
    sequence: int
    interval: str
    session_date: dt.date
    event_time: dt.datetime
    open: float
    high: float
    low: float
    close: float
    volume: float | None
    adj_close: float | None
    currency: str
    flags: tuple[str, ...] = ()
    provenance: tuple[str, str, str] = dataclasses.field(default=("", "", ""), compare=False,
                                                         repr=False)

    @property
    def feature_price(self) -> float:
        """The price features use: ``adj_close`` when present, else ``close``.

        Sources without an adjusted close (``SOURCES[...].has_adj_close`` false) deliver
        split-adjusted OHLC, so their close is already on an adjusted basis; the exception is
        Lean's raw bars, whose ``adj_close`` the parser fills from the factor files
        (``miraikakaku.corporate_actions``).
        """
        return self.adj_close if self.adj_close is not None else self.close

    def to_json(self) -> str:
        """Serialize to the JSON wire format (dates ISO 8601, times with ``+00:00``)."""
        d = dataclasses.asdict(self)
        del d["provenance"]
        d["session_date"] = self.session_date.isoformat()
        d["event_time"] = self.event_time.isoformat()
        d["flags"] = list(self.flags)
        return json.dumps(d, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> PriceEvent:
        """Parse the JSON wire format written by ``to_json``.

        Raises:
            ValueError: on malformed JSON, a key given twice (JSON parsers disagree on which
                one counts), a missing or unknown field or a schema version this code does not
                know; ``miraikakaku.grammar.FieldError`` (a ValueError) for a
                date or time outside the grammar. Field values are checked by
                ``grammar.check_event``.
        """
        from miraikakaku import grammar

        d: Any = json.loads(text, object_pairs_hook=_unique_keys)
        if not isinstance(d, dict):
            raise ValueError(f"bad PriceEvent JSON: a {type(d).__name__}, not an object")
        if d.get("schema_version") != SCHEMA_VERSION:
            raise ValueError(f"unsupported schema_version {d.get('schema_version')!r}")
        try:
            # the grammar's parsers, not date.fromisoformat (which marshmallow, imported by
            # great-expectations, patches to accept more than ISO dates)
            d["session_date"] = grammar.parse_date(d["session_date"])
            d["event_time"] = grammar.parse_timestamp(d["event_time"])
            flags = d.get("flags", ())
            if not isinstance(flags, list):
                raise TypeError("flags must be a list")
            d["flags"] = tuple(flags)
            d.pop("provenance", None)
            return cls(**d)
        except (KeyError, TypeError) as e:
            raise ValueError(f"bad PriceEvent JSON: {e}") from e


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``json.loads`` hook: an object with a key given twice is an error, not its last value."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"key {key!r} given twice")
        out[key] = value
    return out


@dataclasses.dataclass(frozen=True)
class DeadLetter:
    """A record that could not be processed, kept with why.

    Attributes:
        step: the pipeline step that rejected it (``ParseEvents``, ``ValidateEvents``,
            ``RunInference``).
        reason: a short machine-readable reason (``missing_field``, ``high_below_low``).
        detail: human-readable detail (``field 'open' is empty``).
        payload: the raw input, as text (a CSV line, a JSON object).
        origin: where the payload came from (file name, subscription).
        event_time: the record's event time when it could be read, else None (UTC).
        position: where in ``origin`` the record was: ``line:<n>`` (a CSV record's first
            physical line, 1 = the header), ``row:<n>`` (a Parquet row, from 0),
            ``message:<id>`` (a Pub/Sub message id); empty when the record has no position
            (a model's input window).
    """

    step: str
    reason: str
    detail: str
    payload: str
    origin: str
    event_time: dt.datetime | None = None
    position: str = ""

    @classmethod
    def of_event(cls, step: str, reason: str, detail: str, event: PriceEvent) -> DeadLetter:
        """The dead letter of a parsed event that a later step blocks: the event's JSON as
        the payload, where it was read (``PriceEvent.provenance``; the source when unknown)
        as origin and position."""
        origin, position = event.provenance[:2]
        return cls(step, reason, detail, event.to_json(), origin or event.source,
                   event.event_time, position)

    @property
    def dead_letter_id(self) -> str:
        """Deterministic id: sha1 of step, origin, position and payload.

        Two identical bad lines of one file are two dead letters (their positions differ); a
        replay of the same file, or a redelivery of the same message, stores each once.
        """
        key = f"{self.step}\x1f{self.origin}\x1f{self.payload}"
        if self.position:
            key += f"\x1f{self.position}"
        h = hashlib.sha1(key.encode("utf-8", errors="surrogatepass"))
        return h.hexdigest()


def revision_key(event: PriceEvent, origin_order: dict[str, int] | None = None
                 ) -> tuple[int, int, str, tuple[int, str]]:
    """The order of two revisions of one event id (the correction policy, README "Block or
    flag"): the later revision wins.

    Files carry no revision number, so a file's revision is its place in the run's inputs
    (``origin_order``: the order of ``--input``), then the record's position in the file (its
    line or Parquet row). A Pub/Sub message's revision is its publish time (``provenance[2]``:
    the time the collector published the correction), then its message id (numeric ids by
    value), so which revision wins does not depend on the order in which messages arrive.
    Across runs, the later ingest wins: the stores overwrite and keep the earlier revision as
    history.

    Returns:
        ``(origin index, line or row number, publish time, (len(position), position))``,
        comparable between events of one run; ``(-1, -1, "", (0, ""))`` for an event without
        provenance (it loses to any event with one).
    """
    origin, position, revision = (tuple(event.provenance) + ("", "", ""))[:3]
    if not position:
        return (-1, -1, "", (0, ""))
    kind, _, number = position.partition(":")
    n = int(number) if kind in ("line", "row") and number.isdigit() else -1
    return ((origin_order or {}).get(origin, 0), n, revision, (len(position), position))


@dataclasses.dataclass(frozen=True)
class SupersededRevision:
    """A revision of a bar or trade that a later revision of the same event id replaced.

    Kept as history (``bar_revisions`` in the serving store) and counted as a conflicting
    duplicate, so ``read = stored + dead-lettered + duplicates`` holds and both payloads can be
    inspected.

    Attributes:
        event: the superseded revision (its ``provenance`` says where it was read).
        superseded_by: where the winning revision was read (``{origin} {position}``).
    """

    event: PriceEvent
    superseded_by: str


PREDICTION_ROLES = ("champion", "challenger")
"""Roles of a stored prediction: the champion's is "the" prediction; challengers are compared."""


@dataclasses.dataclass(frozen=True)
class Prediction:
    """The model's forecast of the next session's return for one instrument.

    Attributes:
        instrument_id: exchange-qualified id.
        source: the source whose bars fed the features.
        as_of_date: session date of the last bar in the input window.
        as_of_time: UTC close of that session.
        target_date: the next session date (exchange calendar) the forecast is for.
        base_price: feature price (adjusted close) at ``as_of_date``, quote currency.
        predicted_log_return: forecast ln(P_target / P_as_of).
        predicted_price: ``base_price * exp(predicted_log_return)``, quote currency.
        model_name: model name (``lstm_daily``).
        model_version: version of the model that answered: the integer directory name (as TF
            Serving uses) for a local model, ``vertex-<deployedModelId>`` for a Vertex AI
            endpoint.
        role: ``champion`` (the prediction that reads return by default) or ``challenger``
            (a second model scoring a share of instruments, ``transforms.inference``).

    Raises:
        ValueError: for a role not in ``PREDICTION_ROLES``.
    """

    instrument_id: str
    source: str
    as_of_date: dt.date
    as_of_time: dt.datetime
    target_date: dt.date
    base_price: float
    predicted_log_return: float
    predicted_price: float
    model_name: str
    model_version: str
    role: str = "champion"

    def __post_init__(self) -> None:
        if self.role not in PREDICTION_ROLES:
            raise ValueError(f"prediction role must be one of {PREDICTION_ROLES}, "
                             f"got {self.role!r}")


@dataclasses.dataclass(frozen=True)
class AlertEvent:
    """A market-level alert produced by a rule (matching users' rules is the notifier's job).

    Attributes:
        alert_id: deterministic ``{rule_id}/{instrument_id}/{yyyymmdd}``: a replay alerts once.
        rule_id: id of the rule in the alert-rules config.
        kind: ``price_cross``, ``pct_move`` or ``predicted_move``.
        instrument_id: exchange-qualified id.
        event_time: UTC time of the event that fired the rule.
        session_date: exchange-local session date of that event.
        value: the value that crossed (price in quote currency, or a return as a fraction).
        threshold: the rule's level (same unit as ``value``).
        message: a one-line English description.
    """

    alert_id: str
    rule_id: str
    kind: str
    instrument_id: str
    event_time: dt.datetime
    session_date: dt.date
    value: float
    threshold: float
    message: str
