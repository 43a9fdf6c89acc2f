"""Real rows for the quality tests: a few instruments of the S&P 500 five-year file and of the
Lean minute trade bars (../shared/data), parsed once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from miraikakaku.schema import PriceEvent
from tests.conftest import SHARED, SP500, read_rows, write_csv
from transforms.parsing import file_spec, iter_file

SLICE_SYMBOLS = {"AAPL", "BHF", "CHD", "NWL", "XL", "DHR"}
"""AAPL (clean), BHF 2017-07-26 (empty open: the parser's missing_field), CHD 2014-05-19
(open outside [low, high]), NWL 2017-09-14 (bad print, large move), XL 2015-08-24 (flash-crash
low 5.40), DHR 2015-03-09..20 (a data gap)."""
MINUTE = SHARED / "normalized" / "us_minute_trades_lean.normalized.csv.gz"


@pytest.fixture(scope="session")
def sp500_slice(tmp_path_factory) -> Path:
    """The S&P 500 file's rows of ``SLICE_SYMBOLS``, as a CSV file (same header)."""
    header, rows = read_rows(SP500, SLICE_SYMBOLS)
    return write_csv(tmp_path_factory.mktemp("slice") / "sp500_slice.csv", header, rows)


@pytest.fixture(scope="session")
def sp500_events(sp500_slice) -> list[PriceEvent]:
    """Parsed events of the slice (the parser's dead letters left out), file order."""
    return [e for e in iter_file(file_spec(sp500_slice)) if isinstance(e, PriceEvent)]


@pytest.fixture(scope="session")
def minute_events(tmp_path_factory) -> list[PriceEvent]:
    """AAPL minute bars of 2014-06-05 (Lean trades, pre-market from 04:00 ET)."""
    header, rows = read_rows(MINUTE, {"AAPL"})
    rows = [r for r in rows if r[1].startswith("2014-06-05")]
    path = write_csv(tmp_path_factory.mktemp("minute") / "aapl_minute.csv", header, rows)
    return [e for e in iter_file(file_spec(path, interval="1m")) if isinstance(e, PriceEvent)]
