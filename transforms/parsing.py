"""Parse raw price records (CSV lines or Parquet rows) into ``PriceEvent``s; dead-letter the rest.

``ParseEvents``: ``PCollection[tuple[origin, line | dict]]`` →
``ParseResult(events: PCollection[PriceEvent], dead_letters: PCollection[DeadLetter])``.

The pure function ``parse_fields`` does the work and is unit-tested without Beam; ``iter_file``
applies it to a whole file outside Beam (model training uses it, so training reads exactly what
the pipeline reads).

Accepted columns (case-insensitive, spaces = underscores): ``symbol`` (or ``name``, ``ticker``),
``date`` (``YYYY-MM-DD``, ``YYYY/MM/DD``), ``open``, ``high`` (or MLbot's ``hight``), ``low``,
``close``, ``volume`` (optional), ``adj_close`` (optional), ``source`` (optional; else the file's
default source). Dead-letter reasons: ``malformed_line``, ``missing_field``, ``bad_number``,
``bad_timestamp``, ``bad_symbol``.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import gzip
import io
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from miraikakaku.calendars import get_calendar
from miraikakaku.corporate_actions import raw_price_factor
from miraikakaku.instruments import InstrumentMaster, load_master
from miraikakaku.schema import SCHEMA_VERSION, DeadLetter, PriceEvent, make_event_id
from transforms import progress

__all__ = [
    "ParseError",
    "ParseEvents",
    "ParseResult",
    "FileSpec",
    "file_spec",
    "parse_fields",
    "parse_line",
    "iter_file",
    "STEP",
]

STEP = "ParseEvents"

_ALIASES = {"name": "symbol", "ticker": "symbol", "hight": "high", "adjclose": "adj_close",
            "timestamp": "date"}  # keys without underscores
_REQUIRED = ("symbol", "date", "open", "high", "low", "close")

# Known files in ../shared/data without a source column: their source name.
_KNOWN_SOURCES = {"us_daily_sp500_5yr_2013_2018": "sp500_5yr", "all_stocks_5yr": "sp500_5yr",
                  "us_daily_alphavantage_1999_2021": "alphavantage_daily"}


class ParseError(ValueError):
    """A record that cannot become a PriceEvent.

    Attributes:
        reason: machine-readable dead-letter reason.
        detail: human-readable explanation.
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclasses.dataclass(frozen=True)
class FileSpec:
    """How to read one input file.

    Attributes:
        path: file path (``.csv``, ``.csv.gz`` or ``.parquet``).
        origin: short name used in dead letters (the file's base name).
        columns: normalized column names of a CSV file (None for Parquet).
        default_source: source name for rows without a ``source`` column.
        interval: ``1d``, ``1h``, ``1m``, ``1s`` or ``tick`` (see ``parse_fields``).
    """

    path: str
    origin: str
    columns: tuple[str, ...] | None
    default_source: str
    interval: str = "1d"


def _norm_col(name: str) -> str:
    key = name.strip().lower().replace(" ", "_").replace("-", "_")
    return _ALIASES.get(key.replace("_", ""), key)


def _stem(path: str) -> str:
    base = os.path.basename(path)
    for ext in (".gz", ".csv", ".parquet", ".normalized"):
        if base.endswith(ext):
            base = base[: -len(ext)]
    return base


_INTERVAL_WORDS = (("tick", "tick"), ("second", "1s"), ("minute", "1m"), ("hour", "1h"))


def file_spec(path: str | Path, default_source: str | None = None,
              interval: str | None = None) -> FileSpec:
    """Inspect a file's header (a cheap preflight) and say how to read it.

    The interval comes from ``interval`` or the file name (``tick``, ``second``, ``minute``,
    ``hour``; else daily); a header with ``price`` and ``size`` is a trade file.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: a CSV file without a header or without the required columns.
    """
    path = str(path)
    remote = "://" in path
    if not (FileSystems.exists(path) if remote else os.path.exists(path)):
        raise FileNotFoundError(path)
    stem = _stem(path)
    source = default_source or _KNOWN_SOURCES.get(stem) or (
        "lean" if "_lean" in stem else "user")
    if interval is None:
        interval = next((iv for word, iv in _INTERVAL_WORDS if word in stem.lower()), "1d")
    if path.endswith(".parquet"):
        return FileSpec(path, os.path.basename(path), None, source, interval)
    if remote:  # gs://… (a backfill from Cloud Storage): Beam's filesystems, same decoding
        with FileSystems.open(path) as raw:  # decompresses .gz by extension
            header = io.TextIOWrapper(raw, encoding="utf-8", newline="").readline()
    else:
        opener = gzip.open if path.endswith(".gz") else open
        with opener(path, "rt", encoding="utf-8", newline="") as f:
            header = f.readline()
    if not header.strip():
        raise ValueError(f"{path}: empty file or no header line")
    columns = tuple(_norm_col(c) for c in next(csv.reader([header])))
    if "price" in columns:
        interval = "tick"
    required = ("symbol", "date", "price", "size") if interval == "tick" else _REQUIRED
    missing = [c for c in required if c not in columns]
    if missing:
        raise ValueError(f"{path}: header lacks required columns {missing} (has {list(columns)})")
    return FileSpec(path, os.path.basename(path), columns, source, interval)


