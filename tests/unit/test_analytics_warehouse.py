"""The DuckDB warehouse core: DDL vs ``TABLE_SPECS``, transpilation, loading, every SQL file runs.

* every ``stores.bigquery.TABLE_SPECS`` table has an ``analytics/sql/tables/<name>.sql`` whose
  parsed DDL (sqlglot, BigQuery dialect) has exactly the spec's columns, types, modes,
  descriptions, partitioning and clustering, so the two definitions cannot drift; the
  ``instruments`` DDL has the reference CSV's columns;
* ``transpile``: ``[project.]dataset.table`` → the DuckDB schema, ``@name`` → ``$name``,
  PARTITION BY/CLUSTER BY/OPTIONS dropped with a comment, ``ValueError`` naming the file;
* every ``.sql`` file of ``analytics/sql/tables`` and ``analytics/sql/views`` (the other
  helpers' views too) transpiles and executes on DuckDB, and every view answers a query;
* ``load_records`` of real records (AAPL, MSFT and 7203.T bars from ../shared/data, predictions,
  alerts, bar flags, dead letters, model performance, instruments) stores exactly the rows
  ``stores.bigquery.to_bq_row`` gives the BigQuery sink (NaN kept apart from NULL);
* file databases, read-only opening, view ordering and errors.

Run: ``.venv/bin/python -m pytest -q tests/unit/test_analytics_warehouse.py``.
"""

from __future__ import annotations

import csv
import datetime as dt
import math
from pathlib import Path

import duckdb
import pytest
import sqlglot
from sqlglot import exp

from analytics.warehouse import (
    INSTRUMENTS_CSV,
    TABLES_DIR,
    VIEWS_DIR,
    Warehouse,
    bigquery_sql,
    main,
    transpile,
    view_files,
)
from miraikakaku.instruments import load_master
from miraikakaku.schema import DeadLetter
from miraikakaku.tracking import aggregate_outcomes, match_predictions
from quality.stream import MONDAY_OFFSET, QualityResult, window_bounds
from stores.base import BarFlag
from stores.bigquery import TABLE_SPECS, to_bq_row
from tests.api.conftest import load_real_events, make_alert, make_predictions

pytestmark = pytest.mark.unit

UTC = dt.timezone.utc
_BQ_TYPE = {exp.DataType.Type.TEXT: "STRING", exp.DataType.Type.DOUBLE: "FLOAT",
            exp.DataType.Type.BIGINT: "INTEGER", exp.DataType.Type.DATE: "DATE",
            exp.DataType.Type.TIMESTAMPTZ: "TIMESTAMP", exp.DataType.Type.BOOLEAN: "BOOLEAN"}


def _parse_ddl(path: Path) -> dict:
    """Table name, fields (BigQuery JSON schema form), partitioning, clustering, description."""
    stmt = sqlglot.parse_one(path.read_text(), read="bigquery")
    assert isinstance(stmt, exp.Create) and stmt.kind == "TABLE", path
    schema = stmt.this
    fields = []
    for col in schema.expressions:
        kind = col.args["kind"]
        mode = "NULLABLE"
        if kind.this == exp.DataType.Type.ARRAY:
            mode, kind = "REPEATED", kind.expressions[0]
        description = ""
        for c in col.args.get("constraints") or []:
            if isinstance(c.kind, exp.NotNullColumnConstraint):
                assert mode == "NULLABLE", f"{path}: {col.name} NOT NULL ARRAY"
                mode = "REQUIRED"
            elif isinstance(c.kind, exp.Properties):
                for p in c.kind.expressions:
                    assert p.name == "description", f"{path}: {col.name} option {p.name}"
                    description = p.args["value"].this
        fields.append({"name": col.name, "type": _BQ_TYPE[kind.this], "mode": mode,
                       "description": description})
    props = stmt.args["properties"].expressions
    partition = [p.this.name for p in props if isinstance(p, exp.PartitionedByProperty)]
    cluster = [[e.name for e in p.expressions] for p in props
               if isinstance(p, exp.ClusterProperty)]
    options = {p.name: p.args["value"].this for p in props if type(p) is exp.Property}
    return {"name": schema.this.name, "dataset": schema.this.args["db"].name, "fields": fields,
            "partition": partition, "cluster": cluster, "options": options}


