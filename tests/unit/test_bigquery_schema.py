"""The BigQuery path without BigQuery: table specs, row conversion, insert ids, dead-letter wiring.

No offline BigQuery emulator exists, so this tests everything short of BigQuery itself (see the
``stores/bigquery.py`` docstring for what only a real project can check): every ``TABLE_SPECS``
schema is valid BigQuery JSON schema that both Beam and google-cloud-bigquery parse, partition
and clustering fields exist with allowed types, ``to_bq_row`` rows of real records (AAPL and
7203.T daily bars, IBM trades, dead letters from malformed rows) have exactly their table's
fields with JSON values of the right types, insert ids are deterministic, failed rows in the
exact shape Beam's ``WriteToBigQuery`` emits become ``bq_dead_letters`` rows, and the whole
``WriteRecordsToBigQuery`` composite runs on the DirectRunner with Beam's ``test_client`` hook in
place of BigQuery's ``insertAll`` rejecting chosen rows. Run:
``pytest tests/unit/test_bigquery_schema.py``.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.io.gcp import bigquery_tools
from apache_beam.io.gcp.bigquery import BigQueryDisposition, WriteToBigQuery
from apache_beam.io.gcp.bigquery_tools import RetryStrategy
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to
from google.cloud import bigquery

from miraikakaku import rowkeys
from miraikakaku.instruments import load_master
from miraikakaku.schema import AlertEvent, DeadLetter, Prediction, PriceEvent
from miraikakaku.tracking import ModelPerformance, make_outcome
from quality.stream import MONDAY_OFFSET, QualityResult, window_bounds
from stores.base import BarFlag
from stores.bigquery import (
    BQ_DEAD_LETTERS,
    TABLE_SPECS,
    ConvertFailedRows,
    WriteRecordsToBigQuery,
    failed_row_to_dead_letter,
    insert_id,
    to_bq_row,
    to_bq_table,
)
from tests.conftest import JP, SHARED, SP500, read_rows, write_csv
from transforms.features import BarPoint, FeatureVector, compute_features
from transforms.parsing import file_spec, iter_file

pytestmark = pytest.mark.unit

TICKS = SHARED / "normalized" / "us_tick_trades_lean.normalized.csv.gz"
UTC = dt.timezone.utc
TYPES = {"STRING", "BYTES", "INTEGER", "INT64", "FLOAT", "FLOAT64", "NUMERIC", "BIGNUMERIC",
         "BOOLEAN", "BOOL", "TIMESTAMP", "DATE", "TIME", "DATETIME", "GEOGRAPHY", "JSON",
         "RECORD", "STRUCT"}
CLUSTERABLE = {"STRING", "INTEGER", "INT64", "NUMERIC", "BIGNUMERIC", "BOOLEAN", "BOOL",
               "TIMESTAMP", "DATE", "DATETIME", "GEOGRAPHY"}
MODES = {"NULLABLE", "REQUIRED", "REPEATED"}
NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,299}$")
FIXED_NOW = dt.datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def fixed_clock() -> dt.datetime:
    return FIXED_NOW


def _parse(path: Path) -> list[PriceEvent | DeadLetter]:
    return list(iter_file(file_spec(path)))


@pytest.fixture(scope="module")
def records(tmp_path_factory) -> list[object]:
    """Real records of every kind with a BigQuery table."""
    tmp = tmp_path_factory.mktemp("bq")
    header, aapl = read_rows(SP500, {"AAPL"})
    aapl = aapl[-40:] + [["AAPL", "2018-03-01", "abc", *aapl[-1][3:]],
                         ["AAPL", "2018-03-02", "", *aapl[-1][3:]]]
    parsed = _parse(write_csv(tmp / "us_daily_sp500_5yr_2013_2018.csv", header, aapl))
    jheader, toyota = read_rows(JP, {"7203.T"})
    parsed += _parse(write_csv(tmp / "jp_daily.csv", jheader,
                               [r for r in toyota if r[1] >= "2018-06-01"]))
    theader, trades = read_rows(TICKS, {"IBM"})
    parsed += _parse(write_csv(tmp / "us_tick_trades_lean.csv", theader, trades[:50]))
    events = [e for e in parsed if isinstance(e, PriceEvent)]
    bar = events[-1] if events[-1].interval == "1d" else events[0]
    extra: list[object] = [
        BarFlag(rowkeys.event_key(bar), bar.source, "large_move", "+0.0412"),
        Prediction(bar.instrument_id, bar.source, bar.session_date, bar.event_time,
                   bar.session_date + dt.timedelta(days=1), bar.close, 0.0012,
                   bar.close * math.exp(0.0012), "lstm_daily", "3"),
        Prediction(bar.instrument_id, bar.source, bar.session_date, bar.event_time,
                   bar.session_date + dt.timedelta(days=1), bar.close, math.nan, math.nan,
                   "lstm_daily", "4"),
        AlertEvent(f"pct_move_3/{bar.instrument_id}/{bar.session_date:%Y%m%d}", "pct_move_3",
                   "pct_move", bar.instrument_id, bar.event_time, bar.session_date, 0.041, 0.03,
                   "moved +4.1%"),
        DeadLetter("ValidateEvents", "high_below_low", "high < low", "{}", "test",
                   bar.event_time),
    ]
    # A tracked error: a forecast made at the second-to-last bar, realized by the last one.
    daily = [e for e in events if e.interval == "1d" and e.instrument_id == bar.instrument_id
             and e.source == bar.source]
    before = daily[-2]
    forecast = Prediction(before.instrument_id, before.source, before.session_date,
                          before.event_time, bar.session_date, before.feature_price, 0.0012,
                          before.feature_price * math.exp(0.0012), "lstm_daily", "3")
    extra.append(ModelPerformance.from_outcomes(
        [make_outcome(forecast, bar.feature_price, bar.currency)]))
    # the feature vector of the last real bar, as the pipeline's windows carry it
    points = [BarPoint(e.session_date, float(i), e.feature_price, e.high, e.low, e.close,
                       e.volume) for i, e in enumerate(daily)]
    extra.append(FeatureVector(bar.instrument_id, bar.source, bar.session_date, bar.event_time,
                               compute_features(points)))
    # the in-stream quality outcome of one rule on the last bar's week (quality.stream)
    start, end = window_bounds(bar.event_time, 7 * 86400, MONDAY_OFFSET)
    week = [e for e in daily if start <= e.event_time < end]
    extra.append(QualityResult(start, end, bar.instrument_id, "price_events",
                               "ohlc_inconsistent", "flag", len(week),
                               sum("ohlc_inconsistent" in e.flags for e in week), "local-test",
                               FIXED_NOW))
    return parsed + extra


# -- the table specs ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(TABLE_SPECS))
def test_schema_is_valid_bigquery_json_schema(name):
    spec = TABLE_SPECS[name]
    assert spec.name == name
    fields = spec.schema["fields"]
    names = [f["name"] for f in fields]
    assert len(set(names)) == len(names)
    for f in fields:
        assert NAME.match(f["name"]), f
        assert f["type"] in TYPES and f["mode"] in MODES, f
        assert set(f) <= {"name", "type", "mode", "description", "fields"}
    assert fields[0] == {"name": "insert_id", "type": "STRING", "mode": "REQUIRED",
                         "description": "deterministic row id: de-duplicate on it"}
    # both parsers accept it: Beam's (WriteToBigQuery) and the client library's (init-gcp)
    parsed = bigquery_tools.parse_table_schema_from_json(json.dumps(spec.schema))
    assert [f.name for f in parsed.fields] == names
    assert bigquery_tools.get_dict_table_schema(spec.schema) == spec.schema
    assert [bigquery.SchemaField.from_api_repr(f).to_api_repr()["type"] for f in fields] == [
        f["type"] for f in fields]


@pytest.mark.parametrize("name", sorted(TABLE_SPECS))
def test_partition_and_clustering_fields_exist(name):
    spec = TABLE_SPECS[name]
    by_name = {f["name"]: f for f in spec.fields}
    part = by_name[spec.partition_field]
    assert part["type"] in {"DATE", "TIMESTAMP"} and part["mode"] != "REPEATED"
    assert 1 <= len(spec.clustering_fields) <= 4
    for c in spec.clustering_fields:
        assert by_name[c]["type"] in CLUSTERABLE and by_name[c]["mode"] != "REPEATED"
    if "instrument_id" in by_name and name not in {BQ_DEAD_LETTERS}:
        assert spec.clustering_fields[0] == "instrument_id"
    assert spec.additional_bq_parameters == {
        "timePartitioning": {"type": "DAY", "field": spec.partition_field},
        "clustering": {"fields": list(spec.clustering_fields)}}
    table = to_bq_table(spec, "proj", "ds")
    assert (table.project, table.dataset_id, table.table_id) == ("proj", "ds", name)
    assert table.time_partitioning.type_ == "DAY"
    assert table.time_partitioning.field == spec.partition_field
    assert table.clustering_fields == list(spec.clustering_fields)
    assert [f.name for f in table.schema] == spec.field_names


def test_the_price_tables_are_partitioned_by_session_date_and_clustered_by_instrument():
    for name in ("bars", "ticks", "bar_flags", "predictions", "alerts"):
        spec = TABLE_SPECS[name]
        assert spec.clustering_fields[0] == "instrument_id"
        assert {f["name"]: f["type"] for f in spec.fields}[spec.partition_field] == "DATE"
    assert set(TABLE_SPECS) == {"bars", "ticks", "bar_flags", "predictions", "alerts",
                                "model_performance", "dead_letters", "features",
                                "quality_results", BQ_DEAD_LETTERS}


# -- row conversion ------------------------------------------------------------------------------
def _check_value(field: dict, value) -> None:
    if value is None:
        assert field["mode"] == "NULLABLE", field
        return
    if field["mode"] == "REPEATED":
        assert isinstance(value, list), field
        for v in value:
            _check_value({**field, "mode": "REQUIRED"}, v)
        return
    kind = field["type"]
    if kind == "STRING":
        assert isinstance(value, str)
    elif kind == "FLOAT":
        assert (isinstance(value, float) and math.isfinite(value)) or value in {
            "NaN", "Infinity", "-Infinity"}, (field, value)
    elif kind == "INTEGER":
        assert isinstance(value, int) and not isinstance(value, bool)
    elif kind == "DATE":
        assert dt.date.fromisoformat(value).isoformat() == value
    elif kind == "TIMESTAMP":
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", value), value
        dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    else:  # pragma: no cover - no other types in the specs
        raise AssertionError(f"unchecked type {kind}")


def test_rows_of_real_records_have_exactly_the_schema_fields(records):
    seen = set()
    for record in records:
        table, row = to_bq_row(record)
        seen.add(table)
        spec = TABLE_SPECS[table]
        assert list(row) == spec.field_names, table
        for field in spec.fields:
            _check_value(field, row[field["name"]])
        json.dumps(row, allow_nan=False)  # JSON as the insertAll request carries it
        assert row["insert_id"] == insert_id(record)
    assert seen == set(TABLE_SPECS) - {BQ_DEAD_LETTERS}


def test_row_values(records):
    aapl = next(r for r in records if isinstance(r, PriceEvent) and r.symbol == "AAPL")
    table, row = to_bq_row(aapl)
    assert table == "bars"
    assert row["event_time"] == aapl.event_time.strftime("%Y-%m-%dT%H:%M:%S.000000Z")
    assert row["session_date"] == aapl.session_date.isoformat()
    assert (row["close"], row["adj_close"], row["flags"]) == (aapl.close, None, list(aapl.flags))
    trade = next(r for r in records if isinstance(r, PriceEvent) and r.interval == "tick")
    table, row = to_bq_row(trade)
    assert table == "ticks" and row["price"] == trade.close and row["size"] == trade.volume
    assert row["event_time"].endswith(f".{trade.event_time.microsecond:06d}Z")
    nan = next(r for r in records if isinstance(r, Prediction) and r.model_version == "4")
    assert to_bq_row(nan)[1]["predicted_price"] == "NaN"
    with pytest.raises(TypeError):
        to_bq_row(load_master().lookup("AAPL"))
    with pytest.raises(TypeError):
        insert_id(object())


def test_insert_ids_are_deterministic_and_unique(records, tmp_path):
    ids = [insert_id(r) for r in records]
    assert len(set(ids)) == len(ids)
    header, aapl = read_rows(SP500, {"AAPL"})
    path = write_csv(tmp_path / "us_daily_sp500_5yr_2013_2018.csv", header, aapl[-40:])
    again = [insert_id(r) for r in _parse(path)]
    assert again == [insert_id(r) for r in records[:40]]  # a re-read gives the same ids
    # a bar's insert id is its event id and a content hash: a correction is another row
    event_id = "sp500_5yr/XNAS:AAPL/1d/" + aapl[-40][1].replace("-", "") + "/0"
    assert again[0].startswith(event_id + "/") and len(again[0]) == len(event_id) + 17


# -- rejected rows -------------------------------------------------------------------------------
BIGQUERY_ERRORS = [{"reason": "invalid", "location": "close", "debugInfo": "",
                    "message": "Cannot convert value to floating point (bad value): abc"}]


def test_failed_row_to_dead_letter_both_error_shapes(records):
    _, row = to_bq_row(records[0])
    dl = failed_row_to_dead_letter(("proj:ds.bars", row, BIGQUERY_ERRORS), failed_at=FIXED_NOW)
    assert list(dl) == TABLE_SPECS[BQ_DEAD_LETTERS].field_names
    assert dl["table_name"] == "bars" and dl["destination"] == "proj:ds.bars"
    assert json.loads(dl["row_json"]) == row
    assert dl["row_insert_id"] == row["insert_id"]
    assert dl["instrument_id"] == row["instrument_id"]
    assert (dl["error_reason"], dl["error_message"]) == ("invalid", BIGQUERY_ERRORS[0]["message"])
    assert json.loads(dl["errors_json"]) == BIGQUERY_ERRORS
    assert dl["failed_at"] == "2024-05-01T12:00:00.000000Z"
    later = failed_row_to_dead_letter(("proj:ds.bars", row, BIGQUERY_ERRORS),
                                      failed_at=FIXED_NOW + dt.timedelta(hours=1))
    assert later["insert_id"] == dl["insert_id"]  # the same rejected row is one dead letter
    too_big = failed_row_to_dead_letter(
        ("proj:ds.ticks", row, "Received row with size 11.0MB that exceeds the maximum insert "
                               "payload size set (10.0MB)."), failed_at=FIXED_NOW)
    assert too_big["error_reason"] == "row_too_large"
    assert too_big["error_message"].startswith("Received row with size")
    for field in TABLE_SPECS[BQ_DEAD_LETTERS].fields:
        _check_value(field, dl[field["name"]])


@pytest.mark.pipeline
def test_convert_failed_rows_in_a_pipeline(records):
    rows = [to_bq_row(r) for r in records[:3]]
    failed = [(f"proj:ds.{table}", row, BIGQUERY_ERRORS) for table, row in rows]
    want = [failed_row_to_dead_letter(f, failed_at=FIXED_NOW) for f in failed]
    with TestPipeline() as p:
        out = p | beam.Create(failed) | ConvertFailedRows(clock=fixed_clock)
        assert_that(out, equal_to(want))
    assert {w["table_name"] for w in want} == {"bars"}


# -- the composite ------------------------------------------------------------------------------
def _graph(pipeline) -> dict[str, beam.pipeline.AppliedPTransform]:
    """Full label → applied transform of every step in the constructed (not run) pipeline."""
    found: dict[str, beam.pipeline.AppliedPTransform] = {}

    class Visitor(beam.pipeline.PipelineVisitor):
        def enter_composite_transform(self, node):
            found[node.full_label] = node

        def visit_transform(self, node):
            found[node.full_label] = node

    pipeline.visit(Visitor())
    return found


def test_composite_writes_every_table_with_its_spec():
    p = TestPipeline()
    dead = (p | beam.Create([]) | "WriteToBigQuery" >> WriteRecordsToBigQuery("proj", "ds"))
    assert isinstance(dead, beam.PCollection)
    graph = _graph(p)
    writes = {k: v.transform for k, v in graph.items()
              if isinstance(v.transform, WriteToBigQuery)}
    by_table = {w.table_reference.tableId: (label, w) for label, w in writes.items()}
    assert set(by_table) == set(TABLE_SPECS)
    for name, (label, w) in by_table.items():
        spec = TABLE_SPECS[name]
        assert label.startswith("WriteToBigQuery/Write")
        assert (w.table_reference.projectId, w.table_reference.datasetId) == ("proj", "ds")
        assert bigquery_tools.get_dict_table_schema(w.schema) == spec.schema
        assert w.method == WriteToBigQuery.Method.STREAMING_INSERTS
        assert w.insert_retry_strategy == RetryStrategy.RETRY_ON_TRANSIENT_ERROR
        assert w.additional_bq_parameters == spec.additional_bq_parameters
    # the dead-letter write is fed by the failed rows of the other writes
    assert "WriteToBigQuery/WriteBqDeadLetters" in writes
    flatten = graph["WriteToBigQuery/FlattenFailedRows"]
    tables = [n for n in TABLE_SPECS if n != BQ_DEAD_LETTERS]
    assert sorted((pc.producer.full_label.split("/")[1], pc.tag)
                  for pc in flatten.main_inputs.values()) == sorted(
        (f"Write{n.title().replace('_', '')}", "FailedRowsWithErrors") for n in tables)
    convert = graph["WriteToBigQuery/ConvertFailedRows"]
    assert list(convert.main_inputs.values()) == list(flatten.outputs.values())
    dl_write = graph["WriteToBigQuery/WriteBqDeadLetters"]
    assert list(dl_write.main_inputs.values()) == list(convert.outputs.values())
    assert list(convert.outputs.values()) == [dead]
    assert "WriteToBigQuery/CountLostDeadLetters" in graph


class RejectingBigQuery:
    """Stands in for BigQuery's insertAll (Beam's ``test_client`` hook): records every request
    and rejects ``bars`` rows of XTKS:7203 the way BigQuery reports an invalid row."""

    calls: list[tuple[str, list[dict], list]] = []

    def insert_rows_json(self, table, json_rows, row_ids=None, skip_invalid_rows=False,
                         ignore_unknown_values=False, timeout=None):
        json_rows = list(json_rows)
        RejectingBigQuery.calls.append((table, json_rows, list(row_ids or [])))
        if not table.endswith(".bars"):
            return []
        return [{"index": i, "errors": BIGQUERY_ERRORS} for i, row in enumerate(json_rows)
                if row["instrument_id"] == "XTKS:7203"]


@pytest.mark.pipeline
def test_rejected_rows_reach_the_dead_letter_table(records):
    RejectingBigQuery.calls.clear()
    instruments = [load_master().lookup("AAPL")]
    with TestPipeline() as p:
        dead = (p | beam.Create(records + instruments)
                | WriteRecordsToBigQuery("proj", "ds",
                                         create_disposition=BigQueryDisposition.CREATE_NEVER,
                                         clock=fixed_clock, test_client=RejectingBigQuery()))
        rejected = [("proj:ds.bars", row, BIGQUERY_ERRORS) for table, row in
                    (to_bq_row(r) for r in records if isinstance(r, PriceEvent))
                    if table == "bars" and row["instrument_id"] == "XTKS:7203"]
        assert_that(dead, equal_to([failed_row_to_dead_letter(f, failed_at=FIXED_NOW)
                                    for f in rejected]))
    inserted: dict[str, list[dict]] = {}
    for table, rows, _ in RejectingBigQuery.calls:
        inserted.setdefault(table.rsplit(".", 1)[-1], []).extend(rows)
    expected: dict[str, list[dict]] = {}
    for r in records:
        table, row = to_bq_row(r)
        expected.setdefault(table, []).append(row)
    for table, rows in expected.items():  # every row reached its table once (no instruments)
        assert sorted(inserted[table], key=lambda x: x["insert_id"]) == sorted(
            rows, key=lambda x: x["insert_id"]), table
    assert rejected and len(inserted[BQ_DEAD_LETTERS]) == len(rejected)
    assert {json.loads(d["row_json"])["instrument_id"] for d in inserted[BQ_DEAD_LETTERS]} == {
        "XTKS:7203"}
    # Beam 2.74 sends its own per-bundle insert ids, not ours: the insert_id column is the key
    beam_ids = [i for table, _, ids in RejectingBigQuery.calls for i in ids]
    assert beam_ids and not set(beam_ids) & {insert_id(r) for r in records}