def _text(value: Any) -> str:
    return "" if value is None else str(value).strip()


def _number(fields: Mapping[str, Any], name: str, *, required: bool) -> float | None:
    raw = _text(fields.get(name))
    if not raw:
        if required:
            raise ParseError("missing_field", f"field {name!r} is empty")
        return None
    try:
        value = float(raw)
    except ValueError:
        raise ParseError("bad_number", f"field {name!r} is not a number: {raw[:40]!r}") from None
    if not math.isfinite(value):
        raise ParseError("bad_number", f"field {name!r} is not finite: {raw[:40]!r}")
    return value


def _date(raw: str) -> dt.date:
    text = raw.strip()[:10].replace("/", "-")
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise ParseError("bad_timestamp", f"unparseable date {raw[:40]!r}") from None


INTERVALS = {"1d": None, "1h": 3600, "1m": 60, "1s": 1, "tick": 0}
"""Supported intervals and their length in seconds (None: a session)."""


def _timestamp(raw: str) -> dt.datetime:
    try:
        value = dt.datetime.fromisoformat(raw.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ParseError("bad_timestamp", f"unparseable timestamp {raw[:40]!r}") from None
    if value.tzinfo is None:
        raise ParseError("bad_timestamp", f"timestamp without a UTC offset: {raw[:40]!r}")
    return value.astimezone(dt.timezone.utc)


def parse_fields(fields: Mapping[str, Any], *, default_source: str, master: InstrumentMaster,
                 interval: str = "1d", sequence: int = 0) -> PriceEvent:
    """Turn one record (normalized column name → value) into a ``PriceEvent``.

    Three shapes are accepted:

    * a daily bar (``interval="1d"``): ``date`` is the session date; the event time is the
      session close from the exchange calendar;
    * an intraday bar (``1h``, ``1m``, ``1s``): ``date`` is the bar's start as ISO 8601 with a
      UTC offset (Lean's New York times); the event time is the bar's end (start + interval),
      when the bar is complete;
    * a trade (columns ``price`` and ``size``, or ``interval="tick"``): the event time is the
      trade time; open = high = low = close = price and volume = size; Lean's ``suspicious``
      marker becomes the flag ``suspicious``.

    Args:
        fields: column → value (text or number); see the module docstring for the names.
        default_source: source when the record has none.
        master: instrument reference data for ids, currency and calendar.
        interval: the file's interval (``INTERVALS``); trades are recognized by their columns.
        sequence: per-source sequence number (trades sharing a timestamp differ by it); a
            ``sequence`` field in the record wins.

    The symbol resolves to an instrument by the instrument master; a reused ticker (``FB``,
    ``WM``, ``GOOG``: ``InstrumentMaster.needs_date``) by the row's local date, or by the date
    whose tickers the source uses (``reference/symbology.csv``), so Lean's FB rows of 1999-2003
    belong to ``XNYS:FB-1999`` and its later rows to ``XNAS:FB``.

    Returns:
        The event, with calendar flags (``not_a_session``, ``calendar_estimated``) and
        ``unknown_instrument`` when the symbol was resolved by rule. A bar of a raw source
        without an adjusted close (Lean) gets ``adj_close = close × factor`` from the data's
        corporate actions (``miraikakaku.corporate_actions.raw_price_factor``: Lean's factor and
        map files), so its feature price is adjusted; None when no factor file covers it.

    Raises:
        ParseError: with reason ``missing_field``, ``bad_number``, ``bad_timestamp`` or
            ``bad_symbol``.
    """
    is_trade = "price" in fields or interval == "tick"
    required = ("symbol", "date", "price", "size") if is_trade else _REQUIRED
    for name in required:
        if not _text(fields.get(name)):
            raise ParseError("missing_field", f"field {name!r} is empty")
    source = _text(fields.get("source")) or default_source
    symbol = _text(fields["symbol"])
    on = None
    if master.needs_date(symbol):  # a reused ticker: the row's date (or the source's) decides
        on = master.symbology.get(source) or _date(_text(fields["date"]))
    try:
        inst = master.resolve(symbol, on)
    except ValueError as e:
        raise ParseError("bad_symbol", str(e)) from None
    if _text(fields.get("sequence")):
        seq_value = _number(fields, "sequence", required=True)
        sequence = int(seq_value)  # type: ignore[arg-type]
    flags: tuple[str, ...] = ()
    if is_trade:
        interval = "tick"
        start = _timestamp(_text(fields["date"]))
        o = h = lo = c = _number(fields, "price", required=True)
        v = _number(fields, "size", required=True)
        adj = None
        event_time = start
        if _text(fields.get("suspicious")) not in ("", "0"):
            flags = ("suspicious",)
        start_text = start.strftime("%Y%m%dT%H%M%S.") + f"{start.microsecond // 1000:03d}"
    else:
        o = _number(fields, "open", required=True)
        h = _number(fields, "high", required=True)
        lo = _number(fields, "low", required=True)
        c = _number(fields, "close", required=True)
        v = _number(fields, "volume", required=False)
        adj = _number(fields, "adj_close", required=False)
        if interval == "1d":
            day = _date(_text(fields["date"]))
            event_time, flags = get_calendar(inst.calendar).session_close(day)
            start_text = f"{day.year:04d}{day.month:02d}{day.day:02d}"
        else:
            if interval not in INTERVALS:
                raise ValueError(f"unknown interval {interval!r}")
            start = _timestamp(_text(fields["date"]))
            event_time = start + dt.timedelta(seconds=INTERVALS[interval] or 0)
            start_text = start.strftime("%Y%m%dT%H%M%S")
    if interval != "1d":
        tz = get_calendar(inst.calendar).tz
        day = start.astimezone(tz).date()
    if adj is None and not is_trade:  # raw prices without an adjusted close: actions' factors
        factor = raw_price_factor(source, symbol, day)
        if factor is not None:
            adj = c * factor  # type: ignore[operator]
    if not inst.known:
        flags = (*flags, "unknown_instrument")
    return PriceEvent(
        schema_version=SCHEMA_VERSION,
        event_id=make_event_id(source, inst.instrument_id, interval, start_text, sequence),
        instrument_id=inst.instrument_id,
        symbol=inst.symbol,
        source=source,
        sequence=sequence,
        interval=interval,
        session_date=day,
        event_time=event_time,
        open=o, high=h, low=lo, close=c,  # type: ignore[arg-type]
        volume=v,
        adj_close=adj,
        currency=inst.currency,
        flags=flags,
    )


def parse_line(line: str, columns: Sequence[str], *, default_source: str,
               master: InstrumentMaster, interval: str = "1d", sequence: int = 0) -> PriceEvent:
    """Parse one CSV data line with the file's header ``columns``.

    Raises:
        ParseError: ``malformed_line`` when the line is not a CSV row with one value per
            column, else as ``parse_fields``.
    """
    try:
        values = next(csv.reader([line]))
    except (csv.Error, StopIteration) as e:
        raise ParseError("malformed_line", f"not a CSV row: {e}") from None
    if len(values) != len(columns):
        raise ParseError("malformed_line",
                         f"{len(values)} values for {len(columns)} columns")
    fields = dict(zip(columns, values, strict=True))
    return parse_fields(fields, default_source=default_source, master=master, interval=interval,
                        sequence=sequence)


def iter_file(spec: FileSpec, master: InstrumentMaster | None = None
              ) -> Iterator[PriceEvent | DeadLetter]:
    """Parse a whole file outside Beam, yielding events and dead letters in file order.

    Trades get a per-source sequence number: the row's position among the rows of its symbol
    in the file (0, 1, 2, ...), so trades sharing a timestamp get distinct, stable event ids and a
    re-read of the same file gives the same ids. Bars keep sequence 0.
    """
    master = master or load_master()
    specs = {spec.origin: spec}
    counters: dict[str, int] = {}

    def numbered(payload: str | dict) -> PriceEvent | DeadLetter:
        if isinstance(payload, str):
            symbol = payload.split(",", 1)[0] if spec.columns and spec.columns[0] == "symbol" \
                else ""
        else:
            symbol = str(payload.get("symbol", ""))
        seq = 0
        if spec.interval == "tick":  # bars are identified by their start; trades by sequence
            seq = counters.get(symbol, 0)
            counters[symbol] = seq + 1
        return _parse_one((spec.origin, payload), specs, master, seq)

    if spec.columns is None:
        import pyarrow.parquet as pq

        for row in pq.read_table(spec.path).to_pylist():
            yield numbered(row)
        return
    opener = gzip.open if spec.path.endswith(".gz") else open
    with opener(spec.path, "rt", encoding="utf-8", newline="") as f:
        next(f, None)
        for line in f:
            line = line.rstrip("\r\n")
            if line:
                yield numbered(line)


def _parse_one(element: tuple[str, str | dict], specs: Mapping[str, FileSpec],
               master: InstrumentMaster, sequence: int = 0) -> PriceEvent | DeadLetter:
    origin, payload = element
    spec = specs[origin]
    try:
        if isinstance(payload, str):
            assert spec.columns is not None
            return parse_line(payload, spec.columns, default_source=spec.default_source,
                              master=master, interval=spec.interval, sequence=sequence)
        fields = {_norm_col(k): v for k, v in payload.items()}
        return parse_fields(fields, default_source=spec.default_source, master=master,
                            interval=spec.interval, sequence=sequence)
    except ParseError as e:
        text = payload if isinstance(payload, str) else repr(payload)
        return DeadLetter(STEP, e.reason, e.detail, text, origin)


class ParseResult(NamedTuple):
    """Outputs of ``ParseEvents``."""

    events: beam.PCollection
    dead_letters: beam.PCollection


class _ParseEventFn(beam.DoFn):
    DEAD_LETTER = "dead_letter"

    def __init__(self, specs: Mapping[str, FileSpec], default_mic: str) -> None:
        self._specs = dict(specs)
        self._default_mic = default_mic
        self._read = progress.counter("ParseEvents", "events_read")
        self._bad = progress.counter("ParseEvents", "parse_errors")

    def setup(self) -> None:
        self._master = load_master(self._default_mic)

    def process(self, element: tuple[str, str | dict]):
        self._read.inc()
        progress.tick("read")
        out = _parse_one(element, self._specs, self._master)
        if isinstance(out, DeadLetter):
            self._bad.inc()
            yield beam.pvalue.TaggedOutput(self.DEAD_LETTER, out)
        else:
            yield out


class ParseEvents(beam.PTransform):
    """``PCollection[tuple[origin, str | dict]]`` → ``ParseResult(events, dead_letters)``.

    Args:
        specs: ``FileSpec`` per origin (from ``file_spec``), giving columns and default source.
        default_mic: MIC for unknown non-Tokyo symbols.
    """

    def __init__(self, specs: Mapping[str, FileSpec], default_mic: str = "XNYS") -> None:
        super().__init__()
        self._specs = dict(specs)
        self._default_mic = default_mic

    def expand(self, pcoll: beam.PCollection) -> ParseResult:
        out = pcoll | "Parse" >> beam.ParDo(
            _ParseEventFn(self._specs, self._default_mic)).with_outputs(
                _ParseEventFn.DEAD_LETTER, main="events")
        return ParseResult(out.events, out[_ParseEventFn.DEAD_LETTER])


class ReadPriceFiles(beam.PTransform):
    """``PBegin`` → ``PCollection[tuple[origin, str | dict]]``: read CSV (optionally gzip) and
    Parquet files inside the pipeline (never ``beam.Create`` over big lists).

    Args:
        specs: the files, from ``file_spec``.
    """

    def __init__(self, specs: Sequence[FileSpec]) -> None:
        super().__init__()
        self._specs = list(specs)

    def expand(self, pbegin):
        parts = []
        for spec in self._specs:
            label = f"Read[{spec.origin}]"
            if spec.columns is None:
                rows = pbegin | label >> beam.io.ReadFromParquet(spec.path)
            else:
                rows = (pbegin | label >> beam.io.ReadFromText(spec.path, skip_header_lines=1)
                        | f"DropBlank[{spec.origin}]" >> beam.Filter(lambda s: s.strip() != ""))
            parts.append(rows | f"Tag[{spec.origin}]" >> beam.Map(
                lambda r, o=spec.origin: (o, r)))
        return tuple(parts) | "FlattenInputs" >> beam.Flatten()


__all__ += ["ReadPriceFiles"]
