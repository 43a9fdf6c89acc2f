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
import os
import zlib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from miraikakaku import grammar
from miraikakaku.calendars import get_calendar
from miraikakaku.corporate_actions import raw_price_factor
from miraikakaku.grammar import EventLimits, FieldError
from miraikakaku.instruments import InstrumentMaster, load_master
from miraikakaku.schema import (
    SCHEMA_VERSION,
    DeadLetter,
    PriceEvent,
    event_start_text,
    make_event_id,
)
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


ParseError = FieldError
"""A record that cannot become a PriceEvent (``miraikakaku.grammar.FieldError``: ``reason``,
``detail``)."""


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
    key = name.strip().lstrip("\ufeff").lower().replace(" ", "_").replace("-", "_")
    return _ALIASES.get(key.replace("_", ""), key)


def _stem(path: str) -> str:
    base = os.path.basename(path)
    for ext in (".gz", ".csv", ".parquet", ".normalized"):
        if base.endswith(ext):
            base = base[: -len(ext)]
    return base


_INTERVAL_WORDS = (("tick", "tick"), ("second", "1s"), ("minute", "1m"), ("hour", "1h"))


def _check_columns(path: str, columns: Sequence[str], interval: str) -> None:
    required = ("symbol", "date", "price", "size") if interval == "tick" or "price" in columns \
        else _REQUIRED
    missing = [c for c in required if c not in columns]
    if missing:
        raise ValueError(f"{path}: header lacks required columns {missing} (has {list(columns)})")
    repeated = sorted({c for c in columns if columns.count(c) > 1})
    if repeated:
        raise ValueError(f"{path}: header repeats columns {repeated}")


def _parquet_columns(path: str) -> tuple[str, ...]:
    import pyarrow.parquet as pq

    try:
        with _open_binary(path) as raw:
            pf = pq.ParquetFile(raw)
            names = pf.schema_arrow.names
            # decode every page once (as _check_gzip reads a gzip to its end), so a corrupt
            # page fails here, before any row is read, not half-way through the run
            for _ in pf.iter_batches(batch_size=65536):
                pass
    except Exception as e:  # noqa: BLE001 - pyarrow raises several types for a bad file
        raise ValueError(f"{path}: not a readable Parquet file: {type(e).__name__}: {e}") from None
    return tuple(_norm_col(n) for n in names)


def _check_gzip(path: str) -> None:
    """Read a gzip file to its end once, so a truncated or corrupt one fails before any row."""
    try:
        with gzip.open(path, "rb") as f:
            while f.read(1 << 22):
                pass
    except (OSError, EOFError, zlib.error) as e:
        raise ValueError(f"{path}: not a complete gzip file ({type(e).__name__}: {e})") from None


def file_spec(path: str | Path, default_source: str | None = None,
              interval: str | None = None) -> FileSpec:
    """Inspect a file's header (a cheap preflight) and say how to read it.

    The interval comes from ``interval`` or the file name (``tick``, ``second``, ``minute``,
    ``hour``; else daily); a header with ``price`` and ``size`` is a trade file.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: a directory; a truncated or corrupt gzip or Parquet file; a CSV file
            without a (UTF-8, CSV) header; a file without the required columns or with a
            repeated one; a ``default_source`` outside the source grammar.
    """
    path = str(path)
    remote = "://" in path
    if not (FileSystems.exists(path) if remote else os.path.exists(path)):
        raise FileNotFoundError(path)
    if not remote and os.path.isdir(path):
        raise ValueError(f"{path}: is a directory, not a price file")
    stem = _stem(path)
    try:
        source = grammar.normalize_source(default_source or _KNOWN_SOURCES.get(stem) or (
            "lean" if "_lean" in stem else "user"))
    except FieldError as e:
        raise ValueError(f"--source: {e.detail}") from None
    if interval is None:
        interval = next((iv for word, iv in _INTERVAL_WORDS if word in stem.lower()), "1d")
    if path.endswith(".parquet"):
        columns = _parquet_columns(path)
        _check_columns(path, columns, interval)
        return FileSpec(path, os.path.basename(path), None, source, interval)
    if path.endswith(".gz") and not remote:
        _check_gzip(path)
    try:
        with _open_binary(path) as raw:
            first = next(iter_records(raw), None)
    except (OSError, EOFError, zlib.error) as e:
        raise ValueError(f"{path}: unreadable: {type(e).__name__}: {e}") from None
    if first is None or not first[1].strip():
        raise ValueError(f"{path}: empty file or no header line")
    try:
        header = first[1].decode("utf-8-sig")  # a byte-order mark (Excel) is not a column name
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: the header line is not UTF-8 ({e})") from None
    try:
        columns = tuple(_norm_col(c) for c in next(csv.reader([header])))
    except csv.Error as e:
        raise ValueError(f"{path}: the header line is not CSV ({e})") from None
    if "price" in columns:
        interval = "tick"
    _check_columns(path, columns, interval)
    return FileSpec(path, os.path.basename(path), columns, source, interval)


