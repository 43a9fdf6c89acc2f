"""The pipeline's analytics sink in embedded mode: BigQuery's rows as Parquet files DuckDB reads.

``WriteToAnalyticsStore(path)``: ``PCollection[PriceEvent | BarFlag | Prediction | AlertEvent |
DeadLetter | ModelPerformance | FeatureVector | Instrument]`` → ``PCollection[str]`` (the Parquet
files written). Every record becomes the row BigQuery gets (``stores.bigquery.to_bq_row``; a
``FeatureVector`` becomes a ``features`` row, ``FEATURES_SPEC``); instruments are reference data
and are counted and skipped, as the BigQuery write does. Rows are buffered per table and written
as one Parquet file per table per bundle (or per ``flush_rows`` rows, whichever comes first)
under ``path/<table>/part-<time>-<uuid>.parquet``, typed from the table's BigQuery schema
(STRING → string, DATE → date32, TIMESTAMP → timestamp[us, UTC], FLOAT → float64, INTEGER →
int64, REPEATED → list).

Why Parquet files and not a DuckDB file: DuckDB allows one process to open a database file for
writing and then no other process may open it, not even read-only, so an API reading a DuckDB file
the pipeline writes would block (or be blocked by) the writer. Here the writer only ever adds
files, each written under a temporary name (``.part-….parquet.tmp``, which the ``*.parquet`` glob
does not match) and renamed into place (``os.replace``, atomic on POSIX), so a reader sees a
file complete or not at all and never takes a lock. Readers (``ParquetWarehouse``, ``connect``)
open an in-memory ``analytics.Warehouse`` (the DDL's tables, the instruments reference table, the
views of ``analytics/sql/views``) in which each table with files is a view over
``read_parquet('<path>/<table>/*.parquet')``: each query sees the files present when it
starts. A replayed input writes its rows again (new files): the analytics views de-duplicate
on ``insert_id`` as they do for BigQuery's at-least-once inserts.

Features: ``ComputeFeatures``' windows (``[window, N_FEATURES]`` float32, the model's input) end
with the feature vector of their as-of session; ``FeatureVector.from_window`` takes that last row.
Feature values are therefore float32-rounded (what the model saw), and the first ``window - 1``
feature vectors after each history start or reset have no window and no row.

Run: ``miraikakaku run`` writes ``$MIRAIKAKAKU_DATA_DIR/warehouse`` by default (``--analytics_dir
DIR``; ``--analytics_dir ''`` turns it off); ``analytics.sink.connect(DIR)`` reads it.
"""

from __future__ import annotations

import datetime as dt
import os
import uuid
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq

from miraikakaku.instruments import Instrument
from stores.bigquery import BQ_DEAD_LETTERS, FEATURES_TABLE, TABLE_SPECS, TableSpec, to_bq_row
from transforms import progress
from transforms.features import FeatureVector

__all__ = [
    "FEATURES_TABLE",
    "FEATURES_SPEC",
    "ANALYTICS_SPECS",
    "FeatureVector",
    "to_analytics_row",
    "arrow_schema",
    "rows_to_arrow",
    "write_parquet",
    "ParquetTableWriter",
    "WriteToAnalyticsStore",
    "table_files",
    "attach_tables",
    "ParquetWarehouse",
    "connect",
    "TeeToAnalytics",
]



FEATURES_SPEC = TABLE_SPECS[FEATURES_TABLE]
"""The ``features`` table (defined with the BigQuery tables in ``stores.bigquery``): one column per
``transforms.features.FEATURE_NAMES``; ``analytics/sql/tables/features.sql`` matches it (tested)."""

ANALYTICS_SPECS: dict[str, TableSpec] = {
    n: s for n, s in TABLE_SPECS.items() if n != BQ_DEAD_LETTERS}
"""The tables the analytics store holds: BigQuery's (less its rejected-rows table) + features."""


def to_analytics_row(record: object) -> tuple[str, dict[str, Any]]:
    """``(table, row)`` of a record: exactly ``stores.bigquery.to_bq_row`` (the row BigQuery
    gets; a ``FeatureVector`` becomes a ``features`` row).

    Raises:
        TypeError: for a record type without a table (``Instrument`` included).
    """
    return to_bq_row(record)


