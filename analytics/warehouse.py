"""The embedded analytics warehouse: BigQuery-dialect SQL files run on DuckDB through sqlglot.

The analytics SQL is written once, in BigQuery's dialect, in ``analytics/sql``:

* ``tables/*.sql``: one ``CREATE TABLE IF NOT EXISTS miraikakaku.<table> (...) PARTITION BY ...
  CLUSTER BY ...`` per table of ``stores.bigquery.TABLE_SPECS`` (``tests/unit/
  test_analytics_warehouse.py`` parses them and checks columns, types, modes, descriptions,
  partitioning and clustering against ``TABLE_SPECS``), plus the ``instruments`` reference table;
* ``views/*.sql``: ``CREATE OR REPLACE VIEW miraikakaku.<view> AS ...``; a view may read other
  views, ``Warehouse.create_views`` orders the files by these dependencies (parsed from the SQL;
  an ``NN_`` file-name prefix is allowed but not needed).

In Google Cloud mode the files run on BigQuery as they are (``bigquery_sql`` puts the project and
dataset in). In embedded mode ``transpile`` turns them into DuckDB SQL with sqlglot
(``read="bigquery", write="duckdb"``):

* table names: BigQuery's ``dataset.table`` and ``project.dataset.table`` (with or without
  backticks) become ``<schema>.table`` in DuckDB, where ``<schema>`` is the ``dataset`` argument
  (default ``miraikakaku``): the project is dropped and every dataset maps to that one DuckDB
  schema. Unqualified names (CTEs) stay as they are; tables must be qualified in the files;
* named parameters ``@name`` become DuckDB's ``$name`` (``Warehouse.query(sql, {"name": v})``);
* DDL options DuckDB has no equivalent for (``PARTITION BY``, ``CLUSTER BY``, table and column
  ``OPTIONS(...)``) are dropped; the DuckDB statement starts with a comment naming them;
* types follow sqlglot: STRING → VARCHAR, FLOAT64 → DOUBLE, INT64 → BIGINT, BOOL → BOOLEAN,
  ``ARRAY<STRING>`` → ``VARCHAR[]``, TIMESTAMP (an instant) → ``TIMESTAMPTZ``; connections use
  ``TimeZone=UTC`` so timestamps read back as UTC-aware values;
* ``COUNTIF(x)`` becomes ``COUNT_IF(COALESCE(x, FALSE))``: over only NULLs BigQuery counts 0
  where DuckDB's ``COUNT_IF`` answers NULL;
* a construct sqlglot cannot parse or cannot express in DuckDB raises ``ValueError`` naming the
  file (nothing is silently mistranslated).

Rows get in through ``Warehouse.load_records`` (platform records converted by
``stores.bigquery.to_bq_row``, the very conversion the BigQuery sink streams, so both warehouses
hold the same rows), ``insert_rows`` (rows as dicts, BigQuery JSON conventions accepted) or
``insert_frame`` (a pandas DataFrame). Views de-duplicate on ``insert_id`` as BigQuery needs
(``stores.bigquery``: streaming inserts may repeat a row), so replays do not double count.

DuckDB locking: one process may open a database file read-write; other processes may open it
``read_only=True`` only while no process holds it read-write.

Google Cloud mode: ``python -m analytics.warehouse bigquery --project P --dataset D --out DIR``
writes every table and view as BigQuery SQL for that project and dataset, in the order to run
them (``NN_<name>.sql``), and prints the ``bq`` commands; ``python -m analytics.warehouse
transpile FILE...`` prints the DuckDB SQL of files.

Usage::

    wh = Warehouse("var/analytics/warehouse.duckdb")
    wh.create_tables(); wh.load_instruments(); wh.load_records(events); wh.create_views()
    wh.view("daily_performance", instrument_id="XNAS:AAPL")
    wh.query("SELECT * FROM miraikakaku.daily_bars WHERE session_date >= @start",
             {"start": dt.date(2018, 1, 2)})
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import graphlib
import json
import math
import re
import threading
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import sqlglot
from sqlglot import exp
from sqlglot.errors import ErrorLevel, ParseError, UnsupportedError

__all__ = [
    "DATASET",
    "SQL_DIR",
    "TABLES_DIR",
    "VIEWS_DIR",
    "INSTRUMENTS_CSV",
    "SqlFile",
    "transpile",
    "bigquery_sql",
    "sql_files",
    "view_files",
    "bigquery_statements",
    "Warehouse",
    "main",
]

DATASET = "miraikakaku"
"""Dataset name the ``.sql`` files use; the DuckDB schema of the tables and views."""

SQL_DIR = Path(__file__).resolve().parent / "sql"
TABLES_DIR = SQL_DIR / "tables"
VIEWS_DIR = SQL_DIR / "views"
INSTRUMENTS_CSV = Path(__file__).resolve().parents[1] / "miraikakaku" / "reference" / \
    "instruments.csv"
"""Reference data of the ``instruments`` table."""

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _dropped_name(prop: exp.Expression) -> str:
    if isinstance(prop, exp.PartitionedByProperty):
        return f"PARTITION BY {prop.this.sql('bigquery')}"
    if isinstance(prop, exp.ClusterProperty):
        return "CLUSTER BY " + ", ".join(e.sql("bigquery") for e in prop.expressions)
    return "OPTIONS"


def _strip_ddl_options(stmt: exp.Expression) -> list[str]:
    """Remove PARTITION BY/CLUSTER BY/OPTIONS from a CREATE; returns what was removed."""
    dropped: list[str] = []
    if not isinstance(stmt, exp.Create):
        return dropped
    props = stmt.args.get("properties")
    if props is not None:
        keep = []
        for p in props.expressions:
            if isinstance(p, (exp.PartitionedByProperty, exp.ClusterProperty)) or \
                    type(p) is exp.Property:
                name = _dropped_name(p)
                if name not in dropped:
                    dropped.append(name)
            else:
                keep.append(p)
        if keep:
            props.set("expressions", keep)
        else:
            stmt.set("properties", None)
    for col in stmt.find_all(exp.ColumnDef):
        constraints = col.args.get("constraints") or []
        kept = [c for c in constraints if not isinstance(c.args.get("kind"), exp.Properties)]
        if len(kept) != len(constraints):
            col.set("constraints", kept)
            if "column OPTIONS" not in dropped:
                dropped.append("column OPTIONS")
    return dropped


def _requalify(stmt: exp.Expression, dataset: str) -> None:
    """``[project.]dataset.table`` → ``<dataset>.table`` for tables (and qualified columns)."""
    for node in stmt.find_all(exp.Table, exp.Column):
        if node.args.get("db") is not None:
            node.set("catalog", None)
            node.set("db", exp.to_identifier(dataset))


def _countif_zero_on_null(stmt: exp.Expression) -> None:
    """``COUNTIF(x)`` → ``COUNTIF(COALESCE(x, FALSE))``: BigQuery counts 0 over only NULLs,
    DuckDB's ``COUNT_IF`` answers NULL."""
    for node in list(stmt.find_all(exp.CountIf)):
        node.set("this", exp.Coalesce(this=node.this, expressions=[exp.false()]))


