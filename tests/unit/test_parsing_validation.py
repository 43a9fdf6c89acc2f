"""Parsing and validation on real rows and on every kind of bad input."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from miraikakaku.instruments import load_master
from tests.conftest import JP, SP500, read_rows
from transforms.parsing import ParseError, file_spec, parse_fields, parse_line
from transforms.validation import BlockedEvent, validate_event

pytestmark = pytest.mark.unit

US_COLS = ("symbol", "date", "open", "high", "low", "close", "volume")
M = load_master()


def _parse(line: str, cols=US_COLS, source="sp500_5yr"):
    return parse_line(line, cols, default_source=source, master=M)


def _row(symbol: str, date: str, path=SP500, source=None) -> str:
    _, rows = read_rows(path, {symbol}, source)
    return ",".join(next(r for r in rows if r[1] == date))


def test_real_us_row_becomes_an_event_at_the_session_close():
    e = _parse(_row("AAPL", "2018-02-07"))
    assert (e.instrument_id, e.source, e.currency, e.session_date) == \
        ("XNAS:AAPL", "sp500_5yr", "USD", dt.date(2018, 2, 7))
    assert e.event_time == dt.datetime(2018, 2, 7, 21, tzinfo=dt.timezone.utc)
    assert e.event_id == "sp500_5yr/XNAS:AAPL/1d/20180207/0"
    assert e.close == 159.54 and e.adj_close is None and e.flags == ()


def test_real_tokyo_rows_keep_their_source_and_adjusted_close():
    header, _ = read_rows(JP, set())
    cols = tuple(file_spec(JP).columns)
    assert cols == tuple(header)
    e = parse_line(_row("7203.T", "2017-06-01", JP, "mlbot"), cols, default_source="x", master=M)
    # the file's row: 7203.T,2017-06-01,5935,6003,5933,5989,4999500,5989,mlbot
    assert (e.source, e.open, e.close, e.adj_close, e.volume, e.currency) == \
        ("mlbot", 5935.0, 5989.0, 5989.0, 4999500.0, "JPY")
    assert e.feature_price == e.adj_close
    assert e.event_time == dt.datetime(2017, 6, 1, 6, tzinfo=dt.timezone.utc)


@pytest.mark.parametrize("line,reason", [
    ("AAPL,2018-02-07,1,2", "malformed_line"),
    ('AAPL,"2018-02-07,1,2,3,4,5', "malformed_line"),
    ("AAPL,2018-02-07,,163.4,159.07,159.54,51608580", "missing_field"),
    (",2018-02-07,163.0,163.4,159.07,159.54,51608580", "missing_field"),
    ("AAPL,2018-02-07,163.0,abc,159.07,159.54,51608580", "bad_number"),
    ("AAPL,2018-02-07,163.0,inf,159.07,159.54,51608580", "bad_number"),
    ("AAPL,07/02/2018,163.0,163.4,159.07,159.54,51608580", "bad_timestamp"),
    ("AAPL,2018-02-30,163.0,163.4,159.07,159.54,51608580", "bad_timestamp"),
    ("AA PL!,2018-02-07,163.0,163.4,159.07,159.54,51608580", "bad_symbol"),
])
def test_bad_lines_raise_with_a_reason(line, reason):
    with pytest.raises(ParseError) as e:
        _parse(line)
    assert e.value.reason == reason


def test_chart0_value_error_cells_are_bad_numbers():
    # TSE outage 2020-10-01: OHLC `#VALUE!` in the chart0 file (shared/data README)
    line = _row("7203.T", "2020-10-01", JP, "chart0")
    with pytest.raises(ParseError) as e:
        parse_line(line, tuple(file_spec(JP).columns), default_source="x", master=M)
    assert e.value.reason == "bad_number"


def test_empty_open_in_the_real_file_is_a_missing_field():
    # anomaly 1: DHR 2015-07-17 has an empty open
    with pytest.raises(ParseError) as e:
        _parse(_row("DHR", "2015-07-17"))
    assert e.value.reason == "missing_field"


@pytest.mark.parametrize("change,reason", [
    (dict(close=0.0), "non_positive_price"),
    (dict(low=-1.0), "non_positive_price"),
    (dict(adj_close=-3.0), "non_positive_price"),
    (dict(high=150.0, low=160.0), "high_below_low"),
    (dict(volume=-5.0), "negative_volume"),
])
def test_validation_blocks_the_impossible(change, reason):
    e = _parse(_row("AAPL", "2018-02-07"))
    with pytest.raises(BlockedEvent) as err:
        validate_event(dataclasses.replace(e, **change))
    assert err.value.reason == reason


def test_validation_flags_real_suspicious_rows():
    # CHD 2014-05-19: open 18.77 below the low of the day (anomaly 2 in shared/data README)
    chd = validate_event(_parse(_row("CHD", "2014-05-19")))
    assert "ohlc_inconsistent" in chd.flags
    ok = validate_event(_parse(_row("AAPL", "2018-02-07")))
    assert ok.flags == ()
    zero = validate_event(dataclasses.replace(ok, volume=0.0))
    assert zero.flags == ("zero_volume",)


def test_calendar_flags_from_parsing():
    e = parse_fields({"symbol": "7203.T", "date": "2018-01-02", "open": "1", "high": "1",
                      "low": "1", "close": "1", "volume": "0"}, default_source="yfinance",
                     master=M)
    assert e.flags == ("not_a_session",)


def test_file_spec_reads_headers_and_rejects_bad_files(tmp_path):
    spec = file_spec(SP500)
    assert spec.default_source == "sp500_5yr" and spec.columns == US_COLS
    bad = tmp_path / "x.csv"
    bad.write_text("foo,bar\n1,2\n")
    with pytest.raises(ValueError, match="required columns"):
        file_spec(bad)
    with pytest.raises(FileNotFoundError):
        file_spec(tmp_path / "missing.csv")
    (tmp_path / "mlbot.csv").write_text("Date,Open,Hight,Low,Close,Volume,Adj Close,Symbol\n")
    assert file_spec(tmp_path / "mlbot.csv").columns == (
        "date", "open", "high", "low", "close", "volume", "adj_close", "symbol")