@pytest.mark.parametrize("name", sorted(TABLE_SPECS))
def test_table_ddl_matches_table_specs(name: str) -> None:
    spec = TABLE_SPECS[name]
    ddl = _parse_ddl(TABLES_DIR / f"{name}.sql")
    assert (ddl["dataset"], ddl["name"]) == ("miraikakaku", name)
    assert ddl["fields"] == [dict(f) for f in spec.fields]
    assert ddl["partition"] == [spec.partition_field]
    assert ddl["cluster"] == [list(spec.clustering_fields)]
    assert ddl["options"] == {"description": spec.description}


def test_instruments_ddl_has_the_reference_columns() -> None:
    ddl = _parse_ddl(TABLES_DIR / "instruments.sql")
    with open(INSTRUMENTS_CSV, newline="") as f:
        header = next(csv.reader(f))
    assert [c["name"] for c in ddl["fields"]] == header
    dates = {"listing_date", "delisting_date"}  # the dated master (miraikakaku.instruments)
    assert {c["name"] for c in ddl["fields"] if c["type"] == "DATE"} == dates
    assert {c["type"] for c in ddl["fields"] if c["name"] not in dates} == {"STRING"}
    assert ddl["partition"] == [] and ddl["cluster"] == [["instrument_id"]]
    nullable = {c["name"] for c in ddl["fields"] if c["mode"] == "NULLABLE"}
    # an index has no MIC; many stocks have no name; a listing may still be open
    assert nullable == {"mic", "name", *dates}


def test_table_files_cover_every_spec() -> None:
    files = {p.stem for p in TABLES_DIR.glob("*.sql")}
    assert set(TABLE_SPECS) | {"instruments"} <= files


# -- transpile --------------------------------------------------------------------------------
def test_transpile_maps_tables_to_the_schema_and_parameters_to_dollar() -> None:
    sql = ("SELECT b.close FROM `my-proj.prod_ds.bars` AS b JOIN other.instruments AS i "
           "USING (instrument_id) WHERE b.session_date >= @start AND i.mic IN UNNEST(@mics)")
    out = transpile(sql, dataset="wh")
    tables = {(t.db, t.name) for t in sqlglot.parse_one(out, read="duckdb").find_all(exp.Table)}
    assert tables == {("wh", "bars"), ("wh", "instruments")}
    assert "my-proj" not in out and "prod_ds" not in out and "@" not in out
    assert "$start" in out and "$mics" in out
    # CTE names stay unqualified
    out = transpile("WITH x AS (SELECT 1 AS a) SELECT a FROM x")
    assert [t.sql() for t in sqlglot.parse_one(out, read="duckdb").find_all(exp.Table)] == ["x"]


def test_transpile_drops_ddl_options_with_a_comment() -> None:
    out = transpile((TABLES_DIR / "bars.sql").read_text())
    head, _, body = out.partition("*/")
    assert "PARTITION BY session_date" in head and "CLUSTER BY instrument_id" in head
    assert "OPTIONS" in head
    assert "PARTITION BY" not in body and "CLUSTER BY" not in body and "OPTIONS" not in body
    assert "CREATE TABLE IF NOT EXISTS miraikakaku.bars" in body
    assert "TIMESTAMPTZ" in body and "TEXT[]" in body


def test_transpile_countif_counts_zero_over_nulls_as_bigquery() -> None:
    sql = ("SELECT g, COUNTIF(x > 0) AS n FROM UNNEST([STRUCT(1 AS g, CAST(NULL AS FLOAT64) AS x),"
           " STRUCT(2 AS g, 1.0 AS x)]) GROUP BY g ORDER BY g")
    with Warehouse(None) as wh:
        assert wh.query(sql)["n"].tolist() == [0, 1]  # DuckDB's own COUNT_IF says NULL for g=1
    assert duckdb.sql("SELECT COUNT_IF(x) FROM (SELECT CAST(NULL AS BOOLEAN) AS x)"
                      ).fetchall() == [(None,)]