def _transpile_statements(sql: str, dataset: str, source: str | None, *,
                          pretty: bool = False) -> list[str]:
    where = source or "<sql string>"
    try:
        statements = sqlglot.parse(sql, read="bigquery")
    except ParseError as e:
        raise ValueError(f"{where}: sqlglot cannot parse this BigQuery SQL: {e}") from e
    out = []
    for stmt in statements:
        if stmt is None:
            continue
        _requalify(stmt, dataset)
        _countif_zero_on_null(stmt)
        dropped = _strip_ddl_options(stmt)
        try:
            text = stmt.sql(dialect="duckdb", unsupported_level=ErrorLevel.RAISE, pretty=pretty)
        except UnsupportedError as e:
            raise ValueError(f"{where}: no DuckDB equivalent for this BigQuery SQL: {e}") from e
        if dropped:
            text = (f"/* BigQuery-only {', '.join(dropped)} dropped: DuckDB has no "
                    f"partitioning, clustering or table options */\n{text}")
        out.append(text)
    if not out:
        raise ValueError(f"{where}: no SQL statement")
    return out


def transpile(sql: str, *, dataset: str = DATASET, source: str | None = None) -> str:
    """Translate BigQuery-dialect SQL into DuckDB SQL (rules in the module docstring).

    Args:
        sql: one or more BigQuery statements (``;``-separated).
        dataset: the DuckDB schema every ``[project.]dataset.table`` reference maps to.
        source: where the SQL came from (a file name), for error messages.

    Returns:
        DuckDB SQL, statements joined by ``;\\n``.

    Raises:
        ValueError: naming ``source`` when sqlglot cannot parse the SQL, cannot express it in
            DuckDB, or it holds no statement.
    """
    return ";\n".join(_transpile_statements(sql, dataset, source))


