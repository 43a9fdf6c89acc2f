"""In-stream GX validation (quality.stream.ValidateWithSuite) on real rows and mutated copies.

Real daily bars of CHD, LNT and XL (the shared data README's anomalies: CHD 2014-05-19 and LNT
2016-05-19 have open/close outside [low, high], XL 2015-08-24 a flash-crash low 5.40 against a
36.79 close) plus mutated copies of real rows. Expected outputs are computed here without GX:
the block/flag conditions written out in plain Python.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from pathlib import Path

import apache_beam as beam
import pyarrow.parquet as pq
import pytest
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import TimestampedValue

from miraikakaku.schema import PriceEvent
from pipelines.prices import run
from quality.stream import QualityResult, ValidateWithSuite
from tests.conftest import SP500, read_rows, write_csv
from transforms.parsing import file_spec, iter_file

pytestmark = pytest.mark.pipeline

UTC = dt.timezone.utc
WEEK = 7 * 86400


def _real_events(tmp_path: Path, symbols: set[str], since: str, until: str) -> list[PriceEvent]:
    header, rows = read_rows(SP500, symbols)
    rows = [r for r in rows if since <= r[1] <= until]
    path = write_csv(tmp_path / "us_daily_sp500_5yr_2013_2018.csv", header, rows)
    return [e for e in iter_file(file_spec(path, "sp500_5yr")) if isinstance(e, PriceEvent)]


def _monday(t: dt.datetime) -> dt.datetime:
    d = t.astimezone(UTC).date()
    return dt.datetime.combine(d - dt.timedelta(days=d.weekday()), dt.time(), UTC)


def _flag_failures(e: PriceEvent) -> list[str]:
    """The suite's in-stream flag rules a row fails, in suite order, written out (NaN prices
    compare False: not evaluated)."""
    new = []
    if e.open > e.high or e.close > e.high or e.open < e.low or e.close < e.low:
        new.append("ohlc_inconsistent")
    if e.low > 0 and e.high / e.low > 1.5:  # daily limit (quality.suites.RANGE_LIMITS)
        new.append("extreme_range")
    if e.volume is not None and e.volume <= 0:
        new.append("zero_volume")
    return new


def _expected_flags(e: PriceEvent) -> tuple[str, ...]:
    return e.flags + tuple(f for f in _flag_failures(e) if f not in e.flags)


def _mutate(events: list[PriceEvent]) -> dict[str, PriceEvent]:
    """Mutated copies of real rows (new event ids: the copies are extra events)."""
    def copy(e: PriceEvent, tag: str, **changes) -> PriceEvent:
        return dataclasses.replace(e, event_id=f"{e.event_id}/{tag}", **changes)

    by_day = {(e.symbol, e.session_date.isoformat()): e for e in events}
    a = by_day[("CHD", "2015-03-02")]
    b = by_day[("LNT", "2016-03-01")]
    c = by_day[("XL", "2015-09-01")]
    d = by_day[("CHD", "2016-06-01")]
    z = by_day[("LNT", "2015-06-01")]
    return {
        "non_positive_price": copy(a, "m1", low=0.0),
        "high_below_low": copy(b, "m2", high=b.low, low=b.high),
        "negative_volume": copy(c, "m3", volume=-c.volume),
        "missing_field": copy(d, "m4", close=math.nan),
        "zero_volume": copy(z, "m5", volume=0.0),  # a flag: stored
    }


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("qs")
    events = _real_events(tmp, {"CHD", "LNT", "XL"}, "2014-05-01", "2016-06-30")
    return events, _mutate(events)


def test_blocked_rows_are_dead_lettered_with_the_rule_and_flags_and_results_add_up(data):
    events, mutated = data
    blocked = {k: v for k, v in mutated.items() if k != "zero_volume"}
    inputs = events + list(mutated.values())
    expected_events = [dataclasses.replace(e, flags=_expected_flags(e))
                       for e in events + [mutated["zero_volume"]]]
    assert sum("ohlc_inconsistent" in e.flags for e in expected_events) >= 2  # CHD, LNT prints
    assert any("extreme_range" in e.flags for e in expected_events)  # XL 2015-08-24
    p = TestPipeline()
    out = (p | beam.Create(inputs)
           | ValidateWithSuite(batch_size=400, run_id="test-run", window_seconds=WEEK))
    assert_that(out.events, equal_to(expected_events), label="Events")
    # a blocked event's dead letter says where it was read: its file and line
    assert all(v.provenance[0].endswith(".csv") and v.provenance[1].startswith("line:")
               for v in blocked.values())
    assert_that(out.dead_letters | beam.Map(lambda d: (d.step, d.reason, d.payload, d.origin,
                                                       d.position)),
                equal_to([("ValidateEvents", k, v.to_json(), *v.provenance[:2])
                          for k, v in blocked.items()]), label="DeadLetters")

    def check_detail(letters):
        by_reason = {d.reason: d.detail for d in letters}
        assert "expect_column_values_to_be_between" in by_reason["negative_volume"]
        assert f"volume={blocked['negative_volume'].volume}" in by_reason["negative_volume"]
        assert "column_A=high" in by_reason["high_below_low"]

    assert_that(out.dead_letters, check_detail, label="Details")

    # quality results: per (week, instrument, rule), evaluated = the instrument's rows that
    # week (mutated copies included), failed = the rows failing it
    cells: dict[tuple, list[int]] = {}
    for e in inputs:
        start = _monday(e.event_time)
        for rule in ("missing_field", "bad_number", "non_positive_price", "high_below_low",
                     "negative_volume", "ohlc_inconsistent", "extreme_range", "zero_volume"):
            cells.setdefault((start, e.instrument_id, rule), [0, 0])[0] += 1
    # a blocked row counts under its block rule and under every flag rule it fails too
    for rule, e in blocked.items():
        for r in [rule, *_flag_failures(e)]:
            cells[(_monday(e.event_time), e.instrument_id, r)][1] += 1
    for e in expected_events:
        for flag in _flag_failures(e):
            cells[(_monday(e.event_time), e.instrument_id, flag)][1] += 1
    want = sorted((s, s + dt.timedelta(days=7), i, r, ev, f) for (s, i, r), (ev, f)
                  in cells.items())

    def as_tuple(q: QualityResult):
        assert q.suite == "price_events" and q.run_id == "test-run" and q.pane_index == 0
        assert q.severity == ("flag" if q.rule in ("ohlc_inconsistent", "extreme_range",
                                                   "zero_volume") else "block")
        return (q.window_start, q.window_end, q.instrument_id, q.rule, q.evaluated, q.failed)

    assert_that(out.results | beam.Map(as_tuple), equal_to(want), label="Results")
    result = p.run()
    result.wait_until_finish()
    counters = {(c.key.metric.namespace, c.key.metric.name): c.committed
                for c in result.metrics().query(MetricsFilter())["counters"]}
    assert counters[("ValidateEvents", "blocked")] == len(blocked)
    assert counters[("ValidateEvents", "flagged")] == sum(bool(e.flags) for e in expected_events)
    assert counters[("ValidateEvents", "evaluated")] == len(inputs)
    n_xl = sum(e.symbol == "XL" for e in inputs)
    assert counters[("ValidateEvents:XNYS:XL", "evaluated")] == n_xl
    assert counters[("ValidateEvents:XNYS:XL", "blocked")] == 1
    assert counters[("ValidateEvents", "failed:high_below_low")] == 1


def test_the_pipeline_reconciles_and_writes_quality_results(tmp_path):
    from miraikakaku.settings import Settings

    header, rows = read_rows(SP500, {"CHD", "LNT"})
    rows = [r for r in rows if "2016-01-01" <= r[1] <= "2016-12-31"]
    cols = {c: i for i, c in enumerate(header)}
    day = {(r[0], r[1]): i for i, r in enumerate(rows)}
    rows = [list(r) for r in rows]

    def mutate(sym: str, date: str, **values: str) -> None:
        for k, v in values.items():
            rows[day[(sym, date)]][cols[k]] = v

    r_hbl = rows[day[("LNT", "2016-03-01")]]
    mutate("CHD", "2016-02-01", low="0")
    mutate("LNT", "2016-03-01", high=r_hbl[cols["low"]], low=r_hbl[cols["high"]])
    mutate("CHD", "2016-04-01", volume="-" + rows[day[("CHD", "2016-04-01")]][cols["volume"]])
    mutate("LNT", "2016-06-01", close="")  # a missing value: ParseEvents' missing_field
    dups = rows[10:13]
    path = write_csv(tmp_path / "us_daily_sp500_5yr_2013_2018.csv", header, rows + dups)
    warehouse = tmp_path / "warehouse"
    summary = run(["--input", str(path), "--skip_inference", "true", "--analytics_dir",
                   str(warehouse), "--validation_batch_size", "300",
                   "--quality_window_seconds", str(WEEK)],
                  settings=Settings(data_dir=tmp_path / "var"))
    assert summary.events_read == len(rows) + len(dups)
    assert summary.dead_letters_by_reason == {
        "ParseEvents:missing_field": 1, "ValidateEvents:non_positive_price": 1,
        "ValidateEvents:high_below_low": 1, "ValidateEvents:negative_volume": 1}
    assert summary.duplicates == len(dups)
    assert summary.bars_stored == len(rows) - 4
    assert summary.reconciled
    assert summary.flags_by_name["ohlc_inconsistent"] >= 1  # LNT 2016-05-19
    table = pq.read_table(sorted((warehouse / "quality_results").glob("*.parquet"))).to_pylist()
    failed: dict[str, int] = {}
    evaluated: dict[str, int] = {}
    for row in table:
        failed[row["rule"]] = failed.get(row["rule"], 0) + row["failed"]
        evaluated[row["rule"]] = evaluated.get(row["rule"], 0) + row["evaluated"]
    # validation runs before de-duplication: the duplicates are evaluated too
    assert set(evaluated.values()) == {len(rows) - 1 + len(dups)}
    assert failed["non_positive_price"] == failed["high_below_low"] == 1
    assert failed["negative_volume"] == 1 and failed["missing_field"] == 0
    lnt = [r for r in table if r["instrument_id"] == "XNYS:LNT" and r["rule"] ==
           "ohlc_inconsistent" and r["window_start"].date() == dt.date(2016, 5, 16)]
    assert len(lnt) == 1 and lnt[0]["failed"] == 1 and lnt[0]["evaluated"] == 5


def test_streaming_windows_give_one_result_row_per_window_instrument_and_rule(data):
    events, mutated = data
    week1 = [e for e in events if dt.date(2015, 8, 17) <= e.session_date <= dt.date(2015, 8, 21)]
    week2 = [e for e in events if dt.date(2015, 8, 24) <= e.session_date <= dt.date(2015, 8, 28)]
    assert len(week1) == len(week2) == 15

    def ts(e: PriceEvent) -> float:
        return e.event_time.timestamp()

    stream = (TestStream()
              .advance_watermark_to(ts(week1[0]) - 1)
              .add_elements([TimestampedValue(e, ts(e)) for e in week1])
              .advance_watermark_to(_monday(week2[0].event_time).timestamp() + 1)
              .add_elements([TimestampedValue(e, ts(e)) for e in week2])
              .advance_watermark_to_infinity())
    opts = PipelineOptions()
    opts.view_as(StandardOptions).streaming = True
    with TestPipeline(options=opts) as p:
        out = p | stream | ValidateWithSuite(batch_size=50, run_id="stream-test",
                                             window_seconds=WEEK)
        rows = out.results | beam.Filter(lambda q: q.rule in ("extreme_range", "zero_volume"))
        assert_that(rows | beam.Map(lambda q: (q.window_start.date().isoformat(),
                                               q.instrument_id, q.rule, q.evaluated, q.failed)),
                    equal_to([(w, f"XNYS:{s}", r, 5, int(w == "2015-08-24" and s == "XL"
                                                           and r == "extreme_range"))
                              for w in ("2015-08-17", "2015-08-24")
                              for s in ("CHD", "LNT", "XL")
                              for r in ("extreme_range", "zero_volume")]), label="Rows")
        assert_that(out.events | beam.Map(lambda e: (e.symbol, e.session_date.isoformat(),
                                                     e.flags))
                    | beam.Filter(lambda t: t[2]),
                    equal_to([("XL", "2015-08-24", ("extreme_range",))]), label="Flagged")
