"""The embedded analytics sink (analytics/sink.py) on real records from ../shared/data.

* The Parquet files hold exactly the rows ``stores.bigquery.to_bq_row`` gives (the rows BigQuery
  gets), table by table, for real bars, trades, dead letters, bar flags, feature vectors,
  predictions, alerts and tracked errors; instruments are skipped; count in = rows out.
* The Beam transform writes the same, one file per table per bundle or ``flush_rows``.
* Feature vectors are the windows' last rows: ``compute_features`` of the same history, rounded
  to float32; ``analytics/sql/tables/features.sql`` matches ``FEATURES_SPEC``.
* Replayed records (written twice) leave every analytics view unchanged (insert_id dedup).
* A reader queries while another process writes: no lock error, counts only grow, the last
  query sees every row.
* ``miraikakaku run`` writes the warehouse by default (rows reconcile with the run summary) and
  not with ``--analytics_dir ''``.

Run: ``.venv/bin/python -m pytest -q tests/unit/test_analytics_sink.py``.
"""

from __future__ import annotations

import collections
import datetime as dt
import math
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import apache_beam as beam
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from apache_beam.testing.test_pipeline import TestPipeline

from analytics.sink import (
    ANALYTICS_SPECS,
    FEATURES_SPEC,
    FeatureVector,
    ParquetTableWriter,
    ParquetWarehouse,
    WriteToAnalyticsStore,
    table_files,
    to_analytics_row,
)
from analytics.warehouse import Warehouse
from miraikakaku.instruments import Instrument, load_master
from miraikakaku.rowkeys import bar_key
from miraikakaku.schema import AlertEvent, DeadLetter, Prediction, PriceEvent
from miraikakaku.settings import Settings
from miraikakaku.tracking import ModelPerformance, make_outcome
from quality.stream import MONDAY_OFFSET, QualityResult, window_bounds
from stores.base import BarFlag
from stores.bigquery import to_bq_row
from tests.conftest import JP, SHARED, SP500, read_rows, write_csv
from transforms.features import FEATURE_NAMES, compute_features
from transforms.ordering import InstrumentSequencer, event_sort_key
from transforms.parsing import file_spec, iter_file
from transforms.validation import validate_event

pytestmark = pytest.mark.unit

TICKS = SHARED / "normalized" / "us_tick_trades_lean.normalized.csv.gz"
REPO = Path(__file__).resolve().parents[2]


def _parse(path: Path) -> list[PriceEvent | DeadLetter]:
    return list(iter_file(file_spec(path)))


def _sequence(events: list[PriceEvent], priority: list[str]):
    """Run one instrument's daily bars through the pipeline's sequencer: (bar, SequencedBar)."""
    seq = InstrumentSequencer("XNYS" if events[0].instrument_id.startswith("XN") else "XTKS",
                              priority)
    out = []
    for e in sorted(events, key=event_sort_key(seq.rank)):
        if seq.is_late(e):
            continue
        bar = seq.step(e)
        if bar is not None:
            out.append((seq, bar))
    return out


