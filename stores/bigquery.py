"""BigQuery tables for analytics: one definition in code, row conversion and the Beam write.

``TABLE_SPECS`` defines every table (BigQuery JSON schema, DAY partitioning on the event date,
clustering by instrument); ``miraikakaku init-gcp`` creates the tables from it (``to_bq_table``)
and ``WriteRecordsToBigQuery`` hands the same schema and partitioning to Beam's
``WriteToBigQuery``. ``to_bq_row`` turns a record into ``(table, row)``; rows BigQuery rejects
come back from ``WriteToBigQuery`` as ``failed_rows_with_errors`` and are written, with the error,
to the ``bq_dead_letters`` table (``ConvertFailedRows``).

Tables: ``bars`` (daily and intraday bars, one row per source and bar), ``ticks`` (trades: the
``tick`` interval has ~1,000 times the rows of the bars and another shape, price and size, so it
has its own table and bar queries never scan trades), ``bar_flags`` (flags the feature step adds
to stored bars), ``predictions``, ``alerts``, ``model_performance`` (tracked prediction errors
per model version, instrument and realized session), ``dead_letters`` (the pipeline's dead
letters), ``quality_results`` (in-stream data-quality outcomes per window, instrument and rule;
partitioned on ``window_start``) and ``bq_dead_letters`` (rows BigQuery rejected). Price
tables are partitioned on ``session_date`` (the exchange-local trading date: the date analysts
filter on), predictions on ``as_of_date``, model performance on ``target_date``,
dead letters on ``event_time`` (letters without one land in the ``__NULL__`` partition), rejected
rows on ``failed_at`` (an operational table read by recency). Instruments are reference data,
loaded from ``miraikakaku/reference/instruments.csv`` rather than streamed: the write counts and
skips them (counter ``skipped_instruments``).

Idempotency: every row has an ``insert_id`` column, deterministic per record (``insert_id``:
the event id, alert id, dead-letter id, ...). Beam's ``WriteToBigQuery`` (2.74) does not take
caller-supplied insert ids for streaming inserts: it generates its own per bundle
(``_StreamToBigQuery.InsertIdPrefixFn``), which makes its own retries idempotent but not a replay
of the same message, and BigQuery's insert-id de-duplication is best effort for about a minute
anyway. So analytics SQL de-duplicates on the ``insert_id`` column
(``QUALIFY ROW_NUMBER() OVER (PARTITION BY insert_id) = 1``); the column is the durable key.

How this is tested here, without a BigQuery emulator (none works offline;
``tests/unit/test_bigquery_schema.py``): every schema is valid BigQuery JSON schema and converts
with both Beam's and google-cloud-bigquery's parsers; partition and clustering fields exist with
allowed types; ``to_bq_row`` of real records has exactly each schema's fields with JSON values of
the right types; insert ids are deterministic; ``ConvertFailedRows`` turns tuples in the exact
shape ``WriteToBigQuery`` emits (``(destination, row, errors)``, ``errors`` a list of error dicts
or, for an oversized row, a string) into ``bq_dead_letters`` rows; and the whole composite runs on
the DirectRunner with Beam's ``test_client`` hook standing in for BigQuery's ``insertAll``,
which rejects chosen rows, so the real ``failed_rows_with_errors`` path feeds the dead-letter
table. Only a real project can check: that BigQuery accepts the rows (type coercion of
RFC 3339 strings, ``NaN`` strings in FLOAT columns), table creation with partitioning and
clustering (``init-gcp`` and ``CREATE_IF_NEEDED``), the real error payloads and which reasons are
transient under ``RETRY_ON_TRANSIENT_ERROR``, streaming-buffer latency, quotas and IAM, and the
partition pruning and clustering of the analytics queries.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import logging
import math
from collections.abc import Callable, Mapping
from typing import Any

import apache_beam as beam
from apache_beam.io.gcp.bigquery import BigQueryDisposition, WriteToBigQuery
from apache_beam.io.gcp.bigquery_tools import RetryStrategy
from apache_beam.metrics import Metrics

from miraikakaku import rowkeys
from miraikakaku.instruments import Instrument
from miraikakaku.schema import AlertEvent, DeadLetter, Prediction, PriceEvent, utc
from miraikakaku.tracking import PERFORMANCE_COLUMNS, PERFORMANCE_TABLE, ModelPerformance
from stores.base import BarFlag
from transforms.features import FEATURE_NAMES, FeatureVector

__all__ = [
    "TableSpec",
    "TABLE_SPECS",
    "FEATURES_TABLE",
    "BQ_DEAD_LETTERS",
    "QUALITY_RESULTS_TABLE",
    "to_bq_row",
    "insert_id",
    "to_bq_table",
    "failed_row_to_dead_letter",
    "ConvertFailedRows",
    "WriteRecordsToBigQuery",
]

_LOG = logging.getLogger(__name__)

BQ_DEAD_LETTERS = "bq_dead_letters"
"""The table of rows BigQuery rejected."""


def _f(name: str, type_: str, mode: str = "NULLABLE", description: str = "") -> dict[str, str]:
    return {"name": name, "type": type_, "mode": mode, "description": description}


def _req(name: str, type_: str, description: str = "") -> dict[str, str]:
    return _f(name, type_, "REQUIRED", description)


@dataclasses.dataclass(frozen=True)
class TableSpec:
    """One BigQuery table.

    Attributes:
        name: table id within the dataset.
        description: what a row is.
        fields: BigQuery JSON schema fields (``name``, ``type``, ``mode``, ``description``).
        partition_field: DATE or TIMESTAMP column of the DAY time partitioning.
        clustering_fields: clustering columns, most selective first (at most four).
    """

    name: str
    description: str
    fields: tuple[dict[str, str], ...]
    partition_field: str
    clustering_fields: tuple[str, ...]

    @property
    def schema(self) -> dict[str, list[dict[str, str]]]:
        """``{"fields": [...]}``: the form ``WriteToBigQuery(schema=...)`` and the API take."""
        return {"fields": [dict(f) for f in self.fields]}

    @property
    def field_names(self) -> list[str]:
        """Column names in schema order."""
        return [f["name"] for f in self.fields]

    @property
    def additional_bq_parameters(self) -> dict[str, Any]:
        """``timePartitioning`` and ``clustering`` as ``WriteToBigQuery`` passes them on
        table creation (REST ``Table`` resource form)."""
        return {"timePartitioning": {"type": "DAY", "field": self.partition_field},
                "clustering": {"fields": list(self.clustering_fields)}}


_INSERT_ID = _req("insert_id", "STRING", "deterministic row id: de-duplicate on it")
_PRICE_COMMON = (
    _req("event_id", "STRING", "{source}/{instrument_id}/{interval}/{start}/{sequence}"),
    _req("instrument_id", "STRING", "exchange-qualified id, e.g. XNAS:AAPL"),
    _req("symbol", "STRING", "ticker as the source spelled it"),
    _req("source", "STRING", "data source name"),
)

TABLE_SPECS: dict[str, TableSpec] = {s.name: s for s in (
    TableSpec("bars", "One OHLCV bar (1d, 1h, 1m, 1s) per source; prices in currency.", (
        _INSERT_ID, *_PRICE_COMMON,
        _req("interval", "STRING", "1d, 1h, 1m or 1s"),
        _req("session_date", "DATE", "exchange-local trading date"),
        _req("event_time", "TIMESTAMP", "bar end (daily: session close), UTC"),
        _req("open", "FLOAT"), _req("high", "FLOAT"), _req("low", "FLOAT"),
        _req("close", "FLOAT"),
        _f("volume", "FLOAT", description="shares traded; NULL when the source has none"),
        _f("adj_close", "FLOAT", description="adjusted close; NULL when the source has none"),
        _req("currency", "STRING", "ISO 4217"),
        _f("flags", "STRING", "REPEATED", "quality flags at ingest"),
        _req("schema_version", "INTEGER"),
        _f("ingested_at", "TIMESTAMP",
           description="when this revision was written, UTC: the latest of an event_id wins"),
    ), "session_date", ("instrument_id", "interval", "source")),
    TableSpec("ticks", "One trade; price in currency, size in shares.", (
        _INSERT_ID, *_PRICE_COMMON,
        _req("sequence", "INTEGER", "per-source sequence number"),
        _req("session_date", "DATE", "exchange-local trading date"),
        _req("event_time", "TIMESTAMP", "trade time, UTC (millisecond precision)"),
        _req("price", "FLOAT"),
        _f("size", "FLOAT"),
        _req("currency", "STRING", "ISO 4217"),
        _f("flags", "STRING", "REPEATED", "quality flags, e.g. suspicious"),
        _req("schema_version", "INTEGER"),
    ), "session_date", ("instrument_id", "source")),
    TableSpec("bar_flags", "A quality flag the feature step put on a stored bar.", (
        _INSERT_ID,
        _req("row_key", "STRING", "the bar's serving-store row key"),
        _req("instrument_id", "STRING"),
        _req("interval", "STRING"),
        _req("bar_date", "DATE", "date in the bar's key (daily bars: the session date)"),
        _req("source", "STRING"),
        _req("flag", "STRING"),
        _f("detail", "STRING"),
    ), "bar_date", ("instrument_id", "flag")),
    TableSpec("predictions", "A next-session forecast made at the close of as_of_date.", (
        _INSERT_ID,
        _req("instrument_id", "STRING"),
        _req("source", "STRING", "the source whose bars fed the features"),
        _req("as_of_date", "DATE"),
        _req("as_of_time", "TIMESTAMP"),
        _req("target_date", "DATE"),
        _req("base_price", "FLOAT"),
        _req("predicted_log_return", "FLOAT"),
        _req("predicted_price", "FLOAT"),
        _req("model_name", "STRING"),
        _req("model_version", "STRING", "version of the model that answered: the integer "
             "directory name locally, vertex-<deployedModelId> from a Vertex AI endpoint"),
        _f("role", "STRING", description="champion (the prediction) or challenger; NULL in "
           "rows written before roles existed means champion"),
    ), "as_of_date", ("instrument_id", "model_name")),
    TableSpec("alerts", "A market alert fired by a rule.", (
        _INSERT_ID,
        _req("alert_id", "STRING", "{rule_id}/{instrument_id}/{yyyymmdd}"),
        _req("rule_id", "STRING"),
        _req("kind", "STRING"),
        _req("instrument_id", "STRING"),
        _req("event_time", "TIMESTAMP"),
        _req("session_date", "DATE"),
        _req("value", "FLOAT"),
        _req("threshold", "FLOAT"),
        _req("message", "STRING"),
    ), "session_date", ("instrument_id", "rule_id")),
    TableSpec("dead_letters", "A record the pipeline could not process, with why.", (
        _INSERT_ID,
        _req("dead_letter_id", "STRING"),
        _req("step", "STRING"),
        _req("reason", "STRING"),
        _req("detail", "STRING"),
        _req("payload", "STRING"),
        _req("origin", "STRING"),
        _f("event_time", "TIMESTAMP", description="NULL when it could not be read"),
        _req("position", "STRING", "where in origin: line:<n>, row:<n>, message:<id>; empty "
             "when the record has none"),
    ), "event_time", ("step", "reason")),
    TableSpec(BQ_DEAD_LETTERS, "A row BigQuery rejected, with the error.", (
        _INSERT_ID,
        _req("table_name", "STRING", "the table the row was meant for"),
        _req("destination", "STRING", "project:dataset.table as Beam reported it"),
        _f("row_insert_id", "STRING", description="the rejected row's insert_id"),
        _f("instrument_id", "STRING"),
        _req("row_json", "STRING", "the rejected row as JSON"),
        _req("error_reason", "STRING", "first error's reason, e.g. invalid"),
        _req("error_message", "STRING"),
        _req("errors_json", "STRING", "every error as JSON"),
        _req("failed_at", "TIMESTAMP", "when the pipeline received the rejection"),
    ), "failed_at", ("table_name", "instrument_id")),
)}
"""Table name → spec: the one definition of the BigQuery tables."""

TABLE_SPECS[PERFORMANCE_TABLE] = TableSpec(
    PERFORMANCE_TABLE,
    "Prediction errors of one model version on one instrument for one realized session.",
    (_INSERT_ID, *(_f(c.name, c.type, "REQUIRED" if c.required else "NULLABLE", c.description)
                   for c in PERFORMANCE_COLUMNS)),
    "target_date", ("instrument_id", "model_name", "model_version"))
"""Columns from ``miraikakaku.tracking.PERFORMANCE_COLUMNS`` (the definition the SQLite and
Bigtable stores use too). A rewrite of a row (the batch job rerun after late bars) appends a row
with the same ``insert_id``; de-duplicate on it keeping the latest."""


# -- row conversion ------------------------------------------------------------------------
def _ts(value: dt.datetime) -> str:
    """RFC 3339 UTC timestamp with microseconds (``2018-02-07T21:00:00.000000Z``)."""
    return utc(value).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _num(value: float | None) -> float | str | None:
    """A FLOAT cell: a float, or BigQuery's string spelling for a non-finite value."""
    if value is None:
        return None
    value = float(value)
    if math.isfinite(value):
        return value
    return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")


