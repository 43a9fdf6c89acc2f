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
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import apache_beam as beam
from apache_beam.metrics import Metrics

from miraikakaku.calendars import get_calendar
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
_KNOWN_SOURCES = {"us_daily_sp500_5yr_2013_2018": "sp500_5yr", "all_stocks_5yr": "sp500_5yr"}


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
    """

    path: str
    origin: str
    columns: tuple[str, ...] | None
    default_source: str


def _norm_col(name: str) -> str:
    key = name.strip().lower().replace(" ", "_").replace("-", "_")
    return _ALIASES.get(key.replace("_", ""), key)


def _stem(path: str) -> str:
    base = os.path.basename(path)
    for ext in (".gz", ".csv", ".parquet", ".normalized"):
        if base.endswith(ext):
            base = base[: -len(ext)]
    return base


def file_spec(path: str | Path, default_source: str | None = None) -> FileSpec:
    """Inspect a file's header (a cheap preflight) and say how to read it.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: a CSV file without a header or without the required columns.
    """
    path = str(path)
    if not os.path.exists(path):
        raise FileNotFoundError(path)
    stem = _stem(path)
    source = default_source or _KNOWN_SOURCES.get(stem, "user")
    if path.endswith(".parquet"):
        return FileSpec(path, os.path.basename(path), None, source)
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8", newline="") as f:
        header = f.readline()
    if not header.strip():
        raise ValueError(f"{path}: empty file or no header line")
    columns = tuple(_norm_col(c) for c in next(csv.reader([header])))
    missing = [c for c in _REQUIRED if c not in columns]
    if missing:
        raise ValueError(f"{path}: header lacks required columns {missing} (has {list(columns)})")
    return FileSpec(path, os.path.basename(path), columns, source)


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


def parse_fields(fields: Mapping[str, Any], *, default_source: str,
                 master: InstrumentMaster) -> PriceEvent:
    """Turn one record (normalized column name → value) into a daily-bar ``PriceEvent``.

    Args:
        fields: column → value (text or number); see the module docstring for the names.
        default_source: source when the record has none.
        master: instrument reference data for ids, currency and calendar.

    Returns:
        The event, with calendar flags (``not_a_session``, ``calendar_estimated``) and
        ``unknown_instrument`` when the symbol was resolved by rule.

    Raises:
        ParseError: with reason ``missing_field``, ``bad_number``, ``bad_timestamp`` or
            ``bad_symbol``.
    """
    for name in _REQUIRED:
        if not _text(fields.get(name)):
            raise ParseError("missing_field", f"field {name!r} is empty")
    try:
        inst = master.resolve(_text(fields["symbol"]))
    except ValueError as e:
        raise ParseError("bad_symbol", str(e)) from None
    day = _date(_text(fields["date"]))
    o = _number(fields, "open", required=True)
    h = _number(fields, "high", required=True)
    lo = _number(fields, "low", required=True)
    c = _number(fields, "close", required=True)
    v = _number(fields, "volume", required=False)
    adj = _number(fields, "adj_close", required=False)
    source = _text(fields.get("source")) or default_source
    close_time, flags = get_calendar(inst.calendar).session_close(day)
    if not inst.known:
        flags = (*flags, "unknown_instrument")
    return PriceEvent(
        schema_version=SCHEMA_VERSION,
        event_id=make_event_id(source, inst.instrument_id, "1d", f"{day:%Y%m%d}", 0),
        instrument_id=inst.instrument_id,
        symbol=inst.symbol,
        source=source,
        sequence=0,
        interval="1d",
        session_date=day,
        event_time=close_time,
        open=o, high=h, low=lo, close=c,  # type: ignore[arg-type]
        volume=v,
        adj_close=adj,
        currency=inst.currency,
        flags=flags,
    )


def parse_line(line: str, columns: Sequence[str], *, default_source: str,
               master: InstrumentMaster) -> PriceEvent:
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
    return parse_fields(fields, default_source=default_source, master=master)


def iter_file(spec: FileSpec, master: InstrumentMaster | None = None
              ) -> Iterator[PriceEvent | DeadLetter]:
    """Parse a whole file outside Beam, yielding events and dead letters in file order."""
    master = master or load_master()
    if spec.columns is None:
        import pyarrow.parquet as pq

        for row in pq.read_table(spec.path).to_pylist():
            yield _parse_one((spec.origin, row), {spec.origin: spec}, master)
        return
    opener = gzip.open if spec.path.endswith(".gz") else open
    with opener(spec.path, "rt", encoding="utf-8", newline="") as f:
        next(f, None)
        for line in f:
            line = line.rstrip("\r\n")
            if line:
                yield _parse_one((spec.origin, line), {spec.origin: spec}, master)


def _parse_one(element: tuple[str, str | dict], specs: Mapping[str, FileSpec],
               master: InstrumentMaster) -> PriceEvent | DeadLetter:
    origin, payload = element
    spec = specs[origin]
    try:
        if isinstance(payload, str):
            assert spec.columns is not None
            return parse_line(payload, spec.columns, default_source=spec.default_source,
                              master=master)
        fields = {_norm_col(k): v for k, v in payload.items()}
        return parse_fields(fields, default_source=spec.default_source, master=master)
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
        self._read = Metrics.counter("ParseEvents", "events_read")
        self._bad = Metrics.counter("ParseEvents", "parse_errors")

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
