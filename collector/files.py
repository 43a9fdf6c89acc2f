"""Read the events to publish from a price file, filtered by symbol, UTC time window and count.

``events_from_file(path, symbols=["IBM"], start=..., end=...)`` runs the pipeline's own parser
(``transforms.parsing.iter_file`` over ``file_spec(path)``, which infers the interval from the file
name: tick, second, minute or hour), so the collector publishes exactly the events and event ids the
batch pipeline would read: trades carry the per-symbol sequence number of the whole file, so a
filtered replay keeps the ids of a full one. Rows the parser rejects come out as ``DeadLetter``s, to
be counted by the publisher, never dropped. Example: the first hour of IBM's 2013-10-07 regular
session is ``start=2013-10-07T13:30Z, end=2013-10-07T14:30Z`` (09:30-10:30 New York, EDT).
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
from collections.abc import Iterable, Iterator
from pathlib import Path

from miraikakaku.instruments import InstrumentMaster
from miraikakaku.schema import DeadLetter, PriceEvent, utc
from transforms.parsing import FileSpec, file_spec, iter_file

__all__ = ["events_from_file", "parse_utc"]


def parse_utc(text: str) -> dt.datetime:
    """Parse an ISO 8601 date-time with a UTC offset or ``Z`` into an aware UTC datetime.

    Raises:
        ValueError: unparseable, or without an offset (a time zone is never guessed).
    """
    value = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    if value.tzinfo is None:
        raise ValueError(f"{text!r} has no UTC offset: add 'Z' or e.g. '-04:00'")
    return value.astimezone(dt.timezone.utc)


def _dead_letter_coordinates(dl: DeadLetter, spec: FileSpec
                             ) -> tuple[str | None, dt.datetime | None]:
    """Best-effort symbol and UTC time of a rejected CSV row (None where unreadable)."""
    if spec.columns is None:
        return None, dl.event_time
    try:
        values = next(csv.reader([dl.payload]))
    except (csv.Error, StopIteration):
        return None, dl.event_time
    fields = dict(zip(spec.columns, values, strict=False))  # a malformed row may be short
    symbol = fields.get("symbol", "").strip().upper() or None
    when = dl.event_time
    raw = fields.get("date", "").strip()
    if when is None and raw:
        try:
            when = parse_utc(raw)
        except ValueError:
            when = None
    return symbol, when


def events_from_file(
    path: str | Path,
    *,
    symbols: Iterable[str] | None = None,
    start: dt.datetime | None = None,
    end: dt.datetime | None = None,
    limit: int | None = None,
    source: str | None = None,
    master: InstrumentMaster | None = None,
    sorted_input: bool = False,
) -> Iterator[PriceEvent | DeadLetter]:
    """Yield a file's events (and its rejected rows) in file order, filtered.

    Args:
        path: a price file (``.csv``, ``.csv.gz``, ``.parquet``) that ``file_spec`` accepts.
        symbols: keep these tickers or instrument ids (``IBM``, ``XNYS:IBM``; case-insensitive);
            None keeps all.
        start: keep events with ``event_time >= start`` (aware; compared in UTC). For trades the
            event time is the trade time, for intraday bars the bar's end.
        end: keep events with ``event_time < end`` (aware).
        limit: stop after this many ``PriceEvent``s (dead letters do not count).
        source: source name for rows without a ``source`` column (default: from the file name).
        master: instrument reference data (default: the packaged one).
        sorted_input: the rows of each symbol are in ascending time, as in
            ../shared/data/normalized; then reading stops once every requested symbol is past
            ``end``. Needs ``symbols`` and ``end``; otherwise the whole file is read.

    Yields:
        ``PriceEvent``s inside the filter, and ``DeadLetter``s for rejected rows unless their row
        shows a symbol or time outside the filter (a row whose symbol or time cannot be read is
        always yielded, so a bad row is never lost by filtering). A dead letter whose time could
        be read carries it as ``event_time``.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: a naive ``start``/``end``, ``limit < 0``, or a header ``file_spec`` rejects.
    """
    start = utc(start) if start is not None else None
    end = utc(end) if end is not None else None
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    wanted = {s.strip().upper() for s in symbols} if symbols is not None else None
    spec = file_spec(path, source)
    done: set[str] = set()
    stop_early = sorted_input and wanted is not None and end is not None
    emitted = 0
    if limit == 0:
        return
    for item in iter_file(spec, master):
        if isinstance(item, DeadLetter):
            symbol, when = _dead_letter_coordinates(item, spec)
            if wanted is not None and symbol is not None and symbol not in wanted:
                continue
            if when is not None and ((start is not None and when < start)
                                     or (end is not None and when >= end)):
                continue
            if when is not None and item.event_time is None:
                item = dataclasses.replace(item, event_time=when)
            yield item
            continue
        keys = {item.symbol.upper(), item.instrument_id.upper()}
        if wanted is not None and not keys & wanted:
            continue
        if end is not None and item.event_time >= end:
            if stop_early:
                assert wanted is not None
                done |= keys & wanted
                if done >= wanted:
                    return
            continue
        if start is not None and item.event_time < start:
            continue
        yield item
        emitted += 1
        if limit is not None and emitted >= limit:
            return
