"""``miraikakaku quality`` on real slices of the S&P 500 five-year file: Data Docs, JSON summary,
failing rows, exit codes."""

from __future__ import annotations

import csv
import json

import pytest

from miraikakaku.cli import main
from tests.conftest import SP500, read_rows, write_csv

pytestmark = pytest.mark.unit


def _run(tmp_path, *inputs, kind=None):
    out = tmp_path / "report"
    argv = ["quality", "--out", str(out), "--no-progress"]
    for p in inputs:
        argv += ["--input", str(p)]
    if kind:
        argv += ["--kind", kind]
    rc = main(argv)
    return rc, out


def test_slice_with_a_blocked_row_exits_1_and_lists_the_anomalies(sp500_slice, tmp_path):
    rc, out = _run(tmp_path, sp500_slice)
    assert rc == 1  # BHF 2017-07-26 and DHR's two empty opens are blocked

    page = (out / "index.html").read_text()
    assert page.lstrip().lower().startswith("<!doctype html") or "<html" in page[:500]
    assert "miraikakaku_price_events" in page  # the GX suite's validation page
    assert "ohlc_consistent" in page and "high_below_low" in page
    assert "BHF" in page and "missing_field" in page  # the parser's rejects section

    summary = json.loads((out / "summary.json").read_text())
    with open(sp500_slice) as f:
        records = sum(1 for _ in f) - 1
    assert summary["rows_in"] == records
    assert summary["rows_in"] == summary["rows_passing"] + summary["rows_blocked"]
    assert summary["rows_blocked"] == summary["rows_blocked_at_parse"] == 3
    assert summary["rows_clean"] + summary["rows_flagged"] == summary["rows_passing"]
    assert summary["per_rule"]["missing_field"]["failed"] == 3
    assert summary["per_rule"]["ohlc_inconsistent"]["failed"] == 2  # CHD 2014-05-19, DHR 2014-11-06
    assert summary["per_rule"]["extreme_range"]["failed"] == 1  # XL 2015-08-24
    assert summary["per_instrument"]["XNYS:DHR"]["blocked"] == 2
    assert sum(v["rows"] for v in summary["per_instrument"].values()) == summary["rows_in"]
    assert summary["exit_code"] == 1

    with open(out / "failing_rows.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    got = {(r["symbol"], r["session_date"], r["rule"], r["severity"]) for r in rows}
    assert ("BHF", "2017-07-26", "missing_field", "block") in got
    assert ("DHR", "2015-07-17", "missing_field", "block") in got
    assert ("CHD", "2014-05-19", "ohlc_inconsistent", "flag") in got
    assert ("DHR", "2014-11-06", "ohlc_inconsistent", "flag") in got
    assert ("NWL", "2017-09-14", "large_move", "flag") in got
    assert ("XL", "2015-08-24", "extreme_range", "flag") in got
    assert ("DHR", "2015-03-23", "gap", "flag") in got
    chd = next(r for r in rows if r["symbol"] == "CHD" and r["rule"] == "ohlc_inconsistent")
    assert "open=18.77" in chd["observed"] and chd["instrument_id"] == "XNYS:CHD"
    blocked = {(r["input"], r["record"]) for r in rows if r["severity"] == "block"}
    assert len(blocked) == summary["rows_blocked"]


def test_clean_slice_exits_0(tmp_path):
    header, rows = read_rows(SP500, {"AAPL", "MSFT"})
    path = write_csv(tmp_path / "clean.csv", header, rows)
    rc, out = _run(tmp_path, path)
    summary = json.loads((out / "summary.json").read_text())
    assert rc == 0, summary["per_rule"]
    assert summary["rows_in"] == len(rows) == summary["rows_passing"]
    assert summary["rows_blocked"] == 0
    assert (out / "index.html").exists()


def test_a_blocking_expectation_exits_1(tmp_path):
    """A row the parser accepts but the suite blocks (high below low, a real row mutated)."""
    header, rows = read_rows(SP500, {"AAPL"})
    rows[10][header.index("high")] = str(float(rows[10][header.index("low")]) - 1.0)
    path = write_csv(tmp_path / "mutated.csv", header, rows)
    rc, out = _run(tmp_path, path)
    assert rc == 1
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rows_blocked_by_suite"] == 1 and summary["rows_blocked_at_parse"] == 0
    assert summary["per_rule"]["high_below_low"]["failed"] == 1
    with open(out / "failing_rows.csv", newline="") as f:
        rows_out = [r for r in csv.DictReader(f) if r["severity"] == "block"]
    assert [(r["record"], r["rule"]) for r in rows_out] == [("11", "high_below_low")]


def test_usage_errors_exit_2(tmp_path, capsys):
    rc, _ = _run(tmp_path, tmp_path / "missing.csv")
    assert rc == 2
    with pytest.raises(SystemExit) as e:
        main(["quality"])
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        main(["quality", "--input", "x.csv", "--kind", "ticks"])
    assert e.value.code == 2


def test_predictions_table(sp500_events, tmp_path):
    """``--kind predictions`` on a table of predictions over real AAPL closes."""
    import math

    from miraikakaku.schema import Prediction
    from quality.validate import predictions_to_frame

    bars = [e for e in sp500_events if e.symbol == "AAPL"][:40]
    preds = [Prediction(a.instrument_id, a.source, a.session_date, a.event_time,
                        b.session_date, a.close, 0.001, a.close * math.exp(0.001),
                        "lstm_daily", "3") for a, b in zip(bars, bars[1:])]
    df = predictions_to_frame(preds)
    df.to_csv(tmp_path / "good.csv", index=False)
    rc, out = _run(tmp_path / "a", tmp_path / "good.csv", kind="predictions")
    assert rc == 0
    df.loc[5, "model_version"] = ""
    df.to_csv(tmp_path / "bad.csv", index=False)
    rc, out = _run(tmp_path / "b", tmp_path / "bad.csv", kind="predictions")
    assert rc == 1
    with open(out / "failing_rows.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["record"], r["rule"], r["severity"]) for r in rows] == [
        ("6", "missing_model_version", "block")]