# -- Parquet ---------------------------------------------------------------------------------
_ARROW_TYPES = {"STRING": pa.string(), "DATE": pa.date32(), "FLOAT": pa.float64(),
                "INTEGER": pa.int64(), "BOOLEAN": pa.bool_(),
                "TIMESTAMP": pa.timestamp("us", tz="UTC")}


def arrow_schema(spec: TableSpec) -> pa.Schema:
    """The Arrow schema of a table (REPEATED fields as lists; REQUIRED as non-nullable)."""
    fields = []
    for f in spec.fields:
        t = _ARROW_TYPES[f["type"]]
        if f["mode"] == "REPEATED":
            t = pa.list_(t)
        fields.append(pa.field(f["name"], t, nullable=f["mode"] != "REQUIRED"))
    return pa.schema(fields)


def _column(field: Mapping[str, str], values: list[Any]) -> pa.Array:
    kind, repeated = field["type"], field["mode"] == "REPEATED"
    if repeated:
        return pa.array([list(v) if v is not None else [] for v in values],
                        type=pa.list_(_ARROW_TYPES[kind]))
    if kind == "DATE":
        return pa.array([None if v is None else dt.date.fromisoformat(v) for v in values],
                        type=pa.date32())
    if kind == "TIMESTAMP":  # RFC 3339 "…Z" strings: Arrow's cast parses them
        return pa.array(values, type=pa.string()).cast(_ARROW_TYPES[kind])
    if kind == "FLOAT":  # float, or BigQuery's "NaN"/"Infinity" spelling
        return pa.array([None if v is None else float(v) for v in values], type=pa.float64())
    return pa.array(values, type=_ARROW_TYPES[kind])


def rows_to_arrow(spec: TableSpec, rows: Sequence[Mapping[str, Any]]) -> pa.Table:
    """Rows of ``spec`` (as ``to_analytics_row`` gives them) → an Arrow table of its schema.

    Raises:
        KeyError: a row lacks a schema field.
        pyarrow.ArrowInvalid: a value does not convert to its column type.
    """
    schema = arrow_schema(spec)
    columns = [_column(f, [r[f["name"]] for r in rows]) for f in spec.fields]
    return pa.Table.from_arrays(columns, schema=schema)


def write_parquet(root: str | os.PathLike[str], table: str,
                  rows: Sequence[Mapping[str, Any]]) -> Path:
    """Write ``rows`` of ``table`` as a new Parquet file under ``root/table/``, atomically.

    The file is written as ``.part-<ns>-<uuid>.parquet.tmp`` and renamed to
    ``part-<ns>-<uuid>.parquet``, so a reader's ``*.parquet`` glob never sees a partial file.

    Returns:
        The path of the new file.

    Raises:
        KeyError: ``table`` is not in ``ANALYTICS_SPECS``.
    """
    spec = ANALYTICS_SPECS[table]
    directory = Path(root) / table
    directory.mkdir(parents=True, exist_ok=True)
    name = f"part-{dt.datetime.now(dt.timezone.utc):%Y%m%dT%H%M%S%f}-{uuid.uuid4().hex[:12]}"
    tmp = directory / f".{name}.parquet.tmp"
    final = directory / f"{name}.parquet"
    try:
        pq.write_table(rows_to_arrow(spec, rows), tmp, compression="zstd")
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()
    return final


class ParquetTableWriter:
    """Buffers records per table and writes them as Parquet files (``write_parquet``).

    Args:
        root: the analytics directory.
        flush_rows: a table's buffer is written once it holds this many rows.

    ``add`` returns the files it wrote (when a buffer filled); ``flush`` writes the rest.
    ``rows`` counts the rows written per table, ``skipped`` the instruments skipped.
    """

    def __init__(self, root: str | os.PathLike[str], flush_rows: int = 100_000) -> None:
        self.root = Path(root)
        self.flush_rows = flush_rows
        self.rows: dict[str, int] = {}
        self.skipped = 0
        self._buffers: dict[str, list[dict[str, Any]]] = {}

    def add(self, record: object) -> list[Path]:
        """Convert and buffer one record; instruments are skipped (reference data).

        Raises:
            TypeError: a record type without a table (a bug upstream: fail loudly).
        """
        if isinstance(record, Instrument):
            self.skipped += 1
            return []
        table, row = to_analytics_row(record)
        buf = self._buffers.setdefault(table, [])
        buf.append(row)
        return [self._write(table)] if len(buf) >= self.flush_rows else []

    def add_all(self, records: Iterable[object]) -> list[Path]:
        """``add`` each record, then ``flush``; returns every file written."""
        files = [f for r in records for f in self.add(r)]
        return files + self.flush()

    def _write(self, table: str) -> Path:
        rows = self._buffers.pop(table)
        path = write_parquet(self.root, table, rows)
        self.rows[table] = self.rows.get(table, 0) + len(rows)
        return path

    def flush(self) -> list[Path]:
        """Write every non-empty buffer; returns the files written."""
        return [self._write(t) for t in sorted(self._buffers) if self._buffers[t]]