def bigquery_sql(sql: str, *, project: str, dataset: str) -> str:
    """The SQL for BigQuery itself: ``miraikakaku.x`` references become
    `` `project.dataset.x` `` (Google Cloud mode; e.g. ``bq query --use_legacy_sql=false``).

    Raises:
        ValueError: when sqlglot cannot parse the SQL.
    """
    try:
        statements = sqlglot.parse(sql, read="bigquery")
    except ParseError as e:
        raise ValueError(f"sqlglot cannot parse this BigQuery SQL: {e}") from e
    out = []
    for stmt in statements:
        if stmt is None:
            continue
        for node in stmt.find_all(exp.Table):
            if node.args.get("db") is not None:
                node.set("catalog", exp.to_identifier(project))
                node.set("db", exp.to_identifier(dataset))
        out.append(stmt.sql(dialect="bigquery", pretty=True))
    return ";\n".join(out)


# -- SQL files -------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class SqlFile:
    """A ``.sql`` file: the object it creates and the dataset objects it reads.

    Attributes:
        path: the file.
        name: the table or view the file creates (``CREATE ... miraikakaku.<name>``).
        reads: names of dataset tables/views the statement reads (its dependencies).
        sql: the BigQuery text.
    """

    path: Path
    name: str
    reads: frozenset[str]
    sql: str


def _read_sql_file(path: Path) -> SqlFile:
    text = path.read_text()
    try:
        statements = [s for s in sqlglot.parse(text, read="bigquery") if s is not None]
    except ParseError as e:
        raise ValueError(f"{path}: sqlglot cannot parse this BigQuery SQL: {e}") from e
    creates = [s for s in statements if isinstance(s, exp.Create)]
    if len(creates) != 1:
        raise ValueError(f"{path}: expected one CREATE statement, found {len(creates)}")
    target = creates[0].find(exp.Table)
    reads = frozenset(t.name for s in statements for t in s.find_all(exp.Table)
                      if t.args.get("db") is not None and t is not target)
    return SqlFile(path, target.name, reads - {target.name}, text)


def sql_files(directory: Path) -> list[SqlFile]:
    """The ``*.sql`` files of ``directory`` in file-name order.

    Raises:
        ValueError: for a file that does not parse or does not hold exactly one CREATE.
    """
    return [_read_sql_file(p) for p in sorted(directory.glob("*.sql"))]


def view_files(directory: Path = VIEWS_DIR) -> list[SqlFile]:
    """The view files in dependency order (a view after the views it reads; ties by file name).

    Raises:
        ValueError: on a dependency cycle or two files creating the same view.
    """
    files = sql_files(directory)
    by_name: dict[str, SqlFile] = {}
    for f in files:
        if f.name in by_name:
            raise ValueError(f"{f.path} and {by_name[f.name].path} both create {f.name}")
        by_name[f.name] = f
    sorter: graphlib.TopologicalSorter[str] = graphlib.TopologicalSorter()
    for f in files:
        sorter.add(f.name, *sorted(d for d in f.reads if d in by_name))
    try:
        sorter.prepare()
    except graphlib.CycleError as e:
        raise ValueError(f"views depend on each other in a cycle: {e.args[1]}") from e
    order: list[str] = []
    while sorter.is_active():
        ready = sorted(sorter.get_ready(), key=lambda n: by_name[n].path.name)
        order.extend(ready)
        sorter.done(*ready)
    return [by_name[n] for n in order]


def bigquery_statements(*, project: str, dataset: str, tables_dir: Path = TABLES_DIR,
                        views_dir: Path = VIEWS_DIR) -> list[tuple[str, str]]:
    """``(name, BigQuery SQL)`` of every table, then every view in dependency order, with
    ``miraikakaku.x`` turned into `` `project`.dataset.x `` (see ``bigquery_sql``)."""
    files = sql_files(tables_dir) + view_files(views_dir)
    return [(f.name, bigquery_sql(f.sql, project=project, dataset=dataset)) for f in files]