FEATURES_TABLE = "features"
TABLE_SPECS[FEATURES_TABLE] = TableSpec(
    FEATURES_TABLE,
    "The feature vector of one instrument's session, from the source that fed the features.",
    (
        _req("insert_id", "STRING", "deterministic row id: de-duplicate on it"),
        _req("instrument_id", "STRING", "exchange-qualified id, e.g. XNAS:AAPL"),
        _req("source", "STRING", "the source whose bars fed the features"),
        _req("session_date", "DATE", "exchange-local trading date"),
        _req("event_time", "TIMESTAMP", "the session's close, UTC"),
        *(_req(n, "FLOAT", "transforms/features.py (float32 as the model sees it)")
          for n in FEATURE_NAMES),
    ),
    "session_date", ("instrument_id", "source"))
"""``features``: one column per ``transforms.features.FEATURE_NAMES`` (the single list of
feature keys); rows from ``FeatureVector`` (each window's last feature vector)."""

QUALITY_RESULTS_TABLE = "quality_results"
TABLE_SPECS[QUALITY_RESULTS_TABLE] = TableSpec(
    QUALITY_RESULTS_TABLE,
    "One data-quality rule's outcome on one instrument's events in one event-time window.",
    (
        _INSERT_ID,
        _req("window_start", "TIMESTAMP", "quality window start, UTC (inclusive)"),
        _req("window_end", "TIMESTAMP", "quality window end, UTC (exclusive)"),
        _req("instrument_id", "STRING", "exchange-qualified id, e.g. XNAS:AAPL"),
        _req("suite", "STRING", "expectation suite, e.g. price_events (quality/suites.py)"),
        _req("rule", "STRING", "rule name: the dead-letter reason or flag it gives"),
        _req("severity", "STRING", "block (dead letter) or flag (stored with the flag)"),
        _req("evaluated", "INTEGER", "rows of the instrument in the window the rule evaluated"),
        _req("failed", "INTEGER", "rows among them that failed the rule"),
        _req("run_id", "STRING", "pipeline run: Dataflow job name or local-<UTC start>"),
        _req("validated_at", "TIMESTAMP", "when the row was made (processing time, UTC)"),
        _req("pane_index", "INTEGER", "Beam pane of the window: 0 on time, > 0 late rows only"),
    ),
    "window_start", ("instrument_id", "rule"))
