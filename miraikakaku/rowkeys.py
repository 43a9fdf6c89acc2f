"""Row keys for the serving store (Bigtable layout, also used by the embedded SQLite store).

Keys start with the instrument and sort by time within it (ARCHITECTURE.md, "Stores"), so a
range scan over one instrument is a prefix scan:

* daily bar:   ``XNAS:AAPL#1d#20180207`` (exchange-local session date)
* intraday bar: ``XNYS:IBM#1m#20131007T133000`` (bar start, UTC)
* trade:       ``XNYS:IBM#tick#20131007T133000.270#000042`` (trade time UTC, per-source sequence)
* prediction:  ``XNAS:AAPL#pred#1d#20180207`` (the champion's: one row per as-of session, the
  model name and version in the columns), ``XNAS:AAPL#pred#1d#20180207#challenger`` (challenger
  predictions of the same session sort right after it; a range scan reads both)
* latest quote: ``XNAS:AAPL#latest``

Timestamps in keys are the exchange-local session date for daily bars (``YYYYMMDD``), which sorts
lexicographically in time order.
"""

from __future__ import annotations

import datetime as dt

__all__ = ["bar_key", "intraday_key", "trade_key", "event_key", "prediction_key", "latest_key",
           "parse_bar_key", "prediction_role", "scan_range"]

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


def intraday_key(instrument_id: str, interval: str, start: dt.datetime) -> str:
    """Row key of an intraday bar: ``{instrument_id}#{interval}#{YYYYMMDDTHHMMSS}`` (start, UTC)."""
    _check_instrument(instrument_id)
    s = start.astimezone(dt.timezone.utc)
    return f"{instrument_id}{SEP}{interval}{SEP}{_yyyymmdd(s)}T{s:%H%M%S}"


def trade_key(instrument_id: str, time: dt.datetime, sequence: int) -> str:
    """Row key of a trade: ``{instrument_id}#tick#{YYYYMMDDTHHMMSS.fff}#{sequence:06d}`` (UTC).

    Raises:
        ValueError: for a negative sequence number.
    """
    _check_instrument(instrument_id)
    if sequence < 0:
        raise ValueError(f"negative sequence {sequence}")
    t = time.astimezone(dt.timezone.utc)
    return (f"{instrument_id}{SEP}tick{SEP}{_yyyymmdd(t)}T{t:%H%M%S}.{t.microsecond // 1000:03d}"
            f"{SEP}{sequence:06d}")


def event_key(event) -> str:
    """Row key of a ``PriceEvent`` by its interval (daily bar, intraday bar or trade)."""
    if event.interval == "1d":
        return bar_key(event.instrument_id, "1d", event.session_date)
    if event.interval == "tick":
        return trade_key(event.instrument_id, event.event_time, event.sequence)
    seconds = {"1h": 3600, "1m": 60, "1s": 1}[event.interval]
    return intraday_key(event.instrument_id, event.interval,
                        event.event_time - dt.timedelta(seconds=seconds))


def prediction_key(instrument_id: str, interval: str, as_of_date: dt.date,
                   role: str = "champion") -> str:
    """Row key of a prediction made at the close of ``as_of_date``.

    The champion's key is ``{instrument_id}#pred#{interval}#{YYYYMMDD}`` (as before roles
    existed, so stored champion rows keep their keys); any other role appends ``#{role}``, so a
    challenger never overwrites the champion and sorts right after it.

    Raises:
        ValueError: if the instrument id is empty or contains ``#``, or the role is empty or
            contains ``#``.
    """
    _check_instrument(instrument_id)
    if not role or SEP in role:
        raise ValueError(f"invalid prediction role for a row key: {role!r}")
    key = f"{instrument_id}{SEP}pred{SEP}{interval}{SEP}{_yyyymmdd(as_of_date)}"
    return key if role == "champion" else f"{key}{SEP}{role}"


def prediction_role(key: str) -> str:
    """The role in a ``prediction_key``: ``champion`` when the key has no role suffix.

    Raises:
        ValueError: if ``key`` is not a prediction key.
    """
    parts = key.split(SEP)
    if len(parts) not in (4, 5) or parts[1] != "pred":
        raise ValueError(f"not a prediction key: {key!r}")
    return parts[4] if len(parts) == 5 else "champion"


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
