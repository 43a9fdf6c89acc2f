"""The field grammar (``miraikakaku.grammar``): what each field accepts, on real values and on
the spellings Python's own parsers take but the platform must not."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import subprocess
import sys

import pytest

from miraikakaku import grammar
from miraikakaku.grammar import EventLimits, FieldError
from miraikakaku.instruments import load_master
from miraikakaku.schema import PriceEvent, event_id_of
from transforms.messages import parse_message
from transforms.parsing import parse_fields

pytestmark = pytest.mark.unit

UTC = dt.timezone.utc
M = load_master()
# AAPL 2018-02-07 in the S&P 500 five-year file
AAPL = {"symbol": "AAPL", "date": "2018-02-07", "open": "163.085", "high": "163.4",
        "low": "159.0685", "close": "159.54", "volume": "51608580"}


def _reason(fn, *args, **kw) -> str:
    with pytest.raises(FieldError) as e:
        fn(*args, **kw)
    return e.value.reason


@pytest.mark.parametrize("text,value", [
    ("159.54", 159.54), ("+159.54", 159.54), ("-3", -3.0), (".5", 0.5), ("159.", 159.0),
    ("1.5954e2", 159.54), (" 159.54\t", 159.54), ("1E-3", 0.001),
])
def test_ascii_decimal_numbers_are_accepted(text, value):
    assert grammar.parse_number(text, "close") == value


@pytest.mark.parametrize("text", [
    "1_83.91", "١٦٣", "１６３", "163\u2009.0", "inf", "-Infinity", "nan", "NaN", "0x1p7", "1e400",
    "$163", "163.0.1", "163,0", "", " ", "1e", "e5", "--1", "1.5e2.1", "\u00a0163", "163\u00a0",
    "1" * 1000 + "x",
])
def test_numbers_python_takes_but_the_grammar_refuses(text):
    assert _reason(grammar.parse_number, text, "close") == "bad_number"


def test_json_numbers_must_be_numbers():
    assert _reason(grammar.parse_number, True, "close") == "bad_number"
    assert _reason(grammar.parse_number, [1], "close") == "bad_number"
    assert _reason(grammar.parse_number, float("nan"), "close") == "bad_number"
    assert _reason(grammar.parse_number, 10 ** 400, "close") == "out_of_range"


@pytest.mark.parametrize("text,reason", [
    ("1e300", "out_of_range"), ("1e-30", "out_of_range"), ("-1e300", "out_of_range"),
    ("1e13", "out_of_range"),
])
def test_price_magnitudes_outside_the_bounds(text, reason):
    assert _reason(grammar.parse_price, text, "open") == reason


def test_zero_and_negative_prices_are_left_to_validation():
    assert grammar.parse_price("0", "open") == 0.0
    assert grammar.parse_price("-159.54", "open") == -159.54


def test_volume_bounds():
    assert grammar.parse_volume("51608580") == 51608580.0
    assert grammar.parse_volume("-5") == -5.0  # validation's negative_volume
    assert _reason(grammar.parse_volume, "1e20") == "out_of_range"


@pytest.mark.parametrize("raw,value", [("0", 0), ("42", 42), (str(2**63 - 1), 2**63 - 1),
                                       (7, 7), (str(2**53 + 1), 2**53 + 1)])
def test_sequences_are_64_bit_integers_never_floats(raw, value):
    got = grammar.parse_sequence(raw)
    assert got == value and isinstance(got, int)


@pytest.mark.parametrize("raw", ["-1", -1, str(2**63), 2**63, "1.0", "1e3", "١", "", "0x10",
                                 True, 1.0, "9" * 30])
def test_bad_sequences(raw):
    assert _reason(grammar.parse_sequence, raw) == "bad_sequence"


@pytest.mark.parametrize("text,day", [("2018-02-07", dt.date(2018, 2, 7)),
                                      ("2018/02/07", dt.date(2018, 2, 7)),
                                      (" 2018-02-07 ", dt.date(2018, 2, 7))])
def test_dates(text, day):
    assert grammar.parse_date(text) == day


@pytest.mark.parametrize("text,reason", [
    ("2018-02-07junk", "bad_timestamp"), ("2018-02-07T00:00", "bad_timestamp"),
    ("20180207", "bad_timestamp"), ("07/02/2018", "bad_timestamp"),
    ("2018-02-30", "bad_timestamp"), ("2018-13-01", "bad_timestamp"),
    ("2018-2-7", "bad_timestamp"), ("2018-02/07", "bad_timestamp"),
    ("٢٠١٨-٠٢-٠٧", "bad_timestamp"), ("0001-01-01", "before_floor"),
    ("1899-12-31", "before_floor"), ("", "bad_timestamp"),
])
def test_bad_dates(text, reason):
    assert _reason(grammar.parse_date, text) == reason


def test_timestamps_need_an_offset_and_the_whole_field():
    t = grammar.parse_timestamp("2013-10-07T09:30:00.123-04:00")
    assert t == dt.datetime(2013, 10, 7, 13, 30, 0, 123000, tzinfo=UTC)
    assert grammar.parse_timestamp("2013-10-07T13:30:00.123456789Z").microsecond == 123456
    for bad in ("2013-10-07T09:30:00", "2013-10-07 09:30:00-04:00", "2013-10-07T09:30:00-04:00x",
                "2013-10-07T25:30:00Z", "9999-12-31T23:59:59-23:59x", "now"):
        assert _reason(grammar.parse_timestamp, bad) == "bad_timestamp"


@pytest.mark.parametrize("symbol", ["AAPL", "7203.T", "^GSPC", "BRK-B", "BRK/B", "ES=F", "aapl",
                                    "XNAS:AAPL"])
def test_symbols(symbol):
    assert grammar.check_symbol(symbol) == symbol


@pytest.mark.parametrize("symbol", ["ＡＡＰＬ", "ﬀ", "İBM", "---", "...", "^", "A" * 21, "AA PL",
                                    "\u200bAAPL", "AAPL\u00a0", "AAPL#1d", "DROP TABLE;", ""])
def test_bad_symbols_are_refused_before_any_case_mapping(symbol):
    assert _reason(grammar.check_symbol, symbol) == "bad_symbol"


def test_sources_have_one_canonical_spelling():
    assert grammar.normalize_source("SP500_5YR") == grammar.normalize_source("sp500_5yr")
    assert grammar.normalize_source("mplfinance:yahoofinance-AAPL.csv") == \
        "mplfinance:yahoofinance-aapl.csv"
    for bad in ("x" * 65, "sp500 5yr", "sourcé", "#src", "_src", "", "ｓｏｕｒｃｅ"):
        assert _reason(grammar.normalize_source, bad) == "bad_source"


def test_future_event_times_beyond_the_tolerance():
    now = dt.datetime(2018, 2, 7, 15, tzinfo=UTC)
    limits = EventLimits()
    grammar.check_event_time(dt.datetime(2018, 2, 7, 21, tzinfo=UTC), "1d", limits, now)
    assert _reason(grammar.check_event_time, dt.datetime(2018, 2, 8, 21, tzinfo=UTC), "1d",
                   limits, now) == "future_timestamp"
    grammar.check_event_time(now + dt.timedelta(minutes=4), "tick", limits, now)
    assert _reason(grammar.check_event_time, now + dt.timedelta(minutes=6), "tick", limits,
                   now) == "future_timestamp"


def test_the_file_parser_uses_the_grammar():
    e = parse_fields(AAPL, default_source="SP500_5YR", master=M)
    assert (e.source, e.close, e.event_id) == ("sp500_5yr", 159.54,
                                               "sp500_5yr/XNAS:AAPL/1d/20180207/0")
    for field, value, reason in [
        ("date", "2018-02-07junk", "bad_timestamp"), ("close", "1_59.54", "bad_number"),
        ("date", "2099-01-05", "future_timestamp"), ("date", "9999-12-31", "future_timestamp"),
        ("date", "0001-01-01", "before_floor"), ("symbol", "ﬀ", "bad_symbol"),
        ("open", "1e300", "out_of_range"), ("source", "x" * 100_000, "bad_source"),
        ("sequence", str(2**64), "bad_sequence"), ("sequence", "1", "bad_sequence"),
        # unknown symbols that would give an id the stream refuses (INSTRUMENT_ID_RE)
        ("symbol", "^ZZZ", "bad_symbol"), ("symbol", "-AAPL", "bad_symbol"),
    ]:
        assert _reason(parse_fields, {**AAPL, field: value}, default_source="sp500_5yr",
                       master=M) == reason, (field, value)


def test_sequences_above_2_53_keep_every_digit():
    tick = {"symbol": "IBM", "date": "2013-10-07T09:30:00.270-04:00", "price": "185.5",
            "size": "100", "sequence": str(2**53 + 1)}
    e = parse_fields(tick, default_source="lean", master=M, interval="tick")
    assert e.sequence == 2**53 + 1 and e.event_id.endswith(f"/{2**53 + 1}")


def _wire(**changes) -> bytes:
    e = parse_fields(AAPL, default_source="sp500_5yr", master=M)
    d = json.loads(e.to_json())
    d.update(changes)
    return json.dumps(d).encode()


@pytest.mark.parametrize("changes,reason", [
    ({"close": float("nan")}, "bad_number"), ({"close": float("inf")}, "bad_number"),
    ({"close": "159.54"}, "bad_number"), ({"close": True}, "bad_number"),
    ({"open": 1e300}, "out_of_range"), ({"sequence": -1}, "bad_sequence"),
    ({"sequence": 2**63}, "bad_sequence"), ({"source": "a b"}, "bad_source"),
    ({"symbol": "ﬀ"}, "bad_symbol"), ({"session_date": "2018-02-07junk"}, "bad_timestamp"),
    ({"event_time": "2099-01-05T21:00:00+00:00", "session_date": "2099-01-05"},
     "future_timestamp"),
    ({"instrument_id": "XNAS:AAPL#1d"}, "bad_instrument"), ({"interval": "2d"}, "bad_interval"),
    ({"currency": "usd"}, "bad_currency"), ({"flags": "x"}, "bad_json"),
    ({"volume": "many"}, "bad_number"), ({"schema_version": 2}, "bad_json"),
    ({"sequence": 1}, "bad_sequence"),  # a bar is identified by its start: sequence 0
])
def test_the_stream_parser_applies_the_same_grammar(changes, reason):
    with pytest.raises(ValueError) as e:
        parse_message(_wire(**changes), {})
    assert e.value.args[0] == reason


@pytest.mark.parametrize("changes", [
    {"event_id": "x"}, {"event_id": "sp500_5yr/XNAS:AAPL/1d/20180208/0"},
    {"interval": "1h"}, {"session_date": "2018-02-06"},
    {"event_id": "SP500_5YR/XNAS:AAPL/1d/20180207/0"},
    {"instrument_id": "XNAS:MSFT"},
])
def test_a_message_must_carry_its_own_event_id(changes):
    """Ids key deduplication and the store: an id its fields do not give would split one event
    into two rows, or merge two events into one."""
    with pytest.raises(ValueError) as e:
        parse_message(_wire(**changes), {})
    assert e.value.args[0] == "bad_event_id"


def test_a_key_given_twice_is_bad_json():
    data = _wire().replace(b'"close":', b'"close":1.0,"close":', 1)
    assert data.count(b'"close":') == 2
    with pytest.raises(ValueError) as e:
        parse_message(data, {})
    assert e.value.args[0] == "bad_json" and "twice" in e.value.args[1]


def test_event_ids_spell_times_in_utc_whatever_the_offset():
    tick = {"symbol": "IBM", "price": "185.5", "size": "100", "sequence": "7"}
    a = parse_fields({**tick, "date": "2013-10-07T09:30:00.270-04:00"}, default_source="lean",
                     master=M, interval="tick")
    b = parse_fields({**tick, "date": "2013-10-07T13:30:00.270Z"}, default_source="lean",
                     master=M, interval="tick")
    assert a.event_id == b.event_id == "lean/XNYS:IBM/tick/20131007T133000.270/7"
    bar = {"symbol": "IBM", "open": "185", "high": "186", "low": "184", "close": "185.5",
           "volume": "100"}
    m1 = parse_fields({**bar, "date": "2013-10-07T09:30:00-04:00"}, default_source="lean",
                      master=M, interval="1m")
    m2 = parse_fields({**bar, "date": "2013-10-07T13:30:00+00:00"}, default_source="lean",
                      master=M, interval="1m")
    assert m1.event_id == m2.event_id == "lean/XNYS:IBM/1m/20131007T133000/0"
    assert event_id_of(m1) == m1.event_id and event_id_of(a) == a.event_id


def test_the_stream_parser_canonicalizes_like_the_file_parser():
    e = parse_message(_wire(source="SP500_5YR", volume=51608580), {})
    assert e.source == "sp500_5yr" and isinstance(e.volume, float)


@pytest.mark.parametrize("attributes,reason", [
    ({"event_time": "not a time"}, "bad_attribute"),
    ({"event_time": "2018-02-07T23:00:00.000Z"}, "attribute_mismatch"),
    ({"instrument_id": "XNYS:IBM"}, "attribute_mismatch"),
    ({"interval": "tick"}, "attribute_mismatch"),
    ({"source": "chart0"}, "attribute_mismatch"),
    ({"schema_version": "9"}, "attribute_mismatch"),
])
def test_every_attribute_is_checked_against_the_payload(attributes, reason):
    with pytest.raises(ValueError) as e:
        parse_message(_wire(), attributes)
    assert e.value.args[0] == reason


def test_agreeing_attributes_pass():
    e = parse_message(_wire(), {"event_time": "2018-02-07T21:00:00.000Z", "source": "SP500_5yr",
                                "schema_version": "1", "symbol": "AAPL"})
    assert isinstance(e, PriceEvent) and dataclasses.asdict(e)["close"] == 159.54


_PROBE = """
import sys
{pre}
from miraikakaku import grammar
bad = []
for text in ("2018-02-07T00:00", "20180207", "2018-W06-3", "2018-038", "2018-02-07 ",
             "2018-02-07junk"):
    try:
        grammar.parse_date(text)
        if text.strip() != "2018-02-07":
            bad.append(text)
    except grammar.FieldError:
        pass
print(repr(bad))
"""


@pytest.mark.parametrize("pre", ["", "import great_expectations  # noqa: F401 (patches dates)"])
def test_dates_parse_the_same_with_and_without_great_expectations_imported(pre):
    out = subprocess.run([sys.executable, "-c", _PROBE.format(pre=pre)], capture_output=True,
                         text=True, check=True, timeout=300)
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stderr[-2000:]
