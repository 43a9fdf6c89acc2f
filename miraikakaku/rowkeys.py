"""Row keys for the serving store (Bigtable layout, also used by the embedded SQLite store).

Keys start with the instrument and sort by time within it (ARCHITECTURE.md, "Stores"), so a
range scan over one instrument is a prefix scan:

* bar:         ``XNAS:AAPL#1d#20180207``
* prediction:  ``XNAS:AAPL#pred#1d#20180207`` (one row per as-of session; model in the columns)
* latest quote: ``XNAS:AAPL#latest``

Timestamps in keys are the exchange-local session date for daily bars (``YYYYMMDD``), which sorts
lexicographically in time order.
"""

from __future__ import annotations

import datetime as dt

__all__ = ["bar_key", "prediction_key", "latest_key", "parse_bar_key", "scan_range"]

SEP = "#"


def _yyyymmdd(day: dt.date) -> str:
    # explicit zero padding: strftime does not pad years before 1000 on glibc
    return f"{day.year:04d}{day.month:02d}{day.day:02d}"


def _check_instrument(instrument_id: str) -> None:
    if not instrument_id or SEP in instrument_id:
        raise ValueError(f"invalid instrument id for a row key: {instrument_id!r}")


def bar_key(instrument_id: str, interval: str, session_date: dt.date) -> str:
    """Row key of a bar: ``{instrument_id}#{interval}#{YYYYMMDD}``.

    Raises:
        ValueError: if the instrument id is empty or contains ``#``.
    """
    _check_instrument(instrument_id)
    return f"{instrument_id}{SEP}{interval}{SEP}{_yyyymmdd(session_date)}"


def prediction_key(instrument_id: str, interval: str, as_of_date: dt.date) -> str:
    """Row key of a prediction made at the close of ``as_of_date``."""
    _check_instrument(instrument_id)
    return f"{instrument_id}{SEP}pred{SEP}{interval}{SEP}{_yyyymmdd(as_of_date)}"


def latest_key(instrument_id: str) -> str:
    """Row key of the latest quote of an instrument."""
    _check_instrument(instrument_id)
    return f"{instrument_id}{SEP}latest"


def parse_bar_key(key: str) -> tuple[str, str, dt.date]:
    """Inverse of ``bar_key``.

    Raises:
        ValueError: if ``key`` is not a bar key.
    """
    parts = key.split(SEP)
    if len(parts) != 3:
        raise ValueError(f"not a bar key: {key!r}")
    return parts[0], parts[1], dt.datetime.strptime(parts[2], "%Y%m%d").date()


def scan_range(prefix_key_start: str, prefix_key_end: str) -> tuple[str, str]:
    """Half-open ``[start, end)`` key range covering both bounds inclusively (end + ``\\xff``)."""
    return prefix_key_start, prefix_key_end + "\xff"