# -- value conversion ------------------------------------------------------------------------
def _to_float(v: Any) -> float | None:
    if v is None:
        return None
    return float(v)  # also "NaN", "Infinity", "-Infinity" (BigQuery's JSON spelling)


def _to_date(v: Any) -> dt.date | None:
    if v is None:
        return None
    if isinstance(v, dt.datetime):
        raise ValueError(f"a DATE column got a datetime {v!r}")
    if isinstance(v, dt.date):
        return v
    if isinstance(v, pd.Timestamp):
        return v.date()
    return dt.date.fromisoformat(str(v))


def _to_timestamp(v: Any) -> dt.datetime | None:
    if v is None:
        return None
    if isinstance(v, str):
        v = dt.datetime.fromisoformat(v.replace("Z", "+00:00"))
    if isinstance(v, pd.Timestamp):
        v = v.to_pydatetime()
    if not isinstance(v, dt.datetime):
        raise ValueError(f"a TIMESTAMP column got {v!r}")
    if v.tzinfo is None:
        raise ValueError(f"naive datetime {v!r}: timestamps must carry a time zone")
    return v.astimezone(dt.timezone.utc)


def _converter(duck_type: str):
    """Value converter for a DuckDB column type (to what pandas hands DuckDB unchanged)."""
    t = duck_type.upper()
    if t.endswith("[]"):
        inner = _converter(t[:-2])
        return lambda v: None if v is None else [inner(x) for x in v]
    if t in ("DOUBLE", "FLOAT", "REAL"):
        return _to_float
    if t in ("BIGINT", "INTEGER", "SMALLINT", "TINYINT", "HUGEINT"):
        return lambda v: None if v is None else int(v)
    if t == "BOOLEAN":
        return lambda v: None if v is None else bool(v)
    if t == "DATE":
        return _to_date
    if t in ("TIMESTAMP WITH TIME ZONE", "TIMESTAMPTZ"):
        return _to_timestamp
    return lambda v: None if v is None else str(v)  # DuckDB casts on insert


def _frame(cols: Sequence[tuple[str, str]], rows: Sequence[Mapping[str, Any]]
           ) -> tuple[pd.DataFrame, list[str]]:
    """Rows → (DataFrame, DuckDB select list casting each column to its table type).

    pandas turns a float NaN into NULL on the way into DuckDB, so a DOUBLE column with real NaN
    values carries a boolean mask column that the select list turns back into NaN.
    """
    data: dict[str, Any] = {}
    select: list[str] = []
    for i, (name, duck_type) in enumerate(cols):
        convert = _converter(duck_type)
        values = [convert(r.get(name)) for r in rows]
        col = f"c{i}"
        expr = f'CAST({col} AS {duck_type})'
        if duck_type.upper() in ("DOUBLE", "FLOAT", "REAL"):
            data[col] = pd.Series(values, dtype="float64")
            nan = [v is not None and math.isnan(v) for v in values]
            if any(nan):
                data[f"n{i}"] = nan
                expr = f"CASE WHEN n{i} THEN CAST('NaN' AS DOUBLE) ELSE {expr} END"
        elif duck_type.upper() in ("TIMESTAMP WITH TIME ZONE", "TIMESTAMPTZ"):
            data[col] = pd.to_datetime(pd.Series(values, dtype=object), utc=True)
        elif duck_type.endswith("[]"):
            # A list column goes in as JSON text: DuckDB infers an object column's type from a
            # sample of its first rows, and a sample of empty lists makes it NULL[], which then
            # fails on the first list with a value further down.
            data[col] = pd.Series([None if v is None else json.dumps(v, default=str)
                                   for v in values], dtype=object)
            expr = f"CAST(from_json({col}, '[\"{duck_type[:-2]}\"]') AS {duck_type})"
        else:
            data[col] = pd.Series(values, dtype=object)
        select.append(f'{expr} AS "{name}"')
    return pd.DataFrame(data), select