@pytest.fixture(scope="module")
def records(tmp_path_factory) -> list[object]:
    """Real records of every kind the pipeline writes (+ instruments, which are skipped)."""
    tmp = tmp_path_factory.mktemp("sink")
    header, aapl = read_rows(SP500, {"AAPL", "NWL"})  # NWL: a large_move on 2017-09-14
    aapl = aapl + [["AAPL", "2018-03-01", "abc", *aapl[-1][3:]],   # bad_number
                   ["AAPL", "2018-03-02", "", *aapl[-1][3:]]]      # missing_field
    parsed = _parse(write_csv(tmp / "us_daily_sp500_5yr_2013_2018.csv", header, aapl))
    jheader, toyota = read_rows(JP, {"7203.T"})
    parsed += _parse(write_csv(tmp / "jp_daily.csv", jheader,
                               [r for r in toyota if r[1] >= "2017-01-01"]))
    theader, trades = read_rows(TICKS, {"IBM"})
    parsed += _parse(write_csv(tmp / "us_tick_trades_lean.csv", theader, trades[:300]))
    events = [e for e in parsed if isinstance(e, PriceEvent)]
    assert any(isinstance(r, DeadLetter) for r in parsed)
    assert {e.instrument_id for e in events} == {"XNAS:AAPL", "XNYS:NWL", "XTKS:7203",
                                                 "XNYS:IBM"}
    extra: list[object] = []
    priority = list(Settings().source_priority)
    for iid in ("XNAS:AAPL", "XNYS:NWL", "XTKS:7203"):
        daily = [e for e in events if e.instrument_id == iid and e.interval == "1d"]
        steps = _sequence(daily, priority)
        for seq, bar in steps:
            e = bar.event
            extra += [BarFlag(bar_key(e.instrument_id, "1d", e.session_date), e.source, f)
                      for f in bar.flags]
            if bar.step.window is not None:
                extra.append(FeatureVector.from_window((seq.context(bar), bar.step.window)))
        # a forecast per window of the last 30 sessions and its tracked error
        with_windows = [(seq, b) for seq, b in steps if b.step.window is not None][-31:]
        for (seq, b), (_, nxt) in zip(with_windows, with_windows[1:]):
            ctx = seq.context(b)
            r = float(b.step.window[-1][0]) * 0.5
            pred = Prediction(ctx.instrument_id, ctx.source, ctx.as_of_date, ctx.as_of_time,
                              ctx.target_date, ctx.base_price, r,
                              ctx.base_price * math.exp(r), "lstm_daily", "1")
            extra.append(pred)
            if nxt.event.session_date == ctx.target_date:
                extra.append(ModelPerformance.from_outcomes(
                    [make_outcome(pred, nxt.event.feature_price, nxt.event.currency)]))
        last = daily[-1]
        extra.append(AlertEvent(f"pct_move_3/{iid}/{last.session_date:%Y%m%d}", "pct_move_3",
                                "pct_move", iid, last.event_time, last.session_date, 0.041,
                                0.03, "moved +4.1%"))
    # in-stream quality outcomes (quality.stream): NWL's ohlc_inconsistent rule per 4 weeks
    cells: dict[tuple, list[int]] = {}
    for e in events:
        if e.instrument_id == "XNYS:NWL":
            cell = cells.setdefault(window_bounds(e.event_time, 28 * 86400, MONDAY_OFFSET), [0, 0])
            cell[0] += 1
            cell[1] += "ohlc_inconsistent" in validate_event(e).flags
    extra += [QualityResult(start, end, "XNYS:NWL", "price_events", "ohlc_inconsistent", "flag",
                            n, bad, "local-test", dt.datetime(2024, 5, 1, tzinfo=dt.timezone.utc))
              for (start, end), (n, bad) in sorted(cells.items())]
    master = load_master()
    extra += [master.lookup("AAPL"), master.lookup("7203.T")]
    return parsed + extra


def _expected(records: list[object]) -> dict[str, list[dict]]:
    by_table: dict[str, list[dict]] = collections.defaultdict(list)
    for r in records:
        if isinstance(r, Instrument):
            continue
        table, row = to_analytics_row(r)
        by_table[table].append(row)
    return by_table


def _as_bq(spec, row: dict) -> dict:
    """A row read back from Parquet in to_bq_row's JSON conventions."""
    out = {}
    for f in spec.fields:
        v = row[f["name"]]
        if v is None:
            out[f["name"]] = [] if f["mode"] == "REPEATED" else None
        elif f["type"] == "DATE":
            out[f["name"]] = v.isoformat()
        elif f["type"] == "TIMESTAMP":
            assert v.utcoffset() == dt.timedelta(0)
            out[f["name"]] = v.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        elif f["type"] == "FLOAT" and not math.isfinite(v):
            out[f["name"]] = "NaN" if math.isnan(v) else ("Infinity" if v > 0 else "-Infinity")
        else:
            out[f["name"]] = v
    return out


def _read_back(root: Path) -> dict[str, list[dict]]:
    out = {}
    for table, spec in ANALYTICS_SPECS.items():
        rows = [r for f in table_files(root, table) for r in pq.read_table(f).to_pylist()]
        if rows:
            out[table] = [_as_bq(spec, r) for r in rows]
    return out


def _key(row: dict) -> str:
    return row["insert_id"]


def test_files_hold_exactly_the_rows_bigquery_gets(records, tmp_path):
    writer = ParquetTableWriter(tmp_path, flush_rows=500)
    files = writer.add_all(records)
    expected = _expected(records)
    # every kind of record is there, from real data
    assert set(expected) == set(ANALYTICS_SPECS), set(ANALYTICS_SPECS) - set(expected)
    assert writer.skipped == 2
    assert writer.rows == {t: len(rows) for t, rows in expected.items()}
    assert len(files) == sum(math.ceil(len(rows) / 500) for rows in expected.values())
    got = _read_back(tmp_path)
    for table, rows in expected.items():
        assert len(got[table]) == len(rows), table
        assert sorted(got[table], key=_key) == sorted(rows, key=_key), table
    # the non-feature rows are to_bq_row's rows, not a re-implementation
    bars = [r for r in records if isinstance(r, PriceEvent) and r.interval == "1d"]
    assert sorted(got["bars"], key=_key) == sorted((to_bq_row(b)[1] for b in bars), key=_key)
    # nothing temporary is left behind
    assert not list(tmp_path.rglob("*.tmp"))


