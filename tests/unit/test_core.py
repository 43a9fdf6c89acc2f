"""The locked seams: PriceEvent schema, event ids, dead letters, row keys, instruments and
calendars."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from miraikakaku import rowkeys
from miraikakaku.calendars import get_calendar
from miraikakaku.instruments import INSTRUMENT_ID_RE, load_master
from miraikakaku.schema import SCHEMA_VERSION, DeadLetter, PriceEvent, make_event_id

pytestmark = pytest.mark.unit

UTC = dt.timezone.utc


def _event(**kw) -> PriceEvent:
    base = dict(schema_version=SCHEMA_VERSION,
                event_id=make_event_id("sp500_5yr", "XNAS:AAPL", "1d", "20180207", 0),
                instrument_id="XNAS:AAPL", symbol="AAPL", source="sp500_5yr", sequence=0,
                interval="1d", session_date=dt.date(2018, 2, 7),
                event_time=dt.datetime(2018, 2, 7, 21, 0, tzinfo=UTC), open=163.085,
                high=163.4, low=159.0685, close=159.54, volume=51608580.0, adj_close=None,
                currency="USD", flags=())
    base.update(kw)
    return PriceEvent(**base)


def test_price_event_fields_are_the_locked_schema():
    names = [f.name for f in dataclasses.fields(PriceEvent)]
    assert names == ["schema_version", "event_id", "instrument_id", "symbol", "source",
                     "sequence", "interval", "session_date", "event_time", "open", "high",
                     "low", "close", "volume", "adj_close", "currency", "flags", "provenance"]
    assert SCHEMA_VERSION == 1
    # provenance is transport metadata: not on the wire, not in equality
    e = _event()
    tagged = dataclasses.replace(e, provenance=("f.csv", "line:7"))
    assert tagged == e and tagged.to_json() == e.to_json()


def test_price_event_json_round_trip_keeps_utc():
    e = _event(flags=("zero_volume",), adj_close=158.0)
    back = PriceEvent.from_json(e.to_json())
    assert back == e
    assert back.event_time.utcoffset() == dt.timedelta(0)


def test_price_event_json_rejects_unknown_version_and_missing_fields():
    with pytest.raises(ValueError, match="schema_version"):
        PriceEvent.from_json(_event().to_json().replace('"schema_version":1', '"schema_version":9'))
    with pytest.raises(ValueError):
        PriceEvent.from_json('{"schema_version":1,"event_id":"x"}')


def test_feature_price_prefers_adjusted_close():
    assert _event().feature_price == 159.54
    assert _event(adj_close=150.0).feature_price == 150.0


def test_event_id_carries_source_instrument_interval_start_and_sequence():
    assert make_event_id("chart0", "XTKS:7203", "1d", "20180105", 0) == \
        "chart0/XTKS:7203/1d/20180105/0"
    assert make_event_id("s", "XNYS:IBM", "tick", "20131007T133000.270", 42).endswith("/42")


def test_dead_letter_id_is_deterministic_and_payload_sensitive():
    a = DeadLetter("ParseEvents", "bad_number", "x", "A,2013-02-08,x", "f.csv")
    b = DeadLetter("ParseEvents", "bad_number", "other detail", "A,2013-02-08,x", "f.csv")
    c = DeadLetter("ParseEvents", "bad_number", "x", "A,2013-02-08,y", "f.csv")
    assert a.dead_letter_id == b.dead_letter_id != c.dead_letter_id


def test_dead_letter_id_includes_the_position_so_identical_bad_rows_stay_two():
    first = DeadLetter("ParseEvents", "bad_number", "x", "A,2013-02-08,x", "f.csv",
                       position="line:2")
    second = dataclasses.replace(first, position="line:3")
    again = dataclasses.replace(first, detail="a replay")
    assert first.dead_letter_id != second.dead_letter_id
    assert first.dead_letter_id == again.dead_letter_id


def test_row_keys_sort_by_instrument_then_time():
    k1 = rowkeys.bar_key("XNAS:AAPL", "1d", dt.date(2018, 2, 7))
    k2 = rowkeys.bar_key("XNAS:AAPL", "1d", dt.date(2018, 2, 8))
    assert k1 == "XNAS:AAPL#1d#20180207" and k1 < k2
    assert rowkeys.parse_bar_key(k1) == ("XNAS:AAPL", "1d", dt.date(2018, 2, 7))
    assert rowkeys.latest_key("XTKS:7203") == "XTKS:7203#latest"
    assert rowkeys.prediction_key("XTKS:7203", "1d", dt.date(2018, 1, 4)) == \
        "XTKS:7203#pred#1d#20180104"
    with pytest.raises(ValueError):
        rowkeys.bar_key("BAD#ID", "1d", dt.date(2018, 1, 1))


def test_instrument_master_resolves_aliases_ids_and_unknown_symbols():
    m = load_master()
    assert m.resolve("AAPL").instrument_id == "XNAS:AAPL"
    assert m.resolve("xnas:aapl").symbol == "AAPL"
    assert m.resolve("IBM").instrument_id == "XNYS:IBM"
    toyota = m.resolve("7203.T")
    assert (toyota.instrument_id, toyota.currency, toyota.calendar) == ("XTKS:7203", "JPY", "XTKS")
    unknown = m.resolve("9999.T")
    assert unknown.instrument_id == "XTKS:9999" and not unknown.known
    assert m.resolve("ZZZZ").instrument_id == "XNYS:ZZZZ"
    with pytest.raises(ValueError):
        m.resolve("bad symbol!")
    assert all(INSTRUMENT_ID_RE.match(i.instrument_id) for i in m)


def test_calendars_on_real_dates():
    nyse, tse = get_calendar("XNYS"), get_calendar("XTKS")
    assert not nyse.is_session(dt.date(2018, 1, 1))
    assert not tse.is_session(dt.date(2018, 1, 2))
    # half day after Thanksgiving: 13:00 New York = 18:00 UTC
    assert nyse.session_close(dt.date(2013, 11, 29)) == \
        (dt.datetime(2013, 11, 29, 18, tzinfo=UTC), ())
    # a regular winter day closes 16:00 New York = 21:00 UTC; Tokyo 15:00 JST = 06:00 UTC
    assert nyse.session_close(dt.date(2018, 2, 7))[0] == dt.datetime(2018, 2, 7, 21, tzinfo=UTC)
    assert tse.session_close(dt.date(2018, 1, 4))[0] == dt.datetime(2018, 1, 4, 6, tzinfo=UTC)
    assert tse.session_close(dt.date(2018, 1, 2))[1] == ("not_a_session",)
    assert tse.session_close(dt.date(1990, 1, 4))[1] == ("calendar_estimated",)
    assert tse.ordinal(dt.date(2018, 1, 4)) - tse.ordinal(dt.date(2017, 12, 29)) == 1
    assert nyse.next_session(dt.date(2018, 2, 9)) == dt.date(2018, 2, 12)
    # before the XTKS calendar's first session (1997): the next weekday, not 1997's first session
    assert tse.next_session(dt.date(1990, 1, 5)) == dt.date(1990, 1, 8)
    assert tse.next_session(dt.date(1996, 12, 27)) == dt.date(1996, 12, 30)
    assert tse.next_session(dt.date(1996, 12, 31)) == tse.first_session


def test_intraday_and_trade_keys():
    t = dt.datetime(2013, 10, 7, 9, 30, 0, 270000, tzinfo=dt.timezone(dt.timedelta(hours=-4)))
    assert rowkeys.trade_key("XNYS:IBM", t, 42) == "XNYS:IBM#tick#20131007T133000.270#000042"
    assert rowkeys.intraday_key("XNYS:IBM", "1m", t.replace(microsecond=0)) == \
        "XNYS:IBM#1m#20131007T133000"
    e = _event(interval="tick", sequence=7, event_time=t.astimezone(UTC))
    assert rowkeys.event_key(e) == "XNYS:IBM#tick#20131007T133000.270#000007".replace(
        "XNYS:IBM", "XNAS:AAPL")
    bar = _event(interval="1m", event_time=dt.datetime(2013, 10, 7, 13, 31, tzinfo=UTC))
    assert rowkeys.event_key(bar) == "XNAS:AAPL#1m#20131007T133000"
    assert rowkeys.event_key(_event()) == "XNAS:AAPL#1d#20180207"
    with pytest.raises(ValueError):
        rowkeys.trade_key("XNYS:IBM", t, -1)
