"""The price pipeline on the DirectRunner: ordering, source selection, reconciliation."""

from __future__ import annotations

import datetime as dt
import random
import sqlite3

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import TimestampedValue

from miraikakaku.instruments import load_master
from pipelines.prices import run
from tests.conftest import JP, SP500, read_rows, write_csv
from transforms.ordering import ComputeFeatures, InstrumentSequencer, event_sort_key
from transforms.parsing import file_spec, iter_file

pytestmark = pytest.mark.pipeline

PRIORITY = ["chart0", "sp500_5yr", "yfinance", "mlbot"]


def _events(tmp_path):
    header, us = read_rows(SP500, {"AAPL", "IBM"})
    us = [r for r in us if r[1] < "2014-01-01"]
    jh, jp = read_rows(JP, {"7203.T"})
    jp = [r for r in jp if "2015-10-01" <= r[1] <= "2016-06-30"]  # mlbot + yfinance + chart0
    f1 = write_csv(tmp_path / "us.csv", header, us)
    f2 = write_csv(tmp_path / "jp.csv", jh, jp)
    events = [e for f in (f1, f2) for e in iter_file(file_spec(f, "sp500_5yr"))]
    return [e for e in events if not hasattr(e, "reason")]


def _reference(events):
    """Windows computed sequentially, outside Beam, in event-time order."""
    m = load_master()
    out = []
    by_inst: dict[str, list] = {}
    for e in events:
        by_inst.setdefault(e.instrument_id, []).append(e)
    for evs in by_inst.values():
        seq = InstrumentSequencer(m.resolve(evs[0].symbol).calendar, PRIORITY)
        for e in sorted(evs, key=event_sort_key(seq.rank)):
            bar = seq.step(e)
            if bar is not None and bar.step.window is not None:
                out.append((seq.context(bar), bar.step.window))
    return out


def _comparable(item):
    ctx, window = item
    return ctx, tuple(np.round(np.asarray(window, dtype=np.float64), 5).ravel().tolist())


def test_out_of_order_input_gives_the_same_windows_as_sequential_processing(tmp_path):
    events = _events(tmp_path)
    expected = [_comparable(x) for x in _reference(events)]
    assert len(expected) > 300
    shuffled = list(events)
    random.Random(7).shuffle(shuffled)
    with TestPipeline() as p:
        out = (p | beam.Create(shuffled)
               | beam.Map(lambda e: TimestampedValue(e, e.event_time.timestamp()))
               | ComputeFeatures(PRIORITY))
        assert_that(out.windows | beam.Map(_comparable), equal_to(expected))


def test_best_source_feeds_features_once_it_appears(tmp_path):
    events = [e for e in _events(tmp_path) if e.instrument_id == "XTKS:7203"]
    windows = _reference(events)
    sources = {ctx.source for ctx, _ in windows}
    # all three sources have bars from 2015-10; yfinance outranks mlbot from the first day, and
    # chart0 (from 2016-02-05 in the file) outranks both and takes over: mlbot never feeds
    assert sources == {"yfinance", "chart0"}
    first_chart0 = min(ctx.as_of_date for ctx, _ in windows if ctx.source == "chart0")
    assert all(ctx.as_of_date < first_chart0 for ctx, _ in windows if ctx.source == "yfinance")


BAD_LINES = {
    "malformed_line": "AAPL,2018-02-07,1,2",
    "missing_field": "AAPL,2017-12-01,,171.0,168.5,171.05,39759288",
    "bad_number": "AAPL,2017-12-04,x,172.6,167.6,169.8,32542385",
    "bad_timestamp": "AAPL,04/12/2017,169.95,171.67,168.5,169.48,32115052",
    "non_positive_price": "MSFT,2017-12-05,0,84.43,80.7,81.59,37149102",
    "high_below_low": "MSFT,2017-12-06,81.55,80.00,81.2,82.78,22728200",
}