# -- the warehouse ---------------------------------------------------------------------------
class Warehouse:
    """A DuckDB database holding the analytics tables and views of one dataset.

    Args:
        path: the database file (created with its parent directory when missing), or None for
            an in-memory database (tests).
        read_only: open the file read-only (readers next to no writer; not with ``path=None``).
        dataset: the DuckDB schema of the tables and views (the files' ``miraikakaku``).

    Raises:
        ValueError: ``read_only`` without a path.
        duckdb.IOException: the file is locked by a writer in another process, or a
            read-only open of a missing file.
    """

    def __init__(self, path: str | Path | None = None, *, read_only: bool = False,
                 dataset: str = DATASET) -> None:
        if read_only and path is None:
            raise ValueError("an in-memory warehouse cannot be read-only")
        if not _IDENT.match(dataset):
            raise ValueError(f"dataset {dataset!r} is not a plain identifier")
        self.path = None if path is None else Path(path)
        self.read_only = read_only
        self.dataset = dataset
        if self.path is not None and not read_only:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._con = duckdb.connect(":memory:" if self.path is None else str(self.path),
                                   read_only=read_only)
        self._con.execute("SET TimeZone = 'UTC'")
        self._lock = threading.Lock()

    # -- lifecycle
    def close(self) -> None:
        """Close the connection (idempotent)."""
        self._con.close()

    def __enter__(self) -> Warehouse:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def connection(self) -> duckdb.DuckDBPyConnection:
        """The DuckDB connection (DuckDB SQL; prefer ``query`` for BigQuery SQL)."""
        return self._con

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        cur = self._con.cursor()
        cur.execute("SET TimeZone = 'UTC'")
        return cur

    # -- DDL
    def execute_file(self, path: Path) -> None:
        """Transpile one BigQuery ``.sql`` file and run its statements.

        Raises:
            ValueError: the file does not transpile (named in the message).
            duckdb.Error: DuckDB refuses the transpiled SQL.
        """
        statements = _transpile_statements(Path(path).read_text(), self.dataset, str(path))
        with self._lock:
            for s in statements:
                self._con.execute(s)

    def create_tables(self, directory: Path = TABLES_DIR) -> list[str]:
        """Create the schema and every table of ``directory`` (``IF NOT EXISTS``: idempotent).

        Returns:
            The table names, in file-name order.
        """
        with self._lock:
            self._con.execute(f"CREATE SCHEMA IF NOT EXISTS {self.dataset}")
        files = sql_files(directory)
        for f in files:
            self.execute_file(f.path)
        return [f.name for f in files]

    def create_views(self, directory: Path = VIEWS_DIR, *,
                     names: Iterable[str] | None = None) -> list[str]:
        """Create (or replace) the views of ``directory`` in dependency order.

        Args:
            directory: the view files.
            names: only these views and the views they read (directly or not); None: all.

        Returns:
            The view names in the order they were created.

        Raises:
            KeyError: a name no file creates.
            ValueError: a file that does not parse/transpile, or a dependency cycle.
        """
        files = view_files(directory)
        if names is not None:
            by_name = {f.name: f for f in files}
            wanted: set[str] = set()
            todo = list(names)
            while todo:
                name = todo.pop()
                if name not in by_name:
                    raise KeyError(f"no view file creates {name!r} in {directory}")
                if name not in wanted:
                    wanted.add(name)
                    todo.extend(d for d in by_name[name].reads if d in by_name)
            files = [f for f in files if f.name in wanted]
        for f in files:
            self.execute_file(f.path)
        return [f.name for f in files]

    def tables(self) -> list[str]:
        """Base tables of the dataset schema, sorted."""
        return self._names("BASE TABLE")

    def views(self) -> list[str]:
        """Views of the dataset schema, sorted."""
        return self._names("VIEW")

    def _names(self, kind: str) -> list[str]:
        with self._lock:
            rows = self._con.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = ? "
                "AND table_type = ? ORDER BY table_name", [self.dataset, kind]).fetchall()
        return [r[0] for r in rows]

    def columns(self, table: str) -> list[tuple[str, str]]:
        """``(name, DuckDB type)`` of a table's or view's columns, in order.

        Raises:
            KeyError: no such table or view in the dataset.
        """
        with self._lock:
            rows = self._con.execute(
                "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_schema = ? AND table_name = ? ORDER BY ordinal_position",
                [self.dataset, table]).fetchall()
        if not rows:
            raise KeyError(f"no table or view {self.dataset}.{table}")
        return [(r[0], r[1]) for r in rows]

    # -- loading
    def insert_rows(self, table: str, rows: Sequence[Mapping[str, Any]]) -> int:
        """Append rows (dicts keyed by column) to a table.

        Values follow BigQuery's JSON conventions (what ``stores.bigquery.to_bq_row`` makes):
        DATE as ``datetime.date`` or ISO text, TIMESTAMP as aware ``datetime`` or RFC 3339
        text (``...Z``), FLOAT as numbers or ``"NaN"``/``"Infinity"``/``"-Infinity"``,
        REPEATED as lists. Missing keys are NULL.

        Returns:
            The number of rows inserted.

        Raises:
            KeyError: unknown table, or a row key that is not a column.
            ValueError: a value that does not convert (e.g. a naive datetime).
            duckdb.ConstraintException: a NULL in a NOT NULL (REQUIRED) column.
        """
        if not rows:
            return 0
        cols = self.columns(table)
        names = {c for c, _ in cols}
        for r in rows:
            extra = set(r) - names
            if extra:
                raise KeyError(f"{table} has no column(s) {sorted(extra)}")
        try:
            df, select = _frame(cols, rows)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{table}: {e}") from e
        return self._insert_relation(table, df, len(rows), ", ".join(select))

    def insert_frame(self, table: str, df: pd.DataFrame) -> int:
        """Append a DataFrame's rows to a table, columns matched by name (DuckDB casts them;
        missing columns are NULL).

        Returns:
            The number of rows inserted.

        Raises:
            KeyError: unknown table or a column the table does not have.
        """
        names = {c for c, _ in self.columns(table)}
        extra = set(df.columns) - names
        if extra:
            raise KeyError(f"{table} has no column(s) {sorted(extra)}")
        if df.empty:
            return 0
        return self._insert_relation(table, df, len(df))

    def _insert_relation(self, table: str, data: pd.DataFrame, n: int, select: str = "*") -> int:
        with self._lock:
            self._con.register("_analytics_rows", data)
            try:
                self._con.execute(f'INSERT INTO {self.dataset}."{table}" BY NAME '
                                  f"SELECT {select} FROM _analytics_rows")
            finally:
                self._con.unregister("_analytics_rows")
        return n

    def load_records(self, records: Iterable[object]) -> dict[str, int]:
        """Append platform records as the BigQuery sink writes them.

        ``PriceEvent``, ``BarFlag``, ``Prediction``, ``AlertEvent``, ``DeadLetter`` and
        ``ModelPerformance`` go through ``stores.bigquery.to_bq_row`` (same table, same row);
        ``Instrument`` records go to the ``instruments`` reference table.

        Returns:
            Rows inserted per table.

        Raises:
            TypeError: a record type without a table (nothing is inserted).
        """
        from miraikakaku.instruments import Instrument
        from stores.bigquery import to_bq_row

        by_table: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for record in records:
            if isinstance(record, Instrument):
                by_table["instruments"].append(_instrument_row(record))
                continue
            table, row = to_bq_row(record)
            by_table[table].append(row)
        return {t: self.insert_rows(t, rows) for t, rows in sorted(by_table.items())}

    def load_instruments(self, path: Path = INSTRUMENTS_CSV, *, replace: bool = True) -> int:
        """Load the instrument reference CSV into ``instruments``.

        Args:
            path: CSV with the ``instruments`` columns (``instrument_id, symbol, mic, calendar,
                currency, timezone, kind, name, listing_date, delisting_date``; the dated
                instrument master, ``miraikakaku/reference/README.md``).
            replace: delete the table's rows first (reference data is replaced, not appended).

        Returns:
            Rows loaded.
        """
        with open(path, newline="") as f:
            rows = [{k: (None if v == "" else v) for k, v in r.items()}
                    for r in csv.DictReader(f)]
        if replace:
            with self._lock:
                self._con.execute(f"DELETE FROM {self.dataset}.instruments")
        return self.insert_rows("instruments", rows)

    # -- queries
    def query(self, sql: str, params: Mapping[str, Any] | None = None) -> pd.DataFrame:
        """Run one BigQuery-dialect query (transpiled) and return its rows.

        Args:
            sql: BigQuery SQL; ``@name`` parameters are bound from ``params``.
            params: parameter values (``datetime.date`` for DATE, aware ``datetime`` for
                TIMESTAMP, lists for ``IN UNNEST(@name)``).

        Returns:
            A DataFrame in the query's column order (DATE columns as ``datetime64``,
            TIMESTAMP columns UTC-aware, FLOAT as float64, NULL as NaN/None/NaT).

        Raises:
            ValueError: the SQL does not transpile.
            duckdb.Error: DuckDB fails to run it (e.g. a missing parameter).
        """
        statements = _transpile_statements(sql, self.dataset, None)
        if len(statements) != 1:
            raise ValueError(f"query takes one statement, got {len(statements)}")
        cur = self._cursor()
        try:
            return cur.execute(statements[0], dict(params) if params else None).df()
        finally:
            cur.close()

    def view(self, name: str, *, order_by: Sequence[str] | None = None,
             **filters: Any) -> pd.DataFrame:
        """Rows of a view (or table), filtered by column values.

        Args:
            name: view or table name in the dataset.
            order_by: columns to sort by (ascending); None: no particular order.
            **filters: ``column=value`` keeps rows equal to the value; a list, tuple or set
                keeps rows whose column is in it; None keeps rows where it is NULL.

        Returns:
            The rows as a DataFrame (see ``query``).

        Raises:
            KeyError: unknown view, filter column or sort column.
        """
        columns = {c for c, _ in self.columns(name)}
        unknown = (set(filters) | set(order_by or ())) - columns
        if unknown:
            raise KeyError(f"{name} has no column(s) {sorted(unknown)}")
        where, params = [], {}
        for k, (col, value) in enumerate(filters.items()):
            if value is None:
                where.append(f"`{col}` IS NULL")
            elif isinstance(value, (list, tuple, set, frozenset)):
                where.append(f"`{col}` IN UNNEST(@p{k})")
                params[f"p{k}"] = list(value)
            else:
                where.append(f"`{col}` = @p{k}")
                params[f"p{k}"] = value
        sql = f"SELECT * FROM {DATASET}.`{name}`"
        if where:
            sql += " WHERE " + " AND ".join(where)
        if order_by:
            sql += " ORDER BY " + ", ".join(f"`{c}`" for c in order_by)
        return self.query(sql, params)