def _text(value: Any) -> str:
    return "" if value is None else str(value).strip(" \t")


def _present(value: Any) -> bool:
    return value is not None and (not isinstance(value, str) or value.strip(" \t") != "")


_VOLUMES = ("volume", "size")


def _number(fields: Mapping[str, Any], name: str, *, required: bool) -> float | None:
    """A price or volume field by the grammar (``miraikakaku.grammar``); None when empty."""
    raw = fields.get(name)
    if not _present(raw):
        if required:
            raise ParseError("missing_field", f"field {name!r} is empty")
        return None
    if name in _VOLUMES:
        return grammar.parse_volume(raw, name)
    return grammar.parse_price(raw, name)


INTERVALS = grammar.INTERVALS
"""Supported intervals and their length in seconds (None: a session)."""


def parse_fields(fields: Mapping[str, Any], *, default_source: str, master: InstrumentMaster,
                 interval: str = "1d", sequence: int = 0,
                 limits: EventLimits | None = None) -> PriceEvent:
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
        limits: the time bounds (``EventLimits``; default: built-in, see
            ``miraikakaku.grammar``).

    Every field follows the grammar of ``miraikakaku.grammar`` (ASCII decimal numbers within
    magnitude bounds, whole-field dates and timestamps, symbol and source alphabets and
    lengths, sequence numbers as 64-bit integers, no event time beyond now plus a tolerance).

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
        ParseError: with reason ``missing_field``, ``bad_number``, ``out_of_range``,
            ``bad_timestamp``, ``before_floor``, ``future_timestamp``, ``bad_symbol``,
            ``bad_source`` or ``bad_sequence``.
    """
    is_trade = "price" in fields or interval == "tick"
    required = ("symbol", "date", "price", "size") if is_trade else _REQUIRED
    for name in required:
        if not _present(fields.get(name)):
            raise ParseError("missing_field", f"field {name!r} is empty")
    source = grammar.normalize_source(
        fields["source"] if _present(fields.get("source")) else default_source)
    symbol = grammar.check_symbol(fields["symbol"])
    if interval not in INTERVALS:
        raise ValueError(f"unknown interval {interval!r}")
    if is_trade or interval != "1d":
        raw_time = fields["date"]
        start = grammar.parse_timestamp(raw_time)
        # the timestamp's own local date (its offset's), as the source labelled the row
        local_day = raw_time.date() if isinstance(raw_time, dt.datetime) else \
            grammar.parse_date(raw_time.strip(" \t")[:10], limits)
    else:
        day = grammar.parse_date(fields["date"], limits)
        local_day = day
    on = None
    if master.needs_date(symbol):  # a reused ticker: the row's date (or the source's) decides
        on = master.symbology.get(source) or local_day
    try:
        inst = master.resolve(symbol, on)
    except ValueError as e:
        raise ParseError("bad_symbol", str(e)) from None
    if _present(fields.get("sequence")):
        sequence = grammar.parse_sequence(fields["sequence"])
    else:
        sequence = grammar.parse_sequence(sequence)
    if not is_trade:
        grammar.check_bar_sequence(sequence)
    flags: tuple[str, ...] = ()
    if is_trade:
        interval = "tick"
        o = h = lo = c = _number(fields, "price", required=True)
        v = _number(fields, "size", required=True)
        adj = None
        event_time = start
        if _text(fields.get("suspicious")) not in ("", "0"):
            flags = ("suspicious",)
    else:
        o = _number(fields, "open", required=True)
        h = _number(fields, "high", required=True)
        lo = _number(fields, "low", required=True)
        c = _number(fields, "close", required=True)
        v = _number(fields, "volume", required=False)
        adj = _number(fields, "adj_close", required=False)
        if interval == "1d":
            # midnight UTC precedes every session close of that date: a cheap first check,
            # before the calendar sees a date of year 9999
            grammar.check_event_time(dt.datetime.combine(day, dt.time(), dt.timezone.utc),
                                     "1d", limits)
            event_time, flags = get_calendar(inst.calendar).session_close(day)
        else:
            event_time = start + dt.timedelta(seconds=INTERVALS[interval] or 0)
    if interval != "1d":
        tz = get_calendar(inst.calendar).tz
        day = start.astimezone(tz).date()
        grammar.parse_date(day, limits)
    grammar.check_event_time(event_time, interval, limits)
    if adj is None and not is_trade:  # raw prices without an adjusted close: actions' factors
        factor = raw_price_factor(source, symbol, day)
        if factor is not None:
            adj = grammar.check_price(c * factor, "adj_close")  # type: ignore[operator]
    if not inst.known:
        flags = (*flags, "unknown_instrument")
    return PriceEvent(
        schema_version=SCHEMA_VERSION,
        event_id=make_event_id(source, inst.instrument_id, interval,
                               event_start_text(interval, day, event_time), sequence),
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
               master: InstrumentMaster, interval: str = "1d", sequence: int = 0,
               limits: EventLimits | None = None) -> PriceEvent:
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
                        sequence=sequence, limits=limits)


MAX_RECORD_LINES = 8
"""A quoted CSV field may span physical lines (RFC 4180); a record whose quote is still open
after this many lines (or ``MAX_RECORD_BYTES``) is a stray quote: its first line alone becomes a
``malformed_line`` dead letter and reading resumes on the next physical line."""
MAX_RECORD_BYTES = 64 * 1024


def _physical_lines(raw: BinaryIO, chunk_size: int = 1 << 20) -> Iterator[bytes]:
    """Physical lines of a binary stream, line ends kept: ``\n``, ``\r\n`` and bare ``\r``."""
    carry = b""
    while True:
        chunk = raw.read(chunk_size)
        if not chunk:
            break
        lines = (carry + chunk).splitlines(keepends=True)
        carry = b""
        # the last piece may be incomplete, or a \r whose \n is in the next chunk
        if lines and (lines[-1].endswith(b"\r") or not lines[-1].endswith(b"\n")):
            carry = lines.pop()
        yield from lines
    if carry:
        yield carry


def _strip_end(line: bytes) -> bytes:
    if line.endswith(b"\r\n"):
        return line[:-2]
    return line[:-1] if line.endswith((b"\n", b"\r")) else line


def iter_records(raw: BinaryIO) -> Iterator[tuple[int, bytes]]:
    """CSV records of a binary stream: ``(line number of the record's first line, bytes)``.

    Line ends are ``\n``, ``\r\n`` or a bare ``\r``; a quoted field may hold line ends (the
    record then spans physical lines; at most ``MAX_RECORD_LINES``). The bytes are undecoded:
    each record is decoded on its own, so one bad byte costs one row, not the file. Line 1 is
    the header.
    """
    lines = _physical_lines(raw)
    pushback: list[tuple[int, bytes]] = []
    lineno = 0

    def next_line() -> tuple[int, bytes] | None:
        nonlocal lineno
        if pushback:
            return pushback.pop()
        line = next(lines, None)
        if line is None:
            return None
        lineno += 1
        return lineno, line

    while (item := next_line()) is not None:
        start, line = item
        if line.count(b'"') % 2 == 0:
            yield start, _strip_end(line)
            continue
        pending = [item]
        size = len(line)
        quotes = line.count(b'"')
        while quotes % 2 and len(pending) < MAX_RECORD_LINES and size <= MAX_RECORD_BYTES:
            more = next_line()
            if more is None:
                break
            pending.append(more)
            size += len(more[1])
            quotes += more[1].count(b'"')
        if quotes % 2 == 0:
            yield start, _strip_end(b"".join(p[1] for p in pending))
        else:  # a stray quote: this line alone; the lines after it are read again
            yield start, _strip_end(line)
            pushback.extend(reversed(pending[1:]))


def _open_binary(path: str) -> BinaryIO:
    if "://" in path:  # gs://…: Beam's filesystems decompress .gz by extension
        return FileSystems.open(path)  # type: ignore[return-value]
    return gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")  # type: ignore


def read_records(spec: FileSpec) -> Iterator[tuple[str, bytes | dict]]:
    """The data records of a file, in file order: ``(position, payload)``.

    CSV: ``("line:<n>", record bytes)`` for each non-blank record after the header (see
    ``iter_records``). Parquet: ``("row:<n>", column → value)``.

    Raises:
        ValueError: the file cannot be read to its end (a truncated or corrupt gzip or Parquet
            file); what was yielded before stays valid.
    """
    try:
        if spec.columns is None:
            import pyarrow.parquet as pq

            with _open_binary(spec.path) as raw:
                n = 0
                for batch in pq.ParquetFile(raw).iter_batches(batch_size=8192):
                    for row in batch.to_pylist():
                        yield f"row:{n}", row
                        n += 1
            return
        with _open_binary(spec.path) as raw:
            records = iter_records(raw)
            next(records, None)  # the header
            for lineno, record in records:
                if record.strip(b" \t"):
                    yield f"line:{lineno}", record
    except (OSError, EOFError, zlib.error) as e:
        raise ValueError(f"{spec.path}: unreadable after the rows read so far: "
                         f"{type(e).__name__}: {e}") from None


def numbered_records(spec: FileSpec) -> Iterator[tuple[str, bytes | dict, int]]:
    """``read_records`` with each record's default sequence number: ``(position, payload,
    sequence)``, in file order.

    Trades (a ``tick`` file, or one with a ``price`` column) get the record's position among the
    records of its symbol in the file (0, 1, 2, ...), so trades sharing a timestamp — the Lean
    tick file has 53,211 (symbol, millisecond) keys with more than one trade — get distinct,
    stable event ids, and a re-read of the same file gives the same ids. A ``sequence`` column,
    where there is one, takes precedence (``parse_fields``). Bars get 0: a bar is identified by
    its start.

    Raises:
        ValueError: as ``read_records``.
    """
    trade_file = spec.interval == "tick" or "price" in (spec.columns or ())
    symbol_first = bool(spec.columns) and spec.columns[0] == "symbol"
    counters: dict[object, int] = {}
    for position, payload in read_records(spec):
        seq = 0
        if trade_file or (isinstance(payload, dict) and "price" in payload):
            if isinstance(payload, bytes):
                symbol: object = payload.split(b",", 1)[0] if symbol_first else b""
            else:
                symbol = str(payload.get("symbol", ""))
            seq = counters.get(symbol, 0)
            counters[symbol] = seq + 1
        yield position, payload, seq


def iter_file(spec: FileSpec, master: InstrumentMaster | None = None,
              limits: EventLimits | None = None) -> Iterator[PriceEvent | DeadLetter]:
    """Parse a whole file outside Beam, yielding events and dead letters in file order.

    Reads exactly what ``ReadPriceFiles`` reads, with the same sequence numbers
    (``numbered_records``).
    """
    master = master or load_master()
    specs = {spec.origin: spec}
    for position, payload, seq in numbered_records(spec):
        yield _parse_one((spec.origin, position, payload), specs, master, seq, limits)


def _decode(record: bytes) -> str:
    try:
        return record.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ParseError("bad_encoding", f"not UTF-8 at byte {e.start}: "
                                         f"{record[max(0, e.start - 8):e.end + 8]!r}") from None


def _payload_text(payload: str | bytes | dict) -> str:
    if isinstance(payload, bytes):
        return payload.decode("utf-8", errors="backslashreplace")
    return payload if isinstance(payload, str) else repr(payload)


def _parse_one(element: tuple, specs: Mapping[str, FileSpec], master: InstrumentMaster,
               sequence: int = 0, limits: EventLimits | None = None) -> PriceEvent | DeadLetter:
    """``(origin, position, payload[, sequence])`` (or ``(origin, payload)``) → an event or a
    dead letter; ``sequence`` (from ``numbered_records``) overrides the argument.

    Never raises for a bad record: any error is that record's dead letter (an unexpected one
    with reason ``unparseable`` and the exception's type), so one row never stops a run.
    """
    if len(element) == 4:
        origin, position, payload, sequence = element
    else:
        origin, position, payload = element if len(element) == 3 else (element[0], "",
                                                                        element[1])
    spec = specs[origin]
    try:
        if isinstance(payload, (bytes, str)):
            assert spec.columns is not None
            line = _decode(payload) if isinstance(payload, bytes) else payload
            event = parse_line(line, spec.columns, default_source=spec.default_source,
                               master=master, interval=spec.interval, sequence=sequence,
                               limits=limits)
        else:
            fields = {_norm_col(k): v for k, v in payload.items()}
            event = parse_fields(fields, default_source=spec.default_source, master=master,
                                 interval=spec.interval, sequence=sequence, limits=limits)
    except FieldError as e:
        return DeadLetter(STEP, e.reason, e.detail, _payload_text(payload), origin,
                          position=position)
    except Exception as e:  # noqa: BLE001 - a bad record must never stop the run
        return DeadLetter(STEP, "unparseable", f"{type(e).__name__}: {str(e)[:200]}",
                          _payload_text(payload), origin, position=position)
    return dataclasses.replace(event, provenance=(origin, position, "")) if position else event


class ParseResult(NamedTuple):
    """Outputs of ``ParseEvents``."""

    events: beam.PCollection
    dead_letters: beam.PCollection


class _ParseEventFn(beam.DoFn):
    DEAD_LETTER = "dead_letter"

    def __init__(self, specs: Mapping[str, FileSpec], default_mic: str,
                 limits: EventLimits) -> None:
        self._specs = dict(specs)
        self._default_mic = default_mic
        self._limits = limits
        self._read = progress.counter("ParseEvents", "events_read")
        self._bad = progress.counter("ParseEvents", "parse_errors")

    def setup(self) -> None:
        self._master = load_master(self._default_mic)

    def process(self, element: tuple):
        self._read.inc()
        progress.tick("read")
        out = _parse_one(element, self._specs, self._master, limits=self._limits)
        if isinstance(out, DeadLetter):
            self._bad.inc()
            yield beam.pvalue.TaggedOutput(self.DEAD_LETTER, out)
        else:
            yield out


class ParseEvents(beam.PTransform):
    """``PCollection[tuple[origin, position, bytes | str | dict, sequence]]``
    (``ReadPriceFiles``) →
    ``ParseResult(events, dead_letters)``.

    Args:
        specs: ``FileSpec`` per origin (from ``file_spec``), giving columns and default source.
        default_mic: MIC for unknown non-Tokyo symbols.
        limits: time bounds (``EventLimits``); default: from the settings.
    """

    def __init__(self, specs: Mapping[str, FileSpec], default_mic: str = "XNYS",
                 limits: EventLimits | None = None) -> None:
        super().__init__()
        self._specs = dict(specs)
        self._default_mic = default_mic
        self._limits = limits or EventLimits.from_settings()

    def expand(self, pcoll: beam.PCollection) -> ParseResult:
        out = pcoll | "Parse" >> beam.ParDo(
            _ParseEventFn(self._specs, self._default_mic, self._limits)).with_outputs(
                _ParseEventFn.DEAD_LETTER, main="events")
        return ParseResult(out.events, out[_ParseEventFn.DEAD_LETTER])


class _ReadRecordsFn(beam.DoFn):
    def process(self, spec: FileSpec):
        for position, payload, seq in numbered_records(spec):
            yield spec.origin, position, payload, seq


class ReadPriceFiles(beam.PTransform):
    """``PBegin`` → ``PCollection[tuple[origin, position, bytes | dict, sequence]]``: the
    records of CSV
    (optionally gzip) and Parquet files, read inside the pipeline (``read_records``: a bad byte
    or a quoted line end costs one record, never the file; never ``beam.Create`` over rows).

    Args:
        specs: the files, from ``file_spec``.
        reshuffle: redistribute the records after the read (remote runners: one worker reads
            a file, all of them parse it).
    """

    def __init__(self, specs: Sequence[FileSpec], reshuffle: bool = False) -> None:
        super().__init__()
        self._specs = list(specs)
        self._reshuffle = reshuffle

    def expand(self, pbegin):
        parts = []
        for spec in self._specs:
            rows = (pbegin | f"File[{spec.origin}]" >> beam.Create([spec])
                    | f"Read[{spec.origin}]" >> beam.ParDo(_ReadRecordsFn()))
            if self._reshuffle:
                rows = rows | f"Reshuffle[{spec.origin}]" >> beam.Reshuffle()
            parts.append(rows)
        return tuple(parts) | "FlattenInputs" >> beam.Flatten()


__all__ += ["ReadPriceFiles", "read_records", "iter_records"]