@pytest.mark.pipeline
def test_beam_transform_writes_one_file_per_table_per_batch(records, tmp_path):
    p = TestPipeline()
    written = (p | beam.Create(records, reshuffle=False)
               | WriteToAnalyticsStore(tmp_path, flush_rows=2_000))
    paths = written | beam.combiners.ToList()
    out = tmp_path / "paths.txt"
    _ = paths | beam.Map(lambda ps: out.write_text("\n".join(sorted(ps))))
    p.run().wait_until_finish()
    on_disk = sorted(str(f) for t in ANALYTICS_SPECS for f in table_files(tmp_path, t))
    assert out.read_text().split("\n") == on_disk
    expected = _expected(records)
    got = _read_back(tmp_path)
    assert {t: len(r) for t, r in got.items()} == {t: len(r) for t, r in expected.items()}
    for table, rows in expected.items():
        assert sorted(got[table], key=_key) == sorted(rows, key=_key), table


def test_feature_vectors_are_the_windows_last_rows(records):
    feats = {fv.session_date: fv for fv in records
             if isinstance(fv, FeatureVector) and fv.instrument_id == "XNAS:AAPL"}
    daily = sorted((e for e in records if isinstance(e, PriceEvent)
                    and e.instrument_id == "XNAS:AAPL"), key=lambda e: e.session_date)
    assert len(feats) == len(daily) - 39  # 21 bars for the first vector, 19 more for a window
    # recompute independently from the feature prices of the bars, oldest first
    from transforms.features import BarPoint

    points = [BarPoint(e.session_date, i, e.feature_price, e.high, e.low, e.close, e.volume)
              for i, e in enumerate(daily)]
    for i in range(39, len(points)):
        want = np.asarray(compute_features(points[i - 20:i + 1]), dtype=np.float32)
        got = feats[points[i].session_date]
        assert got.values == tuple(float(v) for v in want)
        assert got.source == "sp500_5yr"
    _, row = to_analytics_row(feats[daily[-1].session_date])
    assert list(row) == FEATURES_SPEC.field_names
    assert [f for f in row if f in FEATURE_NAMES] == list(FEATURE_NAMES)


def test_features_ddl_matches_the_spec(tmp_path, records):
    wh = Warehouse(None)
    wh.create_tables()
    cols = wh.columns("features")
    assert [c for c, _ in cols] == FEATURES_SPEC.field_names
    types = {"STRING": "VARCHAR", "DATE": "DATE", "FLOAT": "DOUBLE",
             "TIMESTAMP": "TIMESTAMP WITH TIME ZONE"}
    assert [t for _, t in cols] == [types[f["type"]] for f in FEATURES_SPEC.fields]
    ParquetTableWriter(tmp_path).add_all(records)
    with ParquetWarehouse(tmp_path) as pw:
        attached = pw.warehouse().columns("features")
    assert attached == cols  # the Parquet files read back with the DDL's types


def _rows(wh: Warehouse, view: str):
    """A view's rows in a fixed order (DuckDB's ORDER BY ALL), arrays as tuples."""
    df = wh.connection.execute(f"SELECT * FROM miraikakaku.{view} ORDER BY ALL").df()
    return df.applymap(lambda v: tuple(v) if isinstance(v, np.ndarray) else v)


def test_views_deduplicate_replayed_rows(records, tmp_path):
    ParquetTableWriter(tmp_path / "once").add_all(records)
    twice = ParquetTableWriter(tmp_path / "twice")
    twice.add_all(records)
    twice.add_all(records)  # a replay: same rows, new files
    with ParquetWarehouse(tmp_path / "once") as a, ParquetWarehouse(tmp_path / "twice") as b:
        wa, wb = a.warehouse(), b.warehouse()
        n = wa.query("SELECT COUNT(*) AS n FROM miraikakaku.bars")["n"][0]
        assert wb.query("SELECT COUNT(*) AS n FROM miraikakaku.bars")["n"][0] == 2 * n
        views = [v for v in wa.views() if v not in ANALYTICS_SPECS]  # tables are views here
        assert {"daily_returns", "data_quality_trend", "model_performance_daily"} <= set(views)
        for view in views:
            fa, fb = (_rows(w, view) for w in (wa, wb))
            assert len(fa) > 0, view
            # equal up to the summation order of floating-point aggregates
            pd.testing.assert_frame_equal(fa, fb, check_exact=False, rtol=1e-12, obj=view)