class _WriteParquetFn(beam.DoFn):
    """Records → one Parquet file per table per bundle (or per ``flush_rows`` rows)."""

    NS = "WriteToAnalyticsStore"

    def __init__(self, root: str, flush_rows: int) -> None:
        self._root = root
        self._flush_rows = flush_rows
        self._files = progress.counter(self.NS, "files")
        self._skipped = progress.counter(self.NS, "skipped_instruments")
        self._row_counters: dict[str, Any] = {}

    def setup(self) -> None:
        Path(self._root).mkdir(parents=True, exist_ok=True)

    def start_bundle(self) -> None:
        self._writer = ParquetTableWriter(self._root, self._flush_rows)
        self._counted: dict[str, int] = {}

    def _count(self, files: list[Path]) -> list[Path]:
        if files:
            self._files.inc(len(files))
        for table, n in self._writer.rows.items():
            new = n - self._counted.get(table, 0)
            if new:
                c = self._row_counters.get(table)
                if c is None:
                    c = self._row_counters[table] = progress.counter(self.NS, f"rows:{table}")
                c.inc(new)
                self._counted[table] = n
        return files

    def process(self, record):
        skipped = self._writer.skipped
        files = self._count(self._writer.add(record))
        if self._writer.skipped != skipped:
            self._skipped.inc()
        for f in files:
            yield str(f)

    def finish_bundle(self):
        from apache_beam.transforms.window import GlobalWindow
        from apache_beam.utils.windowed_value import WindowedValue

        for f in self._count(self._writer.flush()):
            yield WindowedValue(str(f), 0, [GlobalWindow()])


class WriteToAnalyticsStore(beam.PTransform):
    """Write records to the embedded analytics store (Parquet files; see the module docstring).

    ``PCollection[PriceEvent | BarFlag | Prediction | AlertEvent | DeadLetter |
    ModelPerformance | FeatureVector | Instrument]`` → ``PCollection[str]`` (paths written).
    Counters (namespace ``WriteToAnalyticsStore``): ``rows:<table>``, ``files``,
    ``skipped_instruments``.

    Args:
        path: the analytics directory (``data_dir/warehouse`` by default in ``miraikakaku run``).
        flush_rows: rows of one table buffered before a file is written within a bundle
            (bounds memory: a bounded DirectRunner run can be one bundle). Default 100,000.
    """

    def __init__(self, path: str | os.PathLike[str], flush_rows: int = 100_000) -> None:
        super().__init__()
        self._path = str(path)
        self._flush_rows = flush_rows

    def expand(self, records):
        return records | "WriteParquet" >> beam.ParDo(
            _WriteParquetFn(self._path, self._flush_rows))


# -- readers ---------------------------------------------------------------------------------
def _sql_string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def table_files(root: str | os.PathLike[str], table: str) -> list[Path]:
    """The complete Parquet files of ``table`` under ``root`` (temporary files excluded)."""
    directory = Path(root) / table
    return sorted(directory.glob("*.parquet")) if directory.is_dir() else []


