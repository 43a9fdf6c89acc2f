"""Bigtable serving store: the table layout, record → ``DirectRow`` conversion and the reader.

The same row keys as the embedded store (``miraikakaku.rowkeys``); the streaming pipeline writes
the rows ``to_direct_rows`` builds through Beam's ``WriteToBigTable`` (one transform per table),
and ``BigtableServingStore`` reads them back for the API with the semantics of
``stores.sqlite.SqliteServingStore``. ``TABLES`` is the one definition of tables, column families
and garbage-collection rules; ``miraikakaku init-gcp`` creates them. Try it against the emulator:
``gcloud beta emulators bigtable start``, ``export BIGTABLE_EMULATOR_HOST=localhost:8086``,
``miraikakaku init-gcp``, run a pipeline with ``--sink bigtable``, then
``cbt -project miraikakaku-local -instance miraikakaku read prices count=5``.

Layout (five tables; all values are UTF-8 text so ``cbt read`` shows them as written):

``prices`` — everything keyed by instrument and time, so one instrument's data is one key range
(bars, trades, predictions and its latest quote sit next to each other; Bigtable advises few
tables and a key that spreads load, which the instrument prefix does):

* bar / trade rows, key ``rowkeys.event_key`` (``XNAS:AAPL#1d#20180207``,
  ``XNYS:IBM#tick#20131007T133000.270#000042``):
  family ``bar``, qualifiers ``{source}:{field}`` for ``open high low close volume adj_close
  currency event_id event_time session_date`` — prefixed by source, so two sources' bars for the
  same session never overwrite each other; family ``flag``, qualifier ``{source}:{flag}``, value
  the flag's detail;
* prediction rows, key ``rowkeys.prediction_key`` (``XNAS:AAPL#pred#1d#20180207`` for the
  champion, ``…#20180207#challenger`` for a challenger, so the two never share a row): family
  ``pred``, qualifiers ``{model_name}:{model_version}:{field}`` for ``source as_of_date
  as_of_time target_date base_price predicted_log_return predicted_price``;
* the latest quote, key ``rowkeys.latest_key`` (``XNAS:AAPL#latest``): family ``quote``,
  qualifiers ``{source}:{field}`` for ``row_key session_date event_time open high low close
  volume adj_close currency``. Every price event writes it; readers take the newest cell of each
  column (highest timestamp = event time), so an older event that arrives late never wins, and
  then choose among sources by event time and ``source_priority`` exactly as the SQLite store.

``instruments`` — key ``instrument_id``, family ``ref`` (``symbol mic calendar currency timezone
kind name known``); plus one alias row per instrument, key ``~alias#{SYMBOL}#{instrument_id}``
(``~`` sorts after every id), so a look-up by ticker is a prefix scan, not a table scan.

``alerts`` — key ``{instrument_id}#{session_date:YYYYMMDD}#{alert_id}``, family ``alert``. The
key holds the session date rather than the event time: an alert's identity is its ``alert_id``
(``{rule}/{instrument}/{yyyymmdd}``), and a replay or restart may fire the same alert on a
different event of that session; with the event time in the key that would be a second row, with
the session date it rewrites the one row, as the SQLite store does.

``dead_letters`` — key ``{reason}#{step}#{dead_letter_id}`` (``#`` in a part is written ``%23``),
family ``dl``. Reason first, because reading by reason is the query the store offers
(``get_dead_letters(reason=...)`` is a prefix scan).

``model_performance`` — tracked prediction errors, key ``performance_key``
(``{model_name}#{model_version}#{instrument_id}#{YYYYMMDD}`` of the realized session), family
``perf``, one qualifier per non-key column of ``miraikakaku.tracking.PERFORMANCE_COLUMNS`` (the
definition the SQLite and BigQuery tables use too), cell timestamp the target date at 00:00 UTC,
so a recomputed row overwrites its cells. Model version first: the API reads one version's rows.

Timestamps and garbage collection: every cell carries an explicit timestamp (millisecond
precision, as Bigtable requires): the event time for bars, trades and quotes, the as-of time for
predictions, the event time for alerts and dead letters (epoch 0 when a dead letter has none),
epoch 0 for reference data, and the bar's key time (session date 00:00 UTC for a daily bar, the
bar start or trade time otherwise) for flags, so a flag is one cell whichever record wrote it.
A rewrite of the same record writes the same cells at the same timestamps: idempotent. Every
family keeps one version (``MaxVersions(1)``), never an age rule: a backfill writes old
timestamps, which an age rule would delete at once. Version GC keeps the highest timestamp, so it
agrees with the readers, which always filter to the newest cell (GC is lazy).

Differences from the SQLite store, all by design: writes are not atomic across rows
(``write_batch`` raises when a mutation fails and a retry rewrites the same cells); dead letters
come back in key order (reason, step, id) rather than insertion order; ``counts()`` has no
``outbox`` (alerts go to Pub/Sub); two *unranked* sources with bars at the very same event time
tie-break by source name instead of "last writer wins"; events of one source less than a
millisecond apart share a quote cell timestamp, the later write wins.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from miraikakaku import rowkeys
from miraikakaku.instruments import Instrument
from miraikakaku.schema import (
    AlertEvent,
    DeadLetter,
    Prediction,
    PriceEvent,
    SupersededRevision,
    utc,
)
from miraikakaku.tracking import (
    PERFORMANCE_COLUMNS,
    PERFORMANCE_TABLE,
    ModelPerformance,
    PerformanceSummary,
    summarize_performance,
)
from stores.base import EVENT_FLAGS, BarFlag, BarRow, PredictionRow, QuoteRow, RevisionRow

__all__ = [
    "TABLES",
    "MaxVersions",
    "PRICES",
    "INSTRUMENTS",
    "ALERTS",
    "DEAD_LETTERS",
    "PERFORMANCE_TABLE",
    "BigtableServingStore",
    "performance_key",
    "to_direct_rows",
    "alert_key",
    "dead_letter_key",
    "alias_key",
    "cell_timestamp",
]

PRICES = "prices"
INSTRUMENTS = "instruments"
ALERTS = "alerts"
DEAD_LETTERS = "dead_letters"


@dataclasses.dataclass(frozen=True)
class MaxVersions:
    """Garbage-collection rule of a column family: keep the newest ``versions`` cells per column.

    Attributes:
        versions: cells kept per column (by timestamp, highest first).
    """

    versions: int = 1

    def to_gc_rule(self):
        """The ``google.cloud.bigtable.column_family.MaxVersionsGCRule`` for this spec."""
        from google.cloud.bigtable import column_family

        return column_family.MaxVersionsGCRule(self.versions)


TABLES: dict[str, dict[str, MaxVersions]] = {
    PRICES: {"bar": MaxVersions(1), "flag": MaxVersions(1), "pred": MaxVersions(1),
             "quote": MaxVersions(1), "rev": MaxVersions(1)},
    INSTRUMENTS: {"ref": MaxVersions(1)},
    ALERTS: {"alert": MaxVersions(1)},
    DEAD_LETTERS: {"dl": MaxVersions(1)},
    PERFORMANCE_TABLE: {"perf": MaxVersions(1)},
}
"""Table id → column family → GC rule: the single definition ``init-gcp`` creates."""

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
_BAR_FIELDS = ("open", "high", "low", "close", "volume", "adj_close", "currency", "event_id",
               "event_time", "session_date")
_QUOTE_FIELDS = ("row_key", "session_date", "event_time", "open", "high", "low", "close",
                 "volume", "adj_close", "currency")
_PRED_FIELDS = ("source", "as_of_date", "as_of_time", "target_date", "base_price",
                "predicted_log_return", "predicted_price")
_ALERT_FIELDS = ("alert_id", "rule_id", "kind", "instrument_id", "event_time", "session_date",
                 "value", "threshold", "message")
_DL_FIELDS = ("step", "reason", "detail", "payload", "origin", "event_time", "position")
_REF_FIELDS = ("symbol", "mic", "calendar", "currency", "timezone", "kind", "name", "known")
_ALIAS_PREFIX = "~alias#"
_BAR_INTERVALS = ("1d", "1h", "1m", "1s", "tick")  # every interval ``rowkeys.event_key`` keys
_MAX_MUTATIONS_PER_REQUEST = 50_000  # Bigtable allows 100,000 per MutateRows request


# -- encoding ------------------------------------------------------------------------------
def cell_timestamp(value: dt.datetime) -> dt.datetime:
    """A cell timestamp: ``value`` in UTC truncated to milliseconds (Bigtable's granularity).

    Raises:
        ValueError: for a naive datetime.
    """
    t = utc(value)
    return t.replace(microsecond=t.microsecond - t.microsecond % 1000)


def _enc(value: Any) -> bytes:
    """Cell value as UTF-8 text; None is the empty value (so a rewrite can clear a field)."""
    if value is None:
        return b""
    if isinstance(value, bool):
        return b"1" if value else b"0"
    if isinstance(value, float):
        return repr(value).encode()  # repr round-trips exactly
    if isinstance(value, dt.datetime):
        return utc(value).isoformat().encode()
    if isinstance(value, dt.date):
        return value.isoformat().encode()
    return str(value).encode()


def _text(raw: bytes | None) -> str:
    return raw.decode() if raw else ""


def _float(raw: bytes | None) -> float | None:
    return float(raw) if raw else None


def _time(raw: bytes | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(raw.decode()) if raw else None


def _date(raw: bytes | None) -> dt.date | None:
    return dt.date.fromisoformat(raw.decode()) if raw else None


def _part(text: str) -> str:
    """A row-key part with ``%`` and ``#`` escaped (``#`` separates the parts)."""
    return text.replace("%", "%25").replace("#", "%23")


def _check_name(kind: str, name: str, *, allow_colon: bool = False) -> None:
    """A qualifier prefix must be non-empty; a source may hold ':' (its qualifiers are read by
    their last ':', the field names never hold one), a model name or version may not."""
    if not name or (":" in name and not allow_colon):
        raise ValueError(f"{kind} {name!r} cannot be a column-qualifier prefix (empty or ':')")


def _key_time(row_key: str) -> dt.datetime:
    """The time in a bar or trade key: session date 00:00 UTC, bar start or trade time.

    Raises:
        ValueError: if ``row_key`` is not a bar or trade key.
    """
    parts = row_key.split(rowkeys.SEP)
    if len(parts) < 3:
        raise ValueError(f"not a bar key: {row_key!r}")
    text = parts[2]
    for fmt in ("%Y%m%d", "%Y%m%dT%H%M%S", "%Y%m%dT%H%M%S.%f"):
        try:
            return dt.datetime.strptime(text, fmt).replace(tzinfo=dt.timezone.utc)
        except ValueError:
            continue
    raise ValueError(f"no time in row key {row_key!r}")


# -- keys ----------------------------------------------------------------------------------
def alert_key(alert: AlertEvent) -> str:
    """Row key of an alert: ``{instrument_id}#{session_date:YYYYMMDD}#{alert_id}``."""
    return rowkeys.SEP.join((alert.instrument_id, f"{alert.session_date:%Y%m%d}",
                             _part(alert.alert_id)))


def dead_letter_key(dl: DeadLetter) -> str:
    """Row key of a dead letter: ``{reason}#{step}#{dead_letter_id}``."""
    return rowkeys.SEP.join((_part(dl.reason), _part(dl.step), dl.dead_letter_id))


def alias_key(symbol: str, instrument_id: str) -> str:
    """Row key of an instrument's alias row: ``~alias#{SYMBOL}#{instrument_id}``."""
    return f"{_ALIAS_PREFIX}{_part(symbol.upper())}{rowkeys.SEP}{instrument_id}"


# -- records → rows ------------------------------------------------------------------------
def _row(key: str):
    from google.cloud.bigtable.row import DirectRow

    return DirectRow(key.encode())


def _set(row, family: str, qualifier: str, value: Any, ts: dt.datetime) -> None:
    row.set_cell(family, qualifier.encode(), _enc(value), timestamp=ts)


def _bar_rows(e: PriceEvent) -> list:
    _check_name("source", e.source, allow_colon=True)
    key = rowkeys.event_key(e)
    ts = cell_timestamp(e.event_time)
    row = _row(key)
    # a new revision replaces the bar's own flags (neighbour flags come as BarFlag rows)
    stale = sorted(EVENT_FLAGS - set(e.flags))
    if stale:
        row.delete_cells("flag", [f"{e.source}:{flag}".encode() for flag in stale])
    values = {"open": e.open, "high": e.high, "low": e.low, "close": e.close,
              "volume": e.volume, "adj_close": e.adj_close, "currency": e.currency,
              "event_id": e.event_id, "event_time": e.event_time,
              "session_date": e.session_date}
    for field in _BAR_FIELDS:
        _set(row, "bar", f"{e.source}:{field}", values[field], ts)
    flag_ts = cell_timestamp(_key_time(key))
    for flag in e.flags:
        _set(row, "flag", f"{e.source}:{flag}", "", flag_ts)
    return [row]


def _quote_cells(row, e: PriceEvent) -> None:
    ts = cell_timestamp(e.event_time)
    values = {"row_key": rowkeys.event_key(e), "session_date": e.session_date,
              "event_time": e.event_time, "open": e.open, "high": e.high, "low": e.low,
              "close": e.close, "volume": e.volume, "adj_close": e.adj_close,
              "currency": e.currency}
    for field in _QUOTE_FIELDS:
        _set(row, "quote", f"{e.source}:{field}", values[field], ts)


def _latest_row(events: Iterable[PriceEvent]):
    events = list(events)
    row = _row(rowkeys.latest_key(events[0].instrument_id))
    for e in events:
        _quote_cells(row, e)
    return row


def _revision_row(r: SupersededRevision):
    """A superseded revision, kept in its bar's row: family ``rev``, qualifier
    ``{source}:{sha1 of the payload}``, value the revision's JSON and where it was read."""
    import hashlib
    import json

    e = r.event
    _check_name("source", e.source, allow_colon=True)
    row = _row(rowkeys.event_key(e))
    payload = e.to_json()
    digest = hashlib.sha1(payload.encode()).hexdigest()
    body = json.dumps({"payload": payload, "origin": e.provenance[0],
                       "position": e.provenance[1], "superseded_by": r.superseded_by})
    _set(row, "rev", f"{e.source}:{digest}", body, cell_timestamp(e.event_time))
    return row


def _flag_row(f: BarFlag):
    _check_name("source", f.source, allow_colon=True)
    row = _row(f.row_key)
    _set(row, "flag", f"{f.source}:{f.flag}", f.detail, cell_timestamp(_key_time(f.row_key)))
    return row


def _prediction_row(p: Prediction):
    _check_name("model name", p.model_name)
    _check_name("model version", p.model_version)
    row = _row(rowkeys.prediction_key(p.instrument_id, "1d", p.as_of_date, p.role))
    ts = cell_timestamp(p.as_of_time)
    values = {"source": p.source, "as_of_date": p.as_of_date, "as_of_time": p.as_of_time,
              "target_date": p.target_date, "base_price": p.base_price,
              "predicted_log_return": p.predicted_log_return,
              "predicted_price": p.predicted_price}
    for field in _PRED_FIELDS:
        _set(row, "pred", f"{p.model_name}:{p.model_version}:{field}", values[field], ts)
    return row


def _alert_row(a: AlertEvent):
    row = _row(alert_key(a))
    ts = cell_timestamp(a.event_time)
    for field in _ALERT_FIELDS:
        _set(row, "alert", field, getattr(a, field), ts)
    return row


def _dead_letter_row(d: DeadLetter):
    row = _row(dead_letter_key(d))
    ts = cell_timestamp(d.event_time) if d.event_time is not None else _EPOCH
    for field in _DL_FIELDS:
        _set(row, "dl", field, getattr(d, field), ts)
    return row


def _instrument_rows(i: Instrument) -> list:
    row = _row(i.instrument_id)
    for field in _REF_FIELDS:
        _set(row, "ref", field, getattr(i, field), _EPOCH)
    alias = _row(alias_key(i.symbol, i.instrument_id))
    _set(alias, "ref", "instrument_id", i.instrument_id, _EPOCH)
    return [row, alias]


def performance_key(model_name: str, model_version: str, instrument_id: str | None = None,
                    target_date: dt.date | None = None) -> str:
    """Row key (or key prefix) in ``model_performance``:
    ``{model_name}#{model_version}#{instrument_id}#{YYYYMMDD}`` (``#`` in a part is ``%23``).

    One model version's rows are one key range, by instrument, then date: the API's queries
    (a version, optionally one instrument and a date range) are range scans. With
    ``instrument_id`` (and ``target_date``) None the key is the prefix up to that part.
    """
    parts = [_part(model_name), _part(model_version)]
    if instrument_id is not None:
        parts.append(instrument_id)
        if target_date is not None:
            parts.append(f"{target_date:%Y%m%d}")
    return rowkeys.SEP.join(parts) + ("" if target_date is not None else rowkeys.SEP)


def _performance_row(r: ModelPerformance):
    row = _row(performance_key(r.model_name, r.model_version, r.instrument_id, r.target_date))
    ts = dt.datetime.combine(r.target_date, dt.time(), dt.timezone.utc)  # rewrites overwrite
    for column in PERFORMANCE_COLUMNS:
        if column.name not in ("model_name", "model_version", "instrument_id"):
            _set(row, "perf", column.name, getattr(r, column.name), ts)
    return row


def _performance_of(row) -> ModelPerformance:
    key = row.row_key.decode().split(rowkeys.SEP)
    cells = _newest(row, "perf")
    values: dict[str, Any] = {"model_name": key[0].replace("%23", "#").replace("%25", "%"),
                              "model_version": key[1].replace("%23", "#").replace("%25", "%"),
                              "instrument_id": key[2]}
    for column in PERFORMANCE_COLUMNS:
        if column.name in values:
            continue
        raw = cells.get(column.name)
        if column.type == "FLOAT":
            values[column.name] = _float(raw)
        elif column.type == "INTEGER":
            values[column.name] = int(raw) if raw else 0
        elif column.type == "DATE":
            values[column.name] = _date(raw)
        else:
            values[column.name] = _text(raw)
    return ModelPerformance.from_row(values)


def to_direct_rows(record: object, table_resolver: Callable[[str], str] | None = None
                   ) -> list[tuple[str, Any]]:
    """Convert one record into ``(table_id, DirectRow)`` pairs (pure: no client, no I/O).

    The rows are what Beam's ``WriteToBigTable(project_id, instance_id, table_id)`` consumes, one
    transform per table id. A ``PriceEvent`` gives its bar (or trade) row and its latest-quote
    row; an ``Instrument`` its reference row and alias row; every other record one row.

    Args:
        record: a ``PriceEvent``, ``BarFlag``, ``Prediction``, ``AlertEvent``, ``DeadLetter`` or
            ``Instrument``.
        table_resolver: maps a logical table name (a key of ``TABLES``) to the table id to
            write, e.g. to add a prefix; default: the name itself.

    Returns:
        ``(table_id, google.cloud.bigtable.row.DirectRow)`` pairs with explicit cell timestamps.

    Raises:
        TypeError: for a record of another type.
        ValueError: for a naive datetime, or a source/model name containing ``:``.
    """
    resolve = table_resolver or (lambda name: name)
    if isinstance(record, PriceEvent):
        return [(resolve(PRICES), r) for r in [*_bar_rows(record), _latest_row([record])]]
    if isinstance(record, BarFlag):
        return [(resolve(PRICES), _flag_row(record))]
    if isinstance(record, Prediction):
        return [(resolve(PRICES), _prediction_row(record))]
    if isinstance(record, AlertEvent):
        return [(resolve(ALERTS), _alert_row(record))]
    if isinstance(record, DeadLetter):
        return [(resolve(DEAD_LETTERS), _dead_letter_row(record))]
    if isinstance(record, SupersededRevision):
        return [(resolve(PRICES), _revision_row(record))]
    if isinstance(record, Instrument):
        return [(resolve(INSTRUMENTS), r) for r in _instrument_rows(record)]
    if isinstance(record, ModelPerformance):
        return [(resolve(PERFORMANCE_TABLE), _performance_row(record))]
    raise TypeError(f"cannot store a {type(record).__name__}")


# -- rows → records ------------------------------------------------------------------------
def _newest(row, family: str) -> dict[str, bytes]:
    """Qualifier → value of the newest cell in ``family`` (cells come newest first)."""
    return {q.decode(): cells[0].value for q, cells in row.cells.get(family, {}).items() if cells}


def _by_prefix(cells: dict[str, bytes], nparts: int = 2) -> dict[str, dict[str, bytes]]:
    """Split ``{prefix}:{field}`` qualifiers into ``{prefix: {field: value}}``."""
    out: dict[str, dict[str, bytes]] = {}
    for qualifier, value in cells.items():
        # the field is the last part and never holds ':'; a source name may (``grammar``)
        parts = qualifier.rsplit(":", nparts - 1)
        if len(parts) != nparts:
            continue
        prefix = ":".join(parts[:-1])
        out.setdefault(prefix, {})[parts[-1]] = value
    return out


def _bar_rows_of(row, source: str | None) -> list[BarRow]:
    key = row.row_key.decode()
    instrument_id, interval = key.split(rowkeys.SEP)[:2]
    bars = _by_prefix(_newest(row, "bar"))
    flags: dict[str, list[str]] = {}
    for qualifier in _newest(row, "flag"):
        src, flag = qualifier.rsplit(":", 1)
        flags.setdefault(src, []).append(flag)
    out = []
    for src in sorted(bars):
        b = bars[src]
        if (source is not None and src != source) or "event_id" not in b:
            continue
        out.append(BarRow(key, instrument_id, src, interval, _date(b.get("session_date")),
                          _time(b.get("event_time")), _float(b.get("open")),
                          _float(b.get("high")), _float(b.get("low")), _float(b.get("close")),
                          _float(b.get("volume")), _float(b.get("adj_close")),
                          _text(b.get("currency")), tuple(sorted(flags.get(src, ())))))
    return out


def _predictions_of(row) -> list[Prediction]:
    key = row.row_key.decode()
    instrument_id = key.split(rowkeys.SEP)[0]
    role = rowkeys.prediction_role(key)
    preds = _by_prefix(_newest(row, "pred"), nparts=3)
    out = []
    # (model name, version) order, as the SQLite store's ORDER BY (keyset pagination relies on it)
    for model_version in sorted(preds, key=lambda q: tuple(q.rsplit(":", 1))):
        model_name, version = model_version.rsplit(":", 1)
        p = preds[model_version]
        out.append(Prediction(instrument_id, _text(p.get("source")), _date(p.get("as_of_date")),
                              _time(p.get("as_of_time")), _date(p.get("target_date")),
                              _float(p.get("base_price")), _float(p.get("predicted_log_return")),
                              _float(p.get("predicted_price")), model_name, version, role))
    return out


def _alert_of(row) -> AlertEvent:
    a = _newest(row, "alert")
    return AlertEvent(_text(a.get("alert_id")), _text(a.get("rule_id")), _text(a.get("kind")),
                      _text(a.get("instrument_id")), _time(a.get("event_time")),
                      _date(a.get("session_date")), _float(a.get("value")),
                      _float(a.get("threshold")), _text(a.get("message")))


def _dead_letter_of(row) -> DeadLetter:
    d = _newest(row, "dl")
    return DeadLetter(_text(d.get("step")), _text(d.get("reason")), _text(d.get("detail")),
                      _text(d.get("payload")), _text(d.get("origin")), _time(d.get("event_time")),
                      _text(d.get("position")))


def _instrument_of(row) -> Instrument:
    r = _newest(row, "ref")
    return Instrument(row.row_key.decode(), *(_text(r.get(f)) for f in _REF_FIELDS[:-1]),
                      known=_text(r.get("known")) == "1")


def _after(key: str) -> bytes:
    """Exclusive end key just past every key that starts with ``key``."""
    return key.encode() + b"\xff"


class BigtableServingStore:
    """The ``ServingStore`` on Bigtable (layout in the module docstring).

    Uses ``BIGTABLE_EMULATOR_HOST`` when set (the client library's rule), else Application
    Default Credentials.

    Args:
        project: Google Cloud project id.
        instance: Bigtable instance id.
        source_priority: source names, best first; decides which source's bar is the latest quote
            when two sources have a bar at the same event time.
        table_resolver: logical table name → table id (default: the name).
        retry_deadline: seconds a ``write_batch`` retries transient mutation errors.
        client: an existing ``google.cloud.bigtable.Client`` (default: a new data client).
    """

    def __init__(self, project: str, instance: str, *, source_priority: Sequence[str] = (),
                 table_resolver: Callable[[str], str] | None = None,
                 retry_deadline: float = 120.0, client=None) -> None:
        from google.cloud import bigtable

        self.project = project
        self.instance_id = instance
        self._rank = {s: i for i, s in enumerate(source_priority)}
        self._resolve = table_resolver or (lambda name: name)
        self._retry_deadline = retry_deadline
        self._own_client = client is None
        self._client = client or bigtable.Client(project=project)
        self._instance = self._client.instance(instance)
        self._tables = {name: self._instance.table(self._resolve(name)) for name in TABLES}

    def table(self, name: str):
        """The ``google.cloud.bigtable.table.Table`` for a logical table name (``prices``)."""
        return self._tables[name]

    def close(self) -> None:
        """Close the client's channels (when this store created the client)."""
        if self._own_client:
            self._client.close()

    # -- writes --------------------------------------------------------------------------
    def _rows_for_batch(self, records: Iterable[object]) -> tuple[int, dict[str, list]]:
        rows: dict[str, list] = {name: [] for name in TABLES}
        latest: dict[str, dict[str, PriceEvent]] = {}
        n = 0
        for r in records:
            n += 1
            if isinstance(r, PriceEvent):
                rows[PRICES].extend(_bar_rows(r))
                per_source = latest.setdefault(r.instrument_id, {})
                old = per_source.get(r.source)
                if old is None or utc(r.event_time) >= utc(old.event_time):
                    per_source[r.source] = r  # newest per source; the later write wins ties
            else:
                for name, row in to_direct_rows(r):
                    rows[name].append(row)
        for per_source in latest.values():  # one latest-quote mutation per instrument
            rows[PRICES].append(_latest_row(per_source[s] for s in sorted(per_source)))
        return n, rows

    def write_batch(self, records: Iterable[object]) -> int:
        """Write records with ``Table.mutate_rows``; see ``ServingStore.write_batch``.

        Every record is converted before anything is written, so a record of an unknown type
        writes nothing. Bigtable has no multi-row transactions: a failed mutation raises after
        the rest were applied, and retrying the batch rewrites the same cells (idempotent).

        Raises:
            TypeError: for a record of an unknown type (nothing is written).
            RuntimeError: when Bigtable reports a failed mutation (after retrying transient
                errors for ``retry_deadline`` seconds).
        """
        from google.cloud.bigtable.table import DEFAULT_RETRY

        n, rows = self._rows_for_batch(records)
        retry = DEFAULT_RETRY.with_timeout(self._retry_deadline)
        for name, table_rows in rows.items():
            for chunk in _chunks(table_rows):
                statuses = self._tables[name].mutate_rows(chunk, retry=retry)
                failed = [(i, s) for i, s in enumerate(statuses) if s is None or s.code != 0]
                if failed:
                    i, s = failed[0]
                    raise RuntimeError(
                        f"{len(failed)} of {len(chunk)} row mutations to Bigtable table "
                        f"{self._resolve(name)!r} failed; first: row {chunk[i].row_key!r}: "
                        f"code {getattr(s, 'code', None)} {getattr(s, 'message', 'no status')}")
        return n

    # -- reads ---------------------------------------------------------------------------
    def _filter(self, family_regex: str, qualifier_regex: str | None = None):
        from google.cloud.bigtable import row_filters as rf

        filters = [rf.FamilyNameRegexFilter(family_regex)]
        if qualifier_regex is not None:
            filters.append(rf.ColumnQualifierRegexFilter(qualifier_regex.encode()))
        filters.append(rf.CellsColumnLimitFilter(1))
        return rf.RowFilterChain(filters=filters)

    def _read_row(self, name: str, key: str, family: str):
        return self._tables[name].read_row(key.encode(), filter_=self._filter(family))

    def list_instruments(self) -> list[Instrument]:
        rows = self._tables[INSTRUMENTS].read_rows(end_key=_ALIAS_PREFIX.encode(),
                                                   filter_=self._filter("ref"))
        return [_instrument_of(r) for r in rows]

    def get_instrument(self, symbol_or_id: str) -> Instrument | None:
        key = symbol_or_id.strip()
        if not key:
            return None
        for candidate in dict.fromkeys((key, key.upper())):
            if candidate.startswith("~"):
                continue
            row = self._read_row(INSTRUMENTS, candidate, "ref")
            if row is not None:
                return _instrument_of(row)
        prefix = f"{_ALIAS_PREFIX}{_part(key.upper())}{rowkeys.SEP}"
        ids = [_text(_newest(r, "ref").get("instrument_id"))
               for r in self._tables[INSTRUMENTS].read_rows(
                   start_key=prefix.encode(), end_key=_after(prefix), filter_=self._filter("ref"))]
        found = [i for i in (self._instrument(x) for x in ids) if i is not None]
        found.sort(key=lambda i: (not i.known, i.instrument_id))
        return found[0] if found else None

    def _instrument(self, instrument_id: str) -> Instrument | None:
        row = self._read_row(INSTRUMENTS, instrument_id, "ref")
        return _instrument_of(row) if row is not None else None

    def _quotes(self, instrument_id: str) -> dict[str, dict[str, bytes]]:
        row = self._read_row(PRICES, rowkeys.latest_key(instrument_id), "quote")
        return _by_prefix(_newest(row, "quote")) if row is not None else {}

    def sources(self, instrument_id: str) -> list[str]:
        """Sources with bars for the instrument: the sources in its latest-quote row (every
        price event writes it), a point read instead of a scan of the instrument's bars."""
        return sorted(self._quotes(instrument_id))

    def get_quote(self, instrument_id: str) -> QuoteRow | None:
        quotes = [(src, q) for src, q in self._quotes(instrument_id).items() if "event_time" in q]
        if not quotes:
            return None

        def rank(item: tuple[str, dict[str, bytes]]):
            src, q = item
            return (-_time(q["event_time"]).timestamp(), self._rank.get(src, 1_000), src)

        src, q = min(quotes, key=rank)
        return QuoteRow(instrument_id, src, _date(q.get("session_date")),
                        _time(q.get("event_time")), _float(q.get("open")), _float(q.get("high")),
                        _float(q.get("low")), _float(q.get("close")), _float(q.get("volume")),
                        _float(q.get("adj_close")), _text(q.get("currency")))

    def get_quote_as_of(self, instrument_id: str, as_of: dt.datetime) -> QuoteRow | None:
        """The latest bar of any interval with ``event_time <= as_of`` (best source on ties),
        as ``SqliteServingStore.get_quote_as_of``.

        One point read of the latest-quote row answers when every source's latest bar is at or
        before ``as_of`` (the usual case for daily bars); otherwise one multi-range scan of the
        instrument's bar rows (every interval) from a week before ``as_of``, then, only when
        that finds nothing, from the beginning.

        Raises:
            ValueError: ``as_of`` is naive.
        """
        as_of = utc(as_of)
        times = [_time(q["event_time"]) for q in self._quotes(instrument_id).values()
                 if "event_time" in q]
        if not times:
            return None
        if max(times) <= as_of:
            return self.get_quote(instrument_id)
        for since in (as_of - dt.timedelta(days=7), None):
            best = self._latest_bar_before(instrument_id, as_of, since)
            if best is not None:
                return QuoteRow(best.instrument_id, best.source, best.session_date,
                                best.event_time, best.open, best.high, best.low, best.close,
                                best.volume, best.adj_close, best.currency)
        return None

    def _latest_bar_before(self, instrument_id: str, as_of: dt.datetime,
                           since: dt.datetime | None) -> BarRow | None:
        from google.cloud.bigtable.row_set import RowSet

        first = f"{since:%Y%m%d}" if since is not None else ""
        last = f"{as_of + dt.timedelta(days=2):%Y%m%d}"  # session dates are exchange-local
        row_set = RowSet()
        for interval in _BAR_INTERVALS:
            prefix = f"{instrument_id}{rowkeys.SEP}{interval}{rowkeys.SEP}"
            row_set.add_row_range_from_keys(start_key=(prefix + first).encode(),
                                            end_key=_after(prefix + last))
        best: BarRow | None = None
        best_rank: tuple = ()
        for row in self._tables[PRICES].read_rows(row_set=row_set, filter_=self._filter("bar")):
            for bar in _bar_rows_of(row, None):
                if bar.event_time is None or bar.event_time > as_of:
                    continue
                rank = (-bar.event_time.timestamp(), self._rank.get(bar.source, 1_000),
                        bar.source)
                if best is None or rank < best_rank:
                    best, best_rank = bar, rank
        return best

    def get_bars(self, instrument_id: str, *, interval: str = "1d", start: dt.date | None = None,
                 end: dt.date | None = None, source: str | None = None,
                 limit: int = 10_000, after: tuple[str, str] | None = None) -> list[BarRow]:
        lo = rowkeys.bar_key(instrument_id, interval, start or dt.date(1, 1, 1))
        hi = rowkeys.bar_key(instrument_id, interval, end or dt.date(9999, 12, 31))
        if after is not None:  # keyset pagination: resume at the cursor's row
            lo = max(lo, after[0])
        qualifier = None if source is None else re.escape(source) + r":\C*"
        rows = self._tables[PRICES].read_rows(start_key=lo.encode(), end_key=_after(hi),
                                              limit=limit + (after is not None),
                                              filter_=self._filter("bar|flag", qualifier))
        out: list[BarRow] = []
        for row in rows:
            out.extend(b for b in _bar_rows_of(row, source)
                       if after is None or (b.row_key, b.source) > after)
            if len(out) >= limit:
                break
        return out[:limit]

    def get_predictions(self, instrument_id: str, *, start: dt.date | None = None,
                        end: dt.date | None = None, limit: int = 10_000,
                        role: str | None = "champion",
                        after: tuple[str, str, str] | None = None) -> list[PredictionRow]:
        """Predictions by as-of date in time order (a key-range scan; a challenger's row sorts
        right after the champion's of the same session).

        Args:
            role: ``champion`` (default: "the" predictions), ``challenger``, or None for both.
            after: ``(row_key, model_name, model_version)``: only rows strictly after it.
        """
        lo = rowkeys.prediction_key(instrument_id, "1d", start or dt.date(1, 1, 1))
        hi = rowkeys.prediction_key(instrument_id, "1d", end or dt.date(9999, 12, 31))
        if after is not None:  # keyset pagination: resume at the cursor's row
            lo = max(lo, after[0])
        out: list[Prediction] = []
        for row in self._tables[PRICES].read_rows(start_key=lo.encode(), end_key=_after(hi),
                                                  filter_=self._filter("pred")):
            key = row.row_key.decode()
            out.extend(p for p in _predictions_of(row) if (role is None or p.role == role)
                       and (after is None or (key, p.model_name, p.model_version) > after))
            if len(out) >= limit:
                break
        return out[:limit]

    def get_alerts(self, *, instrument_id: str | None = None, since: dt.datetime | None = None,
                   limit: int = 1_000,
                   after: tuple[dt.datetime, str] | None = None) -> list[AlertEvent]:
        """Alerts with ``event_time >= since``, newest first. With an instrument: a key-range
        scan from two days before ``since`` (session dates are exchange-local); without one:
        a scan of the alerts table (at most one alert per rule, instrument and session)."""
        table = self._tables[ALERTS]
        if instrument_id is not None:
            prefix = instrument_id + rowkeys.SEP
            start = prefix
            if since is not None:
                start += f"{utc(since).date() - dt.timedelta(days=2):%Y%m%d}"
            rows = table.read_rows(start_key=start.encode(), end_key=_after(prefix),
                                   filter_=self._filter("alert"))
        else:
            rows = table.read_rows(filter_=self._filter("alert"))
        alerts = [_alert_of(r) for r in rows]
        if since is not None:
            alerts = [a for a in alerts if a.event_time >= utc(since)]
        if after is not None:  # keyset pagination, newest first
            t, alert_id = utc(after[0]), after[1]
            alerts = [a for a in alerts
                      if a.event_time < t or (a.event_time == t and a.alert_id > alert_id)]
        alerts.sort(key=lambda a: a.alert_id)
        alerts.sort(key=lambda a: a.event_time, reverse=True)
        return alerts[:limit]

    def get_dead_letters(self, *, reason: str | None = None,
                         limit: int = 1_000) -> list[DeadLetter]:
        """Dead letters in key order (reason, step, id), optionally of one reason."""
        kwargs: dict[str, Any] = {}
        if reason is not None:
            prefix = _part(reason) + rowkeys.SEP
            kwargs = {"start_key": prefix.encode(), "end_key": _after(prefix)}
        rows = self._tables[DEAD_LETTERS].read_rows(limit=limit, filter_=self._filter("dl"),
                                                    **kwargs)
        return [_dead_letter_of(r) for r in rows]

    # -- model performance (tracking) ------------------------------------------------------
    def _performance_rows(self, model_name: str, model_version: str,
                          instrument_id: str | None, start: dt.date | None,
                          end: dt.date | None, limit: int | None = None):
        if instrument_id is None:
            lo = hi = performance_key(model_name, model_version)
        else:
            lo = (performance_key(model_name, model_version, instrument_id, start) if start
                  else performance_key(model_name, model_version, instrument_id))
            hi = (performance_key(model_name, model_version, instrument_id, end) if end
                  else performance_key(model_name, model_version, instrument_id))
        out: list[ModelPerformance] = []
        for row in self._tables[PERFORMANCE_TABLE].read_rows(
                start_key=lo.encode(), end_key=_after(hi), filter_=self._filter("perf")):
            r = _performance_of(row)
            if (start is None or r.target_date >= start) and (end is None or r.target_date <= end):
                out.append(r)
                if limit is not None and len(out) >= limit:
                    break
        return out

    def get_model_performance(self, model_name: str, model_version: str, *,
                              instrument_id: str | None = None, start: dt.date | None = None,
                              end: dt.date | None = None,
                              limit: int = 10_000) -> list[ModelPerformance]:
        """Rows of one model version, by instrument then target date (a key-range scan; with
        an instrument, the date range narrows the scan)."""
        return self._performance_rows(model_name, model_version, instrument_id, start, end,
                                      limit)

    def summarize_model_performance(self, model_name: str, model_version: str, *,
                                    instrument_id: str | None = None,
                                    start: dt.date | None = None,
                                    end: dt.date | None = None) -> list[PerformanceSummary]:
        """Per-instrument ``summarize_performance`` of the same rows (summed client-side)."""
        return summarize_performance(self._performance_rows(model_name, model_version,
                                                            instrument_id, start, end))

    def list_performance_versions(self) -> list[PerformanceSummary]:
        """One summary per model name and version (a scan of the whole table)."""
        rows = (_performance_of(r) for r in self._tables[PERFORMANCE_TABLE].read_rows(
            filter_=self._filter("perf")))
        return sorted(summarize_performance(rows, by_instrument=False),
                      key=lambda s: (s.model_name, int(s.model_version)
                                     if s.model_version.isdigit() else 0, s.model_version))

    def get_bar_revisions(self, instrument_id: str, *, interval: str = "1d",
                          start: dt.date | None = None, end: dt.date | None = None,
                          source: str | None = None, limit: int = 1_000) -> list[RevisionRow]:
        """Superseded revisions: family ``rev`` of the bars' rows (qualifier
        ``{source}:{sha1 of the payload}``), in row-key, source and payload-hash order."""
        import json

        lo = rowkeys.bar_key(instrument_id, interval, start or dt.date(1, 1, 1))
        hi = rowkeys.bar_key(instrument_id, interval, end or dt.date(9999, 12, 31))
        qualifier = None if source is None else re.escape(source) + r":\C*"
        out: list[RevisionRow] = []
        for row in self._tables[PRICES].read_rows(start_key=lo.encode(), end_key=_after(hi),
                                                  filter_=self._filter("rev", qualifier)):
            key = row.row_key.decode()
            for q, cells in sorted(row.cells.get("rev", {}).items()):
                body = json.loads(cells[0].value)
                payload = body["payload"]
                out.append(RevisionRow(key, q.decode().rsplit(":", 1)[0],
                                       json.loads(payload).get("event_id", ""), payload,
                                       body.get("origin", ""), body.get("position", ""),
                                       body.get("superseded_by", "")))
            if len(out) >= limit:
                break
        return out[:limit]

    def ping(self) -> bool:
        """Cheap health check: a point read of a key that never exists answers."""
        from google.api_core import exceptions

        try:
            self._tables[INSTRUMENTS].read_row(b"\x00ping")
        except exceptions.GoogleAPICallError:
            return False
        return True

    def counts(self) -> dict[str, int]:
        """Row counts with the SQLite store's names (no ``outbox``): full key-only scans."""
        from google.cloud.bigtable import row_filters as rf

        keys_only = rf.RowFilterChain(filters=[rf.CellsColumnLimitFilter(1),
                                               rf.StripValueTransformerFilter(True)])
        out = {"instruments": 0, "bars": 0, "bar_flags": 0, "quotes": 0, "predictions": 0,
               "alerts": 0, "dead_letters": 0, "bar_revisions": 0}
        for row in self._tables[PRICES].read_rows(filter_=keys_only):
            families = row.cells
            out["bars"] += sum(q.endswith(b":event_id") for q in families.get("bar", {}))
            out["bar_flags"] += len(families.get("flag", {}))
            out["bar_revisions"] += len(families.get("rev", {}))
            out["predictions"] += sum(q.endswith(b":predicted_price")
                                      for q in families.get("pred", {}))
            out["quotes"] += bool(families.get("quote"))
        row_only = rf.RowFilterChain(filters=[rf.CellsRowLimitFilter(1),
                                              rf.StripValueTransformerFilter(True)])
        out["instruments"] = sum(1 for _ in self._tables[INSTRUMENTS].read_rows(
            end_key=_ALIAS_PREFIX.encode(), filter_=row_only))
        out["alerts"] = sum(1 for _ in self._tables[ALERTS].read_rows(filter_=row_only))
        out["dead_letters"] = sum(1 for _ in self._tables[DEAD_LETTERS].read_rows(filter_=row_only))
        return out


def _chunks(rows: list) -> Iterable[list]:
    """Split rows into MutateRows requests below Bigtable's mutation limit."""
    chunk: list = []
    mutations = 0
    for row in rows:
        m = len(row._get_mutations())
        if chunk and mutations + m > _MAX_MUTATIONS_PER_REQUEST:
            yield chunk
            chunk, mutations = [], 0
        chunk.append(row)
        mutations += m
    if chunk:
        yield chunk