def test_transpile_errors_name_the_file() -> None:
    with pytest.raises(ValueError, match=r"views/broken\.sql: sqlglot cannot parse"):
        transpile("SELECT FROM WHERE (", source="views/broken.sql")
    with pytest.raises(ValueError, match="no SQL statement"):
        transpile("-- nothing\n", source="empty.sql")


def test_bigquery_sql_qualifies_with_project_and_dataset() -> None:
    out = bigquery_sql("SELECT * FROM miraikakaku.daily_bars WHERE session_date >= @start",
                       project="my-proj", dataset="prod")
    assert "`my-proj`.prod.daily_bars" in out or "`my-proj.prod.daily_bars`" in out
    assert "@start" in out


def test_bigquery_command_writes_every_file_in_order(tmp_path: Path, capsys) -> None:
    assert main(["bigquery", "--project", "my-proj", "--dataset", "prod",
                 "--out", str(tmp_path)]) == 0
    files = sorted(tmp_path.glob("*.sql"))
    names = [f.stem.split("_", 1)[1] for f in files]
    n_tables = len(list(TABLES_DIR.glob("*.sql")))
    assert sorted(names[:n_tables]) == sorted(p.stem for p in TABLES_DIR.glob("*.sql"))
    assert names[n_tables:] == [f.name for f in view_files()]
    for f in files:
        stmt = sqlglot.parse_one(f.read_text(), read="bigquery")
        for t in stmt.find_all(exp.Table):
            assert not t.db or (t.catalog, t.db) == ("my-proj", "prod"), (f, t.sql())
    assert names.index("daily_bars") < names.index("daily_performance") < \
        names.index("market_trend") < names.index("market_trend_by_exchange")
    assert "bq --project_id=my-proj query --use_legacy_sql=false" in capsys.readouterr().out


def test_every_sql_file_executes_on_duckdb() -> None:
    """Every table and view file (all helpers' views) transpiles and runs; views answer."""
    with Warehouse(None) as wh:
        tables = wh.create_tables()
        assert sorted(tables) == wh.tables()
        views = wh.create_views()
        assert sorted(views) == wh.views()
        assert {f.name for f in view_files()} == set(views)
        for v in views:
            wh.query(f"SELECT * FROM miraikakaku.{v} LIMIT 1")  # binds every column
        for f in sorted(VIEWS_DIR.glob("*.sql")) + sorted(TABLES_DIR.glob("*.sql")):
            wh.connection.execute(transpile(f.read_text(), source=str(f)))  # idempotent DDL


def test_view_files_are_ordered_by_dependency(tmp_path: Path) -> None:
    (tmp_path / "a.sql").write_text("CREATE OR REPLACE VIEW miraikakaku.a AS "
                                    "SELECT * FROM miraikakaku.b")
    (tmp_path / "b.sql").write_text("CREATE OR REPLACE VIEW miraikakaku.b AS "
                                    "SELECT c.x, b.close FROM miraikakaku.c AS c "
                                    "LEFT JOIN miraikakaku.bars AS b ON b.close = c.x")
    (tmp_path / "c.sql").write_text("CREATE OR REPLACE VIEW miraikakaku.c AS SELECT 1 AS x")
    assert [f.name for f in view_files(tmp_path)] == ["c", "b", "a"]
    assert view_files(tmp_path)[1].reads == {"c", "bars"}
    with Warehouse(None) as wh:
        wh.create_tables()
        assert wh.create_views(tmp_path, names=["b"]) == ["c", "b"]
        assert wh.views() == ["b", "c"]
        with pytest.raises(KeyError, match="zzz"):
            wh.create_views(tmp_path, names=["zzz"])
    (tmp_path / "c.sql").write_text("CREATE OR REPLACE VIEW miraikakaku.c AS "
                                    "SELECT * FROM miraikakaku.a")
    with pytest.raises(ValueError, match="cycle"):
        view_files(tmp_path)
    (tmp_path / "c.sql").write_text("CREATE OR REPLACE VIEW miraikakaku.c AS SELEC 1")
    with pytest.raises(ValueError, match=r"c\.sql"):
        view_files(tmp_path)