"""``quality_results``: rows from ``quality.stream.QualityResult`` (in-stream validation,
``--validation suite``); the panes of one window add up (late panes count only late rows)."""


def insert_id(record: object) -> str:
    """Deterministic insert id of a record: a replay of the record gets the same id.

    Raises:
        TypeError: for a record type that has no BigQuery table.
    """
    if isinstance(record, PriceEvent):
        # a correction (same event id, other values) is another row, a replay the same row
        digest = hashlib.sha1(record.to_json().encode()).hexdigest()[:16]
        return f"{record.event_id}/{digest}"
    if isinstance(record, BarFlag):
        return f"{record.row_key}/{record.source}/{record.flag}"
    if isinstance(record, Prediction):
        pid = (f"{record.instrument_id}/{record.as_of_date:%Y%m%d}/{record.model_name}/"
               f"{record.model_version}")
        return pid if record.role == "champion" else f"{pid}/{record.role}"
    if isinstance(record, AlertEvent):
        return record.alert_id
    if isinstance(record, DeadLetter):
        return record.dead_letter_id
    if isinstance(record, ModelPerformance):
        return (f"{record.model_name}/{record.model_version}/{record.instrument_id}/"
                f"{record.target_date:%Y%m%d}")
    if isinstance(record, FeatureVector):
        return record.insert_id
    if _is_quality_result(record):
        return record.insert_id
    raise TypeError(f"no BigQuery table for a {type(record).__name__}")