_WRITER = textwrap.dedent("""
    import sys, time
    import apache_beam as beam
    from analytics.sink import WriteToAnalyticsStore
    from transforms.parsing import file_spec, iter_file
    from miraikakaku.schema import PriceEvent

    src, root = sys.argv[1], sys.argv[2]
    events = [e for e in iter_file(file_spec(src)) if isinstance(e, PriceEvent)]

    def slow(e):
        time.sleep(0.001)
        return e

    with beam.Pipeline(options=beam.options.pipeline_options.PipelineOptions(
            direct_num_workers=1, direct_running_mode="in_memory")) as p:
        (p | beam.Create(events) | beam.Map(slow)
         | WriteToAnalyticsStore(root, flush_rows=100))
    print(len(events))
""")


@pytest.mark.pipeline
def test_a_reader_queries_while_a_writer_writes(tmp_path):
    header, rows = read_rows(SP500, {"AAPL", "MSFT", "IBM"})
    src = write_csv(tmp_path / "us_daily_sp500_5yr_2013_2018.csv", header, rows)
    root = tmp_path / "warehouse"
    root.mkdir()
    writer = subprocess.Popen([sys.executable, "-c", _WRITER, str(src), str(root)],
                              cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
    counts, errors = [], []
    with ParquetWarehouse(root) as reader:
        deadline = time.monotonic() + 300
        while writer.poll() is None and time.monotonic() < deadline:
            try:
                df = reader.warehouse().query(
                    "SELECT COUNT(*) AS n, COUNT(DISTINCT instrument_id) AS k "
                    "FROM miraikakaku.daily_returns")
                counts.append(int(df["n"][0]))
            except Exception as e:  # noqa: BLE001 - any failure is the finding
                errors.append(repr(e))
            time.sleep(0.02)
        out, err = writer.communicate(timeout=60)
        assert writer.returncode == 0, err[-3000:]
        final = reader.warehouse().query("SELECT COUNT(*) AS n FROM miraikakaku.bars")["n"][0]
    assert errors == []
    assert int(out.split()[-1]) == len(rows) == final
    assert counts == sorted(counts)                      # only ever grows
    seen = {c for c in counts if 0 < c}
    assert len(seen) >= 3, counts                        # reads overlapped the writes
    assert len(table_files(root, "bars")) >= len(rows) // 100


@pytest.mark.pipeline
def test_pipeline_run_writes_the_analytics_store(tmp_path):
    from pipelines.prices import run

    header, rows = read_rows(SP500, {"AAPL", "MSFT"})
    rows = rows[:400] + [["AAPL", "2018-03-01", "abc", *rows[0][3:]]]
    jh, jp = read_rows(JP, {"7203.T"})
    inputs = [write_csv(tmp_path / "us_daily_sp500_5yr_2013_2018.csv", header, rows),
              write_csv(tmp_path / "jp_daily.csv", jh, [r for r in jp if r[1] >= "2018-01-01"])]
    argv = [a for p in inputs for a in ("--input", str(p))] + [
        "--source", "sp500_5yr", "--skip_inference", "true"]
    settings = Settings(data_dir=tmp_path / "var")
    s = run(argv, settings=settings)
    root = settings.data_dir / "warehouse"
    assert s.analytics_dir == str(root)
    got = {t: sum(pq.read_metadata(f).num_rows for f in table_files(root, t))
           for t in ANALYTICS_SPECS}
    assert got["bars"] == s.bars_stored
    assert got["features"] == s.windows > 0
    assert got["dead_letters"] == s.parse_dead_letters + s.validation_dead_letters >= 1
    assert got["bar_flags"] > 0 and got["predictions"] == 0
    assert s.analytics_rows == sum(got.values())
    off = Settings(data_dir=tmp_path / "off")
    s2 = run([*argv, "--analytics_dir", ""], settings=off)
    assert s2.analytics_rows == 0 and s2.bars_stored == s.bars_stored
    assert not (off.data_dir / "warehouse").exists()
