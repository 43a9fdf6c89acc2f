"""``miraikakaku report`` on an analytics store of real prices (analytics/reports.py).

The store is what the pipeline's sink writes (``analytics.sink.ParquetTableWriter``) for the
real daily bars of AAPL, MSFT, IBM (S&P 500 file) and 7203.T, 6758.T, 1321.T (Tokyo file, every
source), with their real dead letters. Checked: every report runs and writes csv, json, html and
png (a real PNG: signature, size, dimensions); the CSV numbers equal the warehouse views (the
performance report's rebased returns against pandas over ``daily_performance``, volatility and
trend rows against their views); parameters are validated (unknown symbols, injection attempts,
bad dates → exit 2, nothing run); a DuckDB warehouse file gives the same CSV as the Parquet
store; the installed console script works.

Run: ``.venv/bin/python -m pytest -q tests/unit/test_report_cli.py``.
"""

from __future__ import annotations

import io
import json
import math
import struct
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from analytics import reports as rp
from analytics.sink import ParquetTableWriter, ParquetWarehouse
from analytics.warehouse import Warehouse
from miraikakaku.cli import main
from miraikakaku.instruments import Instrument
from tests.conftest import JP, SP500, read_rows, write_csv
from transforms.parsing import file_spec, iter_file

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def build_store(root: Path, tmp: Path) -> list[object]:
    """Write the real records of the test's instruments to an analytics store at ``root``."""
    header, us = read_rows(SP500, {"AAPL", "MSFT", "IBM"})
    jh, jp = read_rows(JP, {"7203.T", "6758.T", "1321.T"})
    records: list[object] = []
    records += iter_file(file_spec(write_csv(tmp / "us_daily_sp500_5yr_2013_2018.csv",
                                             header, us)))
    records += iter_file(file_spec(write_csv(tmp / "jp_daily.csv", jh,
                                             [r for r in jp if r[1] >= "2015-01-01"])))
    ParquetTableWriter(root, flush_rows=5_000).add_all(records)
    return records


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk; asserts the signature."""
    assert data[:8] == PNG_SIGNATURE
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("reports")
    root = tmp / "warehouse"
    records = build_store(root, tmp)
    assert not any(isinstance(r, Instrument) for r in records)
    return root


@pytest.fixture(scope="module")
def wh(store):
    with ParquetWarehouse(store) as pw:
        yield pw.warehouse()


def report(store: Path, *args: str) -> int:
    return main(["report", *args, "--analytics-dir", str(store)])


def test_every_report_writes_every_format(store, tmp_path):
    args = {"performance": ["--symbols", "AAPL,MSFT,7203.T", "--start", "2016-01-04"],
            "trend": ["--start", "2017-01-01", "--end", "2017-12-29"],
            "volatility": ["--symbols", "AAPL,IBM"],
            "correlation": ["--symbols", "AAPL,MSFT,IBM,7203.T,6758.T"],
            "beta": ["--symbols", "7203.T,6758.T", "--start", "2016-01-01"],
            "model_performance": [],
            "data_quality": []}
    assert set(args) == set(rp.REPORTS)
    for name, extra in args.items():
        for fmt in ("json", "csv", "html", "png"):  # json first: csv is checked against it
            out = tmp_path / f"{name}.{fmt}"
            assert report(store, name, *extra, "--format", fmt, "--output", str(out)) == 0
            data = out.read_bytes()
            assert len(data) > 0, (name, fmt)
            if fmt == "png":
                w, h = png_size(data)
                assert w >= 600 and h >= 400
            elif fmt == "json":
                doc = json.loads(data)
                assert doc["report"] == name and doc["count"] == len(doc["rows"])
                if name != "model_performance":  # no tracked predictions in this store
                    assert doc["count"] > 0, name
            elif fmt == "html":
                text = data.decode()
                assert "data:image/png;base64," in text and "<table" in text
            else:
                df = pd.read_csv(io.BytesIO(data))
                assert list(df.columns) == json.loads(
                    (tmp_path / f"{name}.json").read_bytes())["columns"]


def test_performance_csv_equals_the_view_rebased(store, wh, capsys):
    assert report(store, "performance", "--symbols", "AAPL,7203.T", "--start", "2016-01-04",
                  "--end", "2017-12-29", "--format", "csv") == 0
    got = pd.read_csv(io.StringIO(capsys.readouterr().out), float_precision="round_trip")
    view = wh.view("daily_performance", instrument_id=["XNAS:AAPL", "XTKS:7203"],
                   order_by=["instrument_id", "session_date"])
    view = view[(view.session_date >= "2016-01-04") & (view.session_date <= "2017-12-29")]
    assert len(got) == len(view) > 800
    for iid, g in view.groupby("instrument_id"):
        mine = got[got.instrument_id == iid].reset_index(drop=True)
        g = g.reset_index(drop=True)
        cum = g.price / g.price.iloc[0] - 1
        dd = g.price / g.price.cummax() - 1
        assert (mine.session_date == g.session_date.dt.strftime("%Y-%m-%d")).all()
        assert mine.price.tolist() == g.price.tolist()
        pd.testing.assert_series_equal(mine.cumulative_return, cum, check_names=False,
                                       rtol=1e-12)
        pd.testing.assert_series_equal(mine.drawdown, dd, check_names=False, rtol=1e-12)
        pd.testing.assert_series_equal(mine.max_drawdown, dd.cummin(), check_names=False,
                                       rtol=1e-12)
        pd.testing.assert_series_equal(mine.daily_return, g.daily_return, check_names=False,
                                       rtol=1e-12)


def test_volatility_and_trend_csv_equal_their_views(store, wh, capsys):
    assert report(store, "volatility", "--symbols", "IBM,6758.T", "--start", "2017-01-01",
                  "--format", "csv") == 0
    got = pd.read_csv(io.StringIO(capsys.readouterr().out), float_precision="round_trip")
    view = wh.query("SELECT * FROM miraikakaku.rolling_volatility WHERE instrument_id IN "
                    "UNNEST(@ids) AND session_date >= @start ORDER BY instrument_id, "
                    "session_date", {"ids": ["XNYS:IBM", "XTKS:6758"],
                                     "start": pd.Timestamp("2017-01-01").date()})
    assert len(got) == len(view) > 300
    for col in ("log_return", "volatility_20", "volatility_60"):
        assert got[col].tolist() == pytest.approx(view[col].tolist(), rel=1e-15, nan_ok=True)
    assert report(store, "trend", "--start", "2017-01-01", "--format", "csv") == 0
    trend = pd.read_csv(io.StringIO(capsys.readouterr().out), float_precision="round_trip")
    view = wh.query("SELECT * FROM miraikakaku.market_trend_by_exchange "
                    "WHERE session_date >= DATE '2017-01-01' ORDER BY mic, session_date")
    assert set(trend.mic) == {"XNAS", "XNYS", "XTKS"}
    assert trend.net_advancers.tolist() == view.net_advancers.tolist()
    assert trend.share_above_ma_50.tolist() == pytest.approx(
        view.share_above_ma_50.tolist(), nan_ok=True)


def test_correlation_json_is_symmetric_with_unit_diagonal(store, capsys):
    assert report(store, "correlation", "--symbols", "AAPL,MSFT,7203.T", "--start",
                  "2016-01-01", "--format", "json") == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["parameters"]["symbols"] == ["XNAS:AAPL", "XNAS:MSFT", "XTKS:7203"]
    corr = {(r["a"], r["b"]): r["corr"] for r in doc["rows"]}
    assert len(corr) == 9
    for (a, b), v in corr.items():
        assert v == pytest.approx(corr[(b, a)])
        if a == b:
            assert v == pytest.approx(1.0)
        else:
            assert -1 < v < 1 and not math.isnan(v)


@pytest.mark.parametrize("args", [
    ["performance", "--symbols", "AAPL') OR 1=1 --"],
    ["performance", "--symbols", "AAPL,ZZZZQ"],
    ["performance"],                                           # symbols required
    ["correlation", "--symbols", "AAPL"],                      # two at least
    ["performance", "--symbols", "AAPL", "--start", "2017-13-01"],
    ["performance", "--symbols", "AAPL", "--start", "2018-01-02", "--end", "2017-01-02"],
    ["performance", "--symbols", "AAPL", "--start", "2017-01-01' OR '1'='1"],
    ["beta", "--symbols", "7203.T", "--benchmark", "1321.T'; DROP TABLE bars; --"],
    ["trend", "--symbols", "AAPL"],                            # trend takes no symbols
    ["no_such_report"],
])
def test_bad_parameters_exit_2_before_any_query(store, args, capsys):
    assert report(store, *args) == 2
    assert "report" in capsys.readouterr().err


def test_a_duckdb_warehouse_file_gives_the_same_csv(store, tmp_path, capsys, wh):
    path = tmp_path / "warehouse.duckdb"
    with Warehouse(path) as w:
        w.create_tables()
        w.load_instruments()
        for table in ("bars", "dead_letters"):
            w.insert_frame(table, wh.query(f"SELECT * FROM miraikakaku.{table}"))
        w.create_views()
    args = ["volatility", "--symbols", "AAPL,7203.T", "--start", "2017-06-01", "--format", "csv"]
    assert report(store, *args) == 0
    parquet = capsys.readouterr().out
    assert main(["report", *args, "--warehouse", str(path)]) == 0
    assert capsys.readouterr().out == parquet


def test_the_console_script_writes_a_png(store, tmp_path):
    out = tmp_path / "corr.png"
    proc = subprocess.run(
        [str(REPO / ".venv" / "bin" / "miraikakaku"), "report", "correlation", "--symbols",
         "AAPL,MSFT,IBM", "--analytics-dir", str(store), "--output", str(out)],
        cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert png_size(out.read_bytes())[0] > 0 and out.stat().st_size > 10_000