def _is_quality_result(record: object) -> bool:
    # imported late: quality.stream pulls in the quality package only when its rows appear
    from quality.stream import QualityResult

    return isinstance(record, QualityResult)


def _price_row(e: PriceEvent) -> tuple[str, dict[str, Any]]:
    common = {"insert_id": insert_id(e), "event_id": e.event_id,
              "instrument_id": e.instrument_id, "symbol": e.symbol, "source": e.source}
    if e.interval == "tick":
        return "ticks", {**common, "sequence": int(e.sequence),
                         "session_date": e.session_date.isoformat(),
                         "event_time": _ts(e.event_time), "price": _num(e.close),
                         "size": _num(e.volume), "currency": e.currency,
                         "flags": list(e.flags), "schema_version": int(e.schema_version)}
    return "bars", {**common, "interval": e.interval, "session_date": e.session_date.isoformat(),
                    "event_time": _ts(e.event_time), "open": _num(e.open), "high": _num(e.high),
                    "low": _num(e.low), "close": _num(e.close), "volume": _num(e.volume),
                    "adj_close": _num(e.adj_close), "currency": e.currency,
                    "flags": list(e.flags), "schema_version": int(e.schema_version),
                    "ingested_at": _ts(_INGEST_TIME[0])}


_INGEST_TIME = [dt.datetime.now(dt.timezone.utc)]