# -- loading ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def real_records() -> list[object]:
    """Real bars (AAPL, MSFT from sp500_5yr; 7203.T from chart0 and mlbot) and records of
    every other table built on them."""
    events = load_real_events()
    aapl = sorted((e for e in events if e.instrument_id == "XNAS:AAPL"),
                  key=lambda e: e.session_date)
    toyota = sorted((e for e in events if e.instrument_id == "XTKS:7203" and
                     e.source == "chart0"), key=lambda e: e.session_date)
    preds = (make_predictions(events, "XNAS:AAPL", "sp500_5yr", [0.01, -0.02, 0.0, 0.005])
             + make_predictions(events, "XTKS:7203", "chart0", [0.003, -0.001]))
    outcomes = match_predictions(preds, events).outcomes
    assert outcomes
    alerts = [make_alert(aapl[-1], "aapl_above_150", "price_cross", aapl[-1].close, 150.0),
              make_alert(toyota[-2], "toyota_move", "pct_move", -0.031, -0.03)]
    flags = [BarFlag(row_key=f"XNAS:AAPL#1d#{aapl[-3].session_date:%Y%m%d}", source="sp500_5yr",
                     flag="large_move", detail="|r| > 5 sigma")]
    dead = [DeadLetter("ParseEvents", "bad_number", "field 'close' is '#VALUE!'",
                       "7203.T,2019-01-04,#VALUE!", "jp_daily.csv"),
            DeadLetter("ValidateEvents", "high_below_low", "high 1 < low 2", "{}", "topic",
                       event_time=dt.datetime(2018, 2, 7, 21, tzinfo=UTC))]
    instruments = [load_master().lookup(s) for s in ("AAPL", "N225")]
    start, end = window_bounds(aapl[-1].event_time, 7 * 86400, MONDAY_OFFSET)
    week = [e for e in aapl if start <= e.event_time < end]
    quality = [QualityResult(start, end, "XNAS:AAPL", "price_events", "zero_volume", "flag",
                             len(week), sum(e.volume == 0 for e in week), "local-test",
                             dt.datetime(2024, 5, 1, 12, tzinfo=UTC))]
    return [*events, *preds, *alerts, *flags, *dead, *aggregate_outcomes(outcomes),
            *quality, *instruments]


def _expected(value, type_: str, mode: str):
    """A to_bq_row value as DuckDB gives it back (independent of the warehouse's parsing)."""
    if value is None:
        return None
    if mode == "REPEATED":
        return [_expected(v, type_, "NULLABLE") for v in value]
    if type_ == "DATE":
        return dt.date.fromisoformat(value)
    if type_ == "TIMESTAMP":
        return dt.datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    if type_ == "FLOAT":
        return float(value)
    return value


def _same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def test_load_records_stores_the_bigquery_sink_rows(real_records: list[object]) -> None:
    with Warehouse(None) as wh:
        wh.create_tables()
        counts = wh.load_records(real_records)
        bq_rows: dict[str, list[dict]] = {}
        for r in real_records:
            if type(r).__name__ == "Instrument":
                continue
            table, row = to_bq_row(r)
            bq_rows.setdefault(table, []).append(row)
        assert counts == {**{t: len(rows) for t, rows in bq_rows.items()}, "instruments": 2}
        assert set(bq_rows) == set(TABLE_SPECS) - {"ticks", "bq_dead_letters", "features"}
        for table, rows in bq_rows.items():
            spec = TABLE_SPECS[table]
            cur = wh.connection.execute(f"SELECT * FROM miraikakaku.{table}")
            names = [d[0] for d in cur.description]
            assert names == spec.field_names
            stored = {r[0]: dict(zip(names, r)) for r in cur.fetchall()}
            assert len(stored) == len(rows)
            for row in rows:
                got = stored[row["insert_id"]]
                for f in spec.fields:
                    want = _expected(row[f["name"]], f["type"], f["mode"])
                    assert _same(got[f["name"]], want), (table, f["name"], got, row)
        inst = wh.view("instruments", order_by=["instrument_id"])
        assert list(inst["instrument_id"]) == ["INDEX:N225", "XNAS:AAPL"]
        assert inst["mic"].tolist()[0] is None and inst["name"].tolist()[0] == "Nikkei 225"