def attach_tables(con, root: str | os.PathLike[str], *, schema: str = "miraikakaku",
                  specs: Mapping[str, TableSpec] | None = None) -> dict[str, int]:
    """Replace each table that has Parquet files under ``root`` by a view over them.

    ``schema.<table>`` becomes ``SELECT <columns> FROM read_parquet('<root>/<table>/*.parquet')``
    (columns in schema order); a table without files is left as it is (an empty table of the
    DDL), so queries over it answer no rows instead of failing on an empty glob. The views
    re-read the directory on every query, so files written later are seen.

    Args:
        con: a ``duckdb.DuckDBPyConnection`` holding ``schema`` (``Warehouse.connection``).
        root: the analytics directory the sink writes.
        schema: the DuckDB schema of the tables.
        specs: tables to attach (default ``ANALYTICS_SPECS``).

    Returns:
        Table name → number of Parquet files found (0: not attached).
    """
    found: dict[str, int] = {}
    for name, spec in (specs or ANALYTICS_SPECS).items():
        files = table_files(root, name)
        found[name] = len(files)
        if not files:
            continue
        cols = ", ".join(f'"{f["name"]}"' for f in spec.fields)
        glob = _sql_string(str((Path(root) / name).resolve() / "*.parquet"))
        con.execute(f'DROP TABLE IF EXISTS {schema}."{name}"')
        con.execute(f'CREATE OR REPLACE VIEW {schema}."{name}" AS SELECT {cols} '
                    f"FROM read_parquet({glob}, union_by_name = true)")
    return found


class ParquetWarehouse:
    """Reads the sink's Parquet directory through an in-memory ``analytics.Warehouse``.

    The warehouse holds the DDL's tables (empty), the ``instruments`` reference table and the
    analytics views; tables with Parquet files are views over them (``attach_tables``). No lock
    is taken on the directory, so readers never block the writer (or each other).
    ``warehouse()`` re-attaches when a table got its first files since the last call.

    Args:
        root: the analytics directory (``data_dir/warehouse``).

    Raises:
        FileNotFoundError: ``root`` does not exist (no pipeline run wrote it yet).
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"no analytics store at {self.root}: run `miraikakaku run`")
        import threading

        self._lock = threading.Lock()
        self._wh = None
        self._attached: frozenset[str] = frozenset()

    def _present(self) -> frozenset[str]:
        return frozenset(n for n in ANALYTICS_SPECS if table_files(self.root, n))

    def warehouse(self):
        """The open ``analytics.Warehouse`` (refreshed when new tables appeared).

        Returns:
            An ``analytics.warehouse.Warehouse`` (in memory) over the Parquet files.
        """
        from analytics.warehouse import Warehouse

        present = self._present()
        with self._lock:
            if self._wh is None:
                wh = Warehouse(None)
                wh.create_tables()
                wh.load_instruments()
                attach_tables(wh.connection, self.root, schema=wh.dataset)
                wh.create_views()
                self._wh, self._attached = wh, present
            elif present != self._attached:
                attach_tables(self._wh.connection, self.root, schema=self._wh.dataset)
                self._wh.create_views()  # views bound to replaced tables are re-created
                self._attached = present
            return self._wh

    def close(self) -> None:
        """Close the in-memory database (idempotent)."""
        with self._lock:
            if self._wh is not None:
                self._wh.close()
                self._wh = None

    def __enter__(self) -> ParquetWarehouse:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def connect(root: str | os.PathLike[str]):
    """A ``Warehouse`` (in-memory DuckDB) over the Parquet files under ``root``: tables,
    instruments and views of ``analytics/sql``. Takes no lock: any number of readers may run
    while the pipeline writes. Close it when done.

    Raises:
        FileNotFoundError: ``root`` does not exist.
    """
    return ParquetWarehouse(root).warehouse()


class TeeToAnalytics:
    """A serving store whose ``write_batch`` also writes the records to the analytics store.

    For batch jobs that write through a store, e.g. ``miraikakaku track`` (``model_performance``
    rows): every other attribute is the wrapped store's. Each ``write_batch`` call becomes one
    Parquet file per table (``ParquetTableWriter.add_all``).

    Args:
        store: the serving store (``write_batch(records) -> int``).
        root: the analytics directory.

    Attributes:
        rows: rows written to the analytics store per table.
    """

    def __init__(self, store: Any, root: str | os.PathLike[str]) -> None:
        self._store = store
        self._writer = ParquetTableWriter(root)

    @property
    def rows(self) -> dict[str, int]:
        """Rows written to the analytics store, per table."""
        return dict(self._writer.rows)

    def write_batch(self, records: Iterable[object]) -> int:
        """Write to the store, then the same records to the analytics store."""
        records = list(records)
        n = self._store.write_batch(records)
        self._writer.add_all(records)
        return n

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)