def _instrument_row(i: Any) -> dict[str, Any]:
    return {"instrument_id": i.instrument_id, "symbol": i.symbol, "mic": i.mic or None,
            "calendar": i.calendar, "currency": i.currency, "timezone": i.timezone,
            "kind": i.kind, "name": i.name or None,
            "listing_date": getattr(i, "listing_date", None),
            "delisting_date": getattr(i, "delisting_date", None)}


# -- command line ----------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    """``python -m analytics.warehouse bigquery|transpile ...`` (see the module docstring)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m analytics.warehouse",
                                     description="The analytics SQL for BigQuery or DuckDB.")
    sub = parser.add_subparsers(dest="command", required=True)
    bq = sub.add_parser("bigquery", help="write the tables and views as BigQuery SQL files")
    bq.add_argument("--project", required=True)
    bq.add_argument("--dataset", default=DATASET)
    bq.add_argument("--location", default="US", help="dataset location (init-gcp's default)")
    bq.add_argument("--out", type=Path, required=True, help="directory for NN_<name>.sql")
    tr = sub.add_parser("transpile", help="print the DuckDB SQL of BigQuery .sql files")
    tr.add_argument("files", nargs="+", type=Path)
    tr.add_argument("--dataset", default=DATASET, help="DuckDB schema (default miraikakaku)")
    args = parser.parse_args(argv)
    if args.command == "transpile":
        for f in args.files:
            statements = _transpile_statements(f.read_text(), args.dataset, str(f), pretty=True)
            print(f"-- {f}\n" + ";\n".join(statements) + ";")
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    statements = bigquery_statements(project=args.project, dataset=args.dataset)
    for n, (name, sql) in enumerate(statements, 1):
        (args.out / f"{n:02d}_{name}.sql").write_text(sql + ";\n")
    p = args.project
    print(f"wrote {len(statements)} files to {args.out}; create the dataset (or run "
          f"`miraikakaku init-gcp --project {p} --dataset {args.dataset}`, which creates the "
          "same tables from stores.bigquery.TABLE_SPECS), then run them in order:")
    print(f"  bq --project_id={p} mk --dataset --location={args.location} {p}:{args.dataset}")
    print(f"  for f in {args.out}/*.sql; do bq --project_id={p} query "
          "--use_legacy_sql=false < \"$f\" || break; done")
    print(f"  bq --project_id={args.project} load --source_format=CSV --skip_leading_rows=1 "
          f"--replace {args.dataset}.instruments {INSTRUMENTS_CSV}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