def start_ingest(at: dt.datetime | None = None) -> dt.datetime:
    """Set the ``ingested_at`` of the bar rows this process writes from now on.

    The column orders revisions across runs (the correction policy: the latest ingest of an
    event id wins in ``daily_bars``), so it is one time per run, not per row: every row of a
    run — and every ``to_bq_row`` call of it, so rows compare equal — carries the run's start.
    ``pipelines.prices.run`` calls this when a run starts; a process that never calls it (a
    Dataflow worker) uses the time it imported this module, which is after its job started.

    Args:
        at: the time (aware, UTC); default now.

    Returns:
        The time set.
    """
    _INGEST_TIME[0] = at.astimezone(dt.timezone.utc) if at else dt.datetime.now(dt.timezone.utc)
    return _INGEST_TIME[0]


def _bar_date(row_key: str) -> str:
    text = row_key.split(rowkeys.SEP)[2]
    return dt.datetime.strptime(text[:8], "%Y%m%d").date().isoformat()


def to_bq_row(record: object) -> tuple[str, dict[str, Any]]:
    """Convert a record into ``(table name, row)`` for ``TABLE_SPECS[table name]``.

    Rows have every schema field (NULL as None), timestamps as RFC 3339 UTC strings, dates as
    ISO 8601, numbers as floats (non-finite ones as ``"NaN"``/``"Infinity"`` strings, which
    BigQuery accepts and JSON can carry) and flags as a list of strings.

    Raises:
        TypeError: for a record type without a table (``Instrument`` and anything else).
    """
    if isinstance(record, PriceEvent):
        return _price_row(record)
    if isinstance(record, ModelPerformance):
        row = {"insert_id": insert_id(record), **record.to_row()}
        row["target_date"] = record.target_date.isoformat()
        return PERFORMANCE_TABLE, {k: _num(v) if isinstance(v, float) else v
                                   for k, v in row.items()}
    if isinstance(record, BarFlag):
        parts = record.row_key.split(rowkeys.SEP)
        return "bar_flags", {"insert_id": insert_id(record), "row_key": record.row_key,
                             "instrument_id": parts[0], "interval": parts[1],
                             "bar_date": _bar_date(record.row_key), "source": record.source,
                             "flag": record.flag, "detail": record.detail}
    if isinstance(record, Prediction):
        p = record
        return "predictions", {
            "insert_id": insert_id(p), "instrument_id": p.instrument_id, "source": p.source,
            "as_of_date": p.as_of_date.isoformat(), "as_of_time": _ts(p.as_of_time),
            "target_date": p.target_date.isoformat(), "base_price": _num(p.base_price),
            "predicted_log_return": _num(p.predicted_log_return),
            "predicted_price": _num(p.predicted_price), "model_name": p.model_name,
            "model_version": str(p.model_version), "role": p.role}
    if isinstance(record, AlertEvent):
        a = record
        return "alerts", {
            "insert_id": insert_id(a), "alert_id": a.alert_id, "rule_id": a.rule_id,
            "kind": a.kind, "instrument_id": a.instrument_id, "event_time": _ts(a.event_time),
            "session_date": a.session_date.isoformat(), "value": _num(a.value),
            "threshold": _num(a.threshold), "message": a.message}
    if isinstance(record, FeatureVector):
        row: dict[str, Any] = {
            "insert_id": record.insert_id, "instrument_id": record.instrument_id,
            "source": record.source, "session_date": record.session_date.isoformat(),
            "event_time": _ts(record.event_time)}
        row.update({n: _num(v) for n, v in zip(FEATURE_NAMES, record.values, strict=True)})
        return FEATURES_TABLE, row
    if isinstance(record, DeadLetter):
        d = record
        return "dead_letters", {
            "insert_id": insert_id(d), "dead_letter_id": d.dead_letter_id, "step": d.step,
            "reason": d.reason, "detail": d.detail, "payload": d.payload, "origin": d.origin,
            "event_time": _ts(d.event_time) if d.event_time is not None else None,
            "position": d.position}
    if _is_quality_result(record):
        q = record
        return QUALITY_RESULTS_TABLE, {
            "insert_id": q.insert_id, "window_start": _ts(q.window_start),
            "window_end": _ts(q.window_end), "instrument_id": q.instrument_id, "suite": q.suite,
            "rule": q.rule, "severity": q.severity, "evaluated": int(q.evaluated),
            "failed": int(q.failed), "run_id": q.run_id, "validated_at": _ts(q.validated_at),
            "pane_index": int(q.pane_index)}
    raise TypeError(f"no BigQuery table for a {type(record).__name__}")