def test_insert_rows_conventions_and_errors() -> None:
    with Warehouse(None) as wh:
        wh.create_tables()
        base = {"insert_id": "i", "event_id": "e", "instrument_id": "XNAS:AAPL",
                "symbol": "AAPL", "source": "user", "interval": "1d",
                "session_date": "2018-02-07", "event_time": "2018-02-07T21:00:00.000001Z",
                "open": 1.0, "high": 2.0, "low": 0.5, "close": 1.5, "currency": "USD",
                "flags": ["a,b", "c"], "schema_version": 1}
        wh.insert_rows("bars", [
            {**base, "adj_close": "NaN", "volume": None},
            {**base, "insert_id": "j", "adj_close": "Infinity", "volume": 7.0,
             "session_date": dt.date(2018, 2, 8), "flags": [],
             "event_time": dt.datetime(2018, 2, 8, 6, tzinfo=dt.timezone(dt.timedelta(hours=9)))},
        ])
        rows = wh.connection.execute(
            "SELECT insert_id, adj_close, isnan(adj_close), volume IS NULL, flags, event_time, "
            "session_date FROM miraikakaku.bars ORDER BY insert_id").fetchall()
        assert rows[0][2] is True and rows[0][3] is True and rows[0][4] == ["a,b", "c"]
        assert rows[0][5] == dt.datetime(2018, 2, 7, 21, 0, 0, 1, tzinfo=UTC)
        assert rows[1][1] == math.inf and rows[1][3] is False and rows[1][4] == []
        assert rows[1][5] == dt.datetime(2018, 2, 7, 21, tzinfo=UTC)
        assert rows[1][6] == dt.date(2018, 2, 8)
        with pytest.raises(ValueError, match="naive"):
            wh.insert_rows("bars", [{**base, "event_time": dt.datetime(2018, 2, 7, 21)}])
        with pytest.raises(KeyError, match="nope"):
            wh.insert_rows("bars", [{**base, "nope": 1}])
        with pytest.raises(duckdb.ConstraintException):
            wh.insert_rows("bars", [{**base, "close": None}])
        with pytest.raises(KeyError, match="no_table"):
            wh.insert_rows("no_table", [base])
        assert wh.query("SELECT COUNT(*) AS n FROM miraikakaku.bars")["n"].tolist() == [2]
        frame = wh.view("bars", order_by=["insert_id"])
        wh.insert_frame("bars", frame.assign(insert_id=["k", "l"]))
        assert wh.view("bars", insert_id=["k", "l", "zz"])["close"].tolist() == [1.5, 1.5]
        with pytest.raises(KeyError, match="zz"):
            wh.view("bars", zz=1)


def test_file_database_and_read_only(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "warehouse.duckdb"
    with Warehouse(path) as wh:
        wh.create_tables()
        wh.load_instruments()
    with Warehouse(path, read_only=True) as ro:
        n = ro.query("SELECT COUNT(*) AS n FROM miraikakaku.instruments WHERE mic = @mic",
                     {"mic": "XTKS"})["n"].iloc[0]
        assert n == sum(1 for i in load_master() if i.mic == "XTKS") > 0
        with pytest.raises(duckdb.Error):
            ro.load_instruments()
    with pytest.raises(ValueError, match="in-memory"):
        Warehouse(None, read_only=True)