def test_every_input_is_stored_dead_lettered_or_a_counted_duplicate(tmp_path, settings):
    header, rows = read_rows(SP500, {"AAPL", "MSFT"})
    rows = [r for r in rows if r[1] >= "2017-06-01"]
    # the bad lines replace real rows of the same day, so the real row count minus them is known
    bad_days = {(line.split(",")[0], line.split(",")[1]) for line in BAD_LINES.values()}
    real = [r for r in rows if (r[0], r[1]) not in bad_days]
    dups = real[10:13] + real[200:202]
    lines = [",".join(r) for r in real + dups] + list(BAD_LINES.values()) + ["", "   "]
    path = tmp_path / "mixed.csv"
    path.write_text(",".join(header) + "\n" + "\n".join(lines) + "\n")
    summary = run(["--input", str(path), "--source", "sp500_5yr", "--skip_inference", "true"],
                  settings=settings)
    n_in = len(real) + len(dups) + len(BAD_LINES)
    assert summary.events_read == n_in
    assert summary.duplicates == len(dups)
    assert summary.bars_stored == len(real)
    assert summary.dead_letters_by_reason == {
        **{f"ParseEvents:{k}": 1 for k in ("malformed_line", "missing_field", "bad_number",
                                             "bad_timestamp")},
        "ValidateEvents:non_positive_price": 1, "ValidateEvents:high_below_low": 1}
    assert summary.reconciled
    # and the store agrees with the counters
    conn = sqlite3.connect(settings.store_path)
    assert conn.execute("SELECT count(*) FROM bars").fetchone()[0] == len(real)
    reasons = dict(conn.execute("SELECT reason, count(*) FROM dead_letters GROUP BY reason"))
    assert reasons == dict.fromkeys(BAD_LINES, 1)
    payloads = {r[0] for r in conn.execute("SELECT payload FROM dead_letters "
                                           "WHERE step = 'ParseEvents'")}
    assert BAD_LINES["malformed_line"] in payloads
    # a replay of the same file changes nothing (idempotent sinks)
    before = conn.execute("SELECT count(*) FROM bars").fetchone()[0], \
        conn.execute("SELECT count(*) FROM dead_letters").fetchone()[0]
    again = run(["--input", str(path), "--source", "sp500_5yr", "--skip_inference", "true"],
                settings=settings)
    assert again.reconciled
    after = conn.execute("SELECT count(*) FROM bars").fetchone()[0], \
        conn.execute("SELECT count(*) FROM dead_letters").fetchone()[0]
    assert before == after


def test_a_parquet_file_runs_through_the_same_steps(tmp_path, settings):
    import pyarrow as pa
    import pyarrow.parquet as pq

    header, rows = read_rows(SP500, {"IBM"})
    rows = rows[-80:]
    table = pa.table({
        "symbol": [r[0] for r in rows],
        "date": pa.array([dt.date.fromisoformat(r[1]) for r in rows], type=pa.date32()),
        **{c: [float(r[i]) for r in rows] for i, c in enumerate(header) if i >= 2},
    })
    bad = pa.table({"symbol": ["IBM"], "date": pa.array([dt.date(2018, 2, 8)], type=pa.date32()),
                    "open": [1.0], "high": [0.5], "low": [0.9], "close": [0.7], "volume": [1.0]})
    path = tmp_path / "ibm.parquet"
    pq.write_table(pa.concat_tables([table, bad]), path)
    summary = run(["--input", str(path), "--skip_inference", "true"], settings=settings)
    assert summary.events_read == 81 and summary.bars_stored == 80
    assert summary.dead_letters_by_reason == {"ValidateEvents:high_below_low": 1}
    assert summary.reconciled
    conn = sqlite3.connect(settings.store_path)
    got = conn.execute("SELECT source, close FROM bars ORDER BY row_key DESC LIMIT 1").fetchone()
    assert got == ("user", float(rows[-1][5]))