def to_bq_table(spec: TableSpec, project: str, dataset: str):
    """The ``google.cloud.bigquery.Table`` for ``spec`` (schema, partitioning, clustering)."""
    from google.cloud import bigquery

    table = bigquery.Table(f"{project}.{dataset}.{spec.name}",
                           schema=[bigquery.SchemaField.from_api_repr(f) for f in spec.fields])
    table.description = spec.description
    table.time_partitioning = bigquery.TimePartitioning(
        type_=bigquery.TimePartitioningType.DAY, field=spec.partition_field)
    table.clustering_fields = list(spec.clustering_fields)
    return table


# -- rejected rows -------------------------------------------------------------------------
def _table_name(destination: Any) -> str:
    table_id = getattr(destination, "tableId", None)  # a TableReference
    if table_id:
        return str(table_id)
    return str(destination).rsplit(".", 1)[-1].rsplit(":", 1)[-1]


def failed_row_to_dead_letter(failed: tuple[Any, Mapping[str, Any], Any], *,
                              failed_at: dt.datetime) -> dict[str, Any]:
    """Turn one ``WriteToBigQuery`` failed row into a ``bq_dead_letters`` row.

    Args:
        failed: ``(destination, row, errors)`` as ``WriteResult.failed_rows_with_errors``
            yields it (Beam 2.74, STREAMING_INSERTS): ``destination`` is
            ``"project:dataset.table"``; ``errors`` is BigQuery's list of error dicts
            (``reason``, ``location``, ``debugInfo``, ``message``) or, for a row over the insert
            size limit, a string.
        failed_at: when the rejection was received (UTC).

    Returns:
        A row of ``TABLE_SPECS["bq_dead_letters"]``; its ``insert_id`` depends only on the
        table and the row, so the same rejected row is one dead letter.
    """
    destination, row, errors = failed
    if isinstance(errors, str):
        errors = [{"reason": "row_too_large", "message": errors}]
    errors = [e if isinstance(e, Mapping) else {"reason": "unknown", "message": str(e)}
              for e in (errors or [])]
    table = _table_name(destination)
    row_json = json.dumps(row, sort_keys=True, separators=(",", ":"), default=str)
    first = errors[0] if errors else {"reason": "unknown", "message": "no error given"}
    rid = row.get("insert_id") if isinstance(row, Mapping) else None
    instrument = row.get("instrument_id") if isinstance(row, Mapping) else None
    return {
        "insert_id": hashlib.sha1(f"{table}\x1f{row_json}".encode()).hexdigest(),
        "table_name": table,
        "destination": str(destination),
        "row_insert_id": None if rid is None else str(rid),
        "instrument_id": None if instrument is None else str(instrument),
        "row_json": row_json,
        "error_reason": str(first.get("reason") or "unknown"),
        "error_message": str(first.get("message") or ""),
        "errors_json": json.dumps(errors, sort_keys=True, default=str),
        "failed_at": _ts(failed_at),
    }


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class _FailedRowFn(beam.DoFn):
    def __init__(self, clock: Callable[[], dt.datetime] | None) -> None:
        self._clock = clock or _utc_now
        self._failed = Metrics.counter("WriteRecordsToBigQuery", "bq_dead_letters")

    def process(self, failed):
        row = failed_row_to_dead_letter(failed, failed_at=self._clock())
        self._failed.inc()
        Metrics.counter("WriteRecordsToBigQuery", f"bq_dead_letters:{row['table_name']}").inc()
        _LOG.warning("BigQuery rejected a %s row (%s: %s)", row["table_name"],
                     row["error_reason"], row["error_message"])
        yield row


