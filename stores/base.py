"""The serving-store interface shared by the pipeline sinks and the API.

Writes go through ``write_batch`` (one call = one atomic batch; idempotent: rewriting the same
records leaves the same rows). Reads are point reads and key-range scans, which Bigtable serves the
same way, so the API does not care which store is behind it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable
from typing import Protocol, runtime_checkable

from miraikakaku.instruments import Instrument
from miraikakaku.schema import AlertEvent, DeadLetter, Prediction

__all__ = ["BarFlag", "BarRow", "QuoteRow", "PredictionRow", "RevisionRow", "ServingStore",
           "NEIGHBOUR_FLAGS", "EVENT_FLAGS"]

NEIGHBOUR_FLAGS = frozenset({"gap", "large_move", "history_reset", "source_switch",
                             "split_candidate"})
"""Flags a bar gets from its neighbours in the ordered per-instrument state
(``transforms.ordering``), written as ``BarFlag`` records. Every other flag is the bar's own."""

EVENT_FLAGS = frozenset({
    "not_a_session", "calendar_estimated", "unknown_instrument", "suspicious",  # parsing
    "ohlc_inconsistent", "zero_volume", "extreme_range", "outside_session",  # validation
    "time_not_increasing", "duplicate_key", "intraday_gap",
})
"""The flags a ``PriceEvent`` carries itself (parsing, validation, bar aggregation): a new
revision of a bar replaces them (``tests/unit/test_corrections.py`` keeps this list complete)."""


@dataclasses.dataclass(frozen=True)
class BarFlag:
    """A quality flag on a stored bar (flag severity: stored, not blocked).

    Attributes:
        row_key: the bar's row key (``miraikakaku.rowkeys.bar_key``).
        source: the bar's source.
        flag: machine-readable flag name (``ohlc_inconsistent``, ``large_move``).
        detail: human-readable detail.
    """

    row_key: str
    source: str
    flag: str
    detail: str = ""


@dataclasses.dataclass(frozen=True)
class BarRow:
    """A stored OHLCV bar as read back (prices in ``currency``; times UTC)."""

    row_key: str
    instrument_id: str
    source: str
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
    flags: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class RevisionRow:
    """A superseded revision of a stored bar or trade (the correction policy, README "Block or
    flag"), as read back: what was read, where, and what replaced it.

    Attributes:
        row_key: the bar's row key (``miraikakaku.rowkeys.event_key``).
        source: the bar's source.
        event_id: the event id both revisions share.
        payload: the superseded revision as JSON (``PriceEvent.to_json`` when the pipeline
            superseded it; its stored prices and event time when a later run's write did).
        origin, position: where the superseded revision was read (file and ``line:<n>``,
            subscription and ``message:<id>``; ``serving store`` for a bar a later run replaced).
        superseded_by: where the winning revision was read (or ``a later ingest``).
    """

    row_key: str
    source: str
    event_id: str
    payload: str
    origin: str
    position: str
    superseded_by: str


@dataclasses.dataclass(frozen=True)
class QuoteRow:
    """The latest bar of an instrument (best source on ties), as read back."""

    instrument_id: str
    source: str
    session_date: dt.date
    event_time: dt.datetime
    open: float
    high: float
    low: float
    close: float
    volume: float | None
    adj_close: float | None
    currency: str


PredictionRow = Prediction
"""A stored prediction reads back as the ``Prediction`` that was written."""


@runtime_checkable
class ServingStore(Protocol):
    """What the pipeline writes to and the API reads from."""

    def write_batch(self, records: Iterable[object]) -> int:
        """Write ``Instrument``, ``PriceEvent``, ``BarFlag``, ``Prediction``, ``AlertEvent`` and
        ``DeadLetter`` records atomically; returns the number of records written.

        Raises:
            TypeError: for a record of any other type (nothing in the batch is written).
        """

    def list_instruments(self) -> list[Instrument]:
        """All instruments that have data, sorted by id."""

    def get_instrument(self, symbol_or_id: str) -> Instrument | None:
        """Find an instrument by id (``XNAS:AAPL``) or alias (``AAPL``), case-insensitively."""

    def sources(self, instrument_id: str) -> list[str]:
        """The sources that delivered bars for the instrument."""

    def get_quote(self, instrument_id: str) -> QuoteRow | None:
        """The latest bar (highest event time, then best source rank)."""

    def get_quote_as_of(self, instrument_id: str, as_of: dt.datetime) -> QuoteRow | None:
        """The latest bar with ``event_time <= as_of`` (aware UTC), any interval, best source
        rank on ties: the quote as it was at ``as_of`` (delayed quotes)."""

    def get_bars(self, instrument_id: str, *, interval: str = "1d", start: dt.date | None = None,
                 end: dt.date | None = None, source: str | None = None,
                 limit: int = 10_000, after: tuple[str, str] | None = None) -> list[BarRow]:
        """Bars with ``start <= session_date <= end`` in ``(row_key, source)`` order (a row-key
        range scan); with ``after=(row_key, source)`` only the bars strictly after that key
        (keyset pagination)."""

    def get_predictions(self, instrument_id: str, *, start: dt.date | None = None,
                        end: dt.date | None = None, limit: int = 10_000,
                        after: tuple[str, str, str] | None = None) -> list[PredictionRow]:
        """Predictions by as-of date in time order (``(row_key, model_name, model_version)``
        order); with ``after`` only those strictly after that key (keyset pagination)."""

    def get_alerts(self, *, instrument_id: str | None = None, since: dt.datetime | None = None,
                   limit: int = 1_000,
                   after: tuple[dt.datetime, str] | None = None) -> list[AlertEvent]:
        """Alert events with ``event_time >= since``, newest first (then by alert id); with
        ``after=(event_time, alert_id)`` only those strictly after it in that order."""

    def get_dead_letters(self, *, reason: str | None = None,
                         limit: int = 1_000) -> list[DeadLetter]:
        """Dead letters, optionally of one reason."""

    def get_bar_revisions(self, instrument_id: str, *, interval: str = "1d",
                          start: dt.date | None = None, end: dt.date | None = None,
                          source: str | None = None, limit: int = 1_000) -> list[RevisionRow]:
        """Superseded revisions of the bars with ``start <= session date <= end``, in row-key
        and source order (at most ``limit``)."""

    def ping(self) -> bool:
        """Cheap health check: True when the store answers (no table scans)."""

    def counts(self) -> dict[str, int]:
        """Row counts per table (for summaries and reconciliation)."""