class ConvertFailedRows(beam.PTransform):
    """``PCollection[(destination, row, errors)]`` (``failed_rows_with_errors``) →
    ``PCollection[dict]`` rows of ``bq_dead_letters`` (see ``failed_row_to_dead_letter``).

    Args:
        clock: returns the current UTC time (default: the system clock); tests fix it.
    """

    def __init__(self, clock: Callable[[], dt.datetime] | None = None) -> None:
        super().__init__()
        self._clock = clock

    def expand(self, failed):
        return failed | "ToDeadLetterRows" >> beam.ParDo(_FailedRowFn(self._clock))


# -- the write -----------------------------------------------------------------------------
class _ToTableRowFn(beam.DoFn):
    """Record → ``TaggedOutput(table, row)``; instruments are counted and skipped."""

    def __init__(self) -> None:
        self._skipped = Metrics.counter("WriteRecordsToBigQuery", "skipped_instruments")

    def process(self, record):
        if isinstance(record, Instrument):
            self._skipped.inc()
            return
        table, row = to_bq_row(record)  # TypeError for an unknown type: a bug, fail loudly
        yield beam.pvalue.TaggedOutput(table, row)


def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))


class WriteRecordsToBigQuery(beam.PTransform):
    """``PCollection[PriceEvent | BarFlag | Prediction | AlertEvent | DeadLetter | Instrument]``
    → ``PCollection[dict]``: the ``bq_dead_letters`` rows written (rows BigQuery rejected).

    Each record becomes a row of its table (``to_bq_row``); each table is written by its own
    ``WriteToBigQuery`` (STREAMING_INSERTS, schema and partitioning/clustering from
    ``TABLE_SPECS``, ``RETRY_ON_TRANSIENT_ERROR``: transient errors are retried, permanent ones
    come back as failed rows). The failed rows of every table are flattened, converted
    (``ConvertFailedRows``) and written to ``bq_dead_letters``; rows that table rejects too are
    counted (``lost_bq_dead_letters``) and logged, the end of the line.

    Args:
        project: Google Cloud project of the dataset.
        dataset: BigQuery dataset id.
        create_disposition: ``CREATE_IF_NEEDED`` (default: a table ``init-gcp`` did not create is
            created from the same spec) or ``CREATE_NEVER``.
        clock: clock of ``ConvertFailedRows`` (tests).
        test_client: passed to every ``WriteToBigQuery`` (Beam's hook for tests: an object
            with ``insert_rows_json``); None in production.
    """

    def __init__(self, project: str, dataset: str, *,
                 create_disposition: str = BigQueryDisposition.CREATE_IF_NEEDED,
                 clock: Callable[[], dt.datetime] | None = None, test_client=None) -> None:
        super().__init__()
        self._project = project
        self._dataset = dataset
        self._create = create_disposition
        self._clock = clock
        self._test_client = test_client

    def table_ref(self, name: str) -> str:
        """``project:dataset.table`` of a table in ``TABLE_SPECS``."""
        return f"{self._project}:{self._dataset}.{name}"

    def _write(self, name: str) -> WriteToBigQuery:
        spec = TABLE_SPECS[name]
        return WriteToBigQuery(
            table=self.table_ref(name), schema=spec.schema,
            method=WriteToBigQuery.Method.STREAMING_INSERTS,
            create_disposition=self._create,
            write_disposition=BigQueryDisposition.WRITE_APPEND,
            additional_bq_parameters=spec.additional_bq_parameters,
            insert_retry_strategy=RetryStrategy.RETRY_ON_TRANSIENT_ERROR,
            test_client=self._test_client)

    def expand(self, records):
        tables = [n for n in TABLE_SPECS if n != BQ_DEAD_LETTERS]
        rows = records | "ToTableRows" >> beam.ParDo(_ToTableRowFn()).with_outputs(*tables)
        failed = [rows[n] | f"Write{_camel(n)}" >> self._write(n) for n in tables]
        dead = (tuple(r.failed_rows_with_errors for r in failed)
                | "FlattenFailedRows" >> beam.Flatten()
                | "ConvertFailedRows" >> ConvertFailedRows(self._clock))
        lost = dead | f"Write{_camel(BQ_DEAD_LETTERS)}" >> self._write(BQ_DEAD_LETTERS)
        _ = lost.failed_rows_with_errors | "CountLostDeadLetters" >> beam.Map(_count_lost)
        return dead


def _count_lost(failed) -> None:
    Metrics.counter("WriteRecordsToBigQuery", "lost_bq_dead_letters").inc()
    _LOG.error("BigQuery rejected a bq_dead_letters row too: %s", failed)
