"""The dated instrument master on the real tickers of ../shared/data: reuse, renames, GOOG/GOOGL,
vendor symbology, Tokyo codes, indices, and every symbol of every data file the parser reads.

Expected values come from the data files and the Lean map files, read here with pandas or the
csv module independently of ``miraikakaku.instruments``. Run:
``.venv/bin/python -m pytest tests/unit/test_instrument_master.py -q``.
"""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import re
from collections import defaultdict

import pandas as pd
import pytest

from miraikakaku.instruments import (
    INSTRUMENT_ID_RE,
    Alias,
    Instrument,
    InstrumentMaster,
    load_master,
)
from miraikakaku.reference import build
from miraikakaku.settings import Settings
from transforms.ordering import _OrderedGroupsFn
from transforms.parsing import file_spec, iter_file, parse_fields

pytestmark = pytest.mark.unit

SHARED = Settings().shared_data_dir
NORMALIZED = SHARED / "normalized"
LEAN_DAILY = NORMALIZED / "us_daily_lean.normalized.csv.gz"
SP500 = NORMALIZED / "us_daily_sp500_5yr_2013_2018.normalized.csv.gz"
RAW_SP500 = SHARED / "us_daily" / "sp500_5yr_2013_2018" / "all_stocks_5yr.shared.csv.gz"
MAP_FILES = SHARED / "us_daily" / "lean_algoseek" / "map_files"
D = dt.date.fromisoformat
M = load_master()


@pytest.fixture(scope="module")
def lean() -> pd.DataFrame:
    return pd.read_csv(LEAN_DAILY, dtype={"date": str})


def _events(frame: pd.DataFrame, symbol: str, source: str = "lean"):
    cols = ("symbol", "date", "open", "high", "low", "close", "volume")
    rows = frame[frame["symbol"] == symbol]
    return [parse_fields(dict(zip(cols, map(str, r), strict=True)), default_source=source,
                         master=M) for r in rows[list(cols)].itertuples(index=False)]


# -- reuse by date ---------------------------------------------------------------------------

@pytest.mark.parametrize(("symbol", "day", "expected"), [
    ("FB", "2000-01-03", "XNYS:FB-1999"),   # Lean map file fb.1: 1999-09-29..2003-03-28
    ("FB", "2003-03-28", "XNYS:FB-1999"),
    ("FB", "2012-05-18", "XNAS:FB"),        # Facebook's first day (map file fb)
    ("FB", "2015-01-02", "XNAS:FB"),
    ("fb", "2005-06-01", "XNYS:FB-1999"),   # in the gap: the nearer range (ended 2003)
    ("AAA", "2003-01-02", "XNYS:AAA-2002"),  # aaa.1: 2002-05-22..2007-05-18
    ("AAA", "2021-01-04", "ARCX:AAA"),      # aaa: from 2020-09-09 on NYSE Arca (P)
    ("TWX", "2000-06-01", "XNYS:TWX-1998"),  # twx.1: the old Time Warner to 2001-01-11
    ("TWX", "2014-06-05", "XNYS:TWX"),      # twx: AOL renamed TWX 2003-10-16
    ("VXX", "2015-01-02", "ARCX:VXX-2009"),  # vxx.1: the first ETN, to 2019-01-29
    ("VXX", "2020-01-02", "BATS:VXX"),      # vxx: VXXB renamed VXX 2019-05-02
    ("WM", "2000-01-03", "XNYS:WM-1998"),   # Lean wm.zip 1998-12-09..2008-09-26 (see below)
    ("WM", "2010-01-04", "XNYS:WM"),
])
def test_a_reused_ticker_resolves_to_the_company_of_the_date(symbol, day, expected):
    inst = M.resolve(symbol, D(day))
    assert inst.instrument_id == expected and inst.known
    assert M.needs_date(symbol)


def test_without_a_date_a_reused_ticker_is_todays_listing():
    assert M.resolve("FB").instrument_id == "XNAS:FB"
    assert M.resolve("AAA").instrument_id == "ARCX:AAA"
    assert M.lookup("WM").instrument_id == "XNYS:WM"
    assert not M.needs_date("AAPL") and not M.needs_date("7203.T")


def test_earlier_holder_ids_fit_the_id_pattern_and_the_row_keys():
    from miraikakaku.rowkeys import bar_key

    fb99 = M.get("xnys:fb-1999")
    assert fb99 is not None and INSTRUMENT_ID_RE.match(fb99.instrument_id)
    assert (fb99.symbol, fb99.mic, fb99.currency, fb99.calendar) == ("FB", "XNYS", "USD", "XNYS")
    assert (fb99.listing_date, fb99.delisting_date) == (D("1999-09-29"), D("2003-03-28"))
    assert M.get("XNAS:FB").listing_date == D("2012-05-18") and \
        M.get("XNAS:FB").delisting_date is None
    # the '#' separator keeps one instrument's key range from covering the other's
    assert not bar_key("XNYS:FB-1999", "1d", D("2000-01-03")).startswith("XNYS:FB#")


def test_lean_fb_rows_split_into_the_two_companies_by_date(lean):
    fb = lean[lean["symbol"] == "FB"]
    events = _events(lean, "FB")
    by_id = defaultdict(list)
    for e in events:
        by_id[e.instrument_id].append(e.session_date.isoformat())
    early = sorted(fb.loc[fb["date"] <= "2003-03-28", "date"])
    late = sorted(fb.loc[fb["date"] >= "2012-05-18", "date"])
    assert len(early) + len(late) == len(fb) == len(events)
    assert sorted(by_id["XNYS:FB-1999"]) == early and early[0] == "1999-09-29"
    assert sorted(by_id["XNAS:FB"]) == late and late[0] == "2012-05-18"
    assert set(by_id) == {"XNYS:FB-1999", "XNAS:FB"}
    assert {e.currency for e in events} == {"USD"}
    assert not any("unknown_instrument" in e.flags for e in events)


def test_lean_aaa_rows_split_into_the_two_securities(lean):
    aaa = lean[lean["symbol"] == "AAA"]
    ids = [e.instrument_id for e in _events(lean, "AAA")]
    assert ids.count("XNYS:AAA-2002") == (aaa["date"] <= "2007-05-18").sum() > 0
    assert ids.count("ARCX:AAA") == (aaa["date"] >= "2020-09-09").sum() > 0
    assert len(ids) == len(aaa)


def test_the_lean_wm_file_holds_another_company_before_waste_management(lean):
    # WM rows from 1998-12-09 to 2008-09-26 are not Waste Management: WMI (its ticker then)
    # traded at other prices on the same days, and the series ends at 0.16 on 2008-09-26, the
    # day after Washington Mutual's bank was seized.
    wm, wmi = (lean[lean["symbol"] == s].set_index("date")["close"] for s in ("WM", "WMI"))
    assert (wm["1998-12-09"], wmi["1998-12-09"]) == (35.63, 45.81)
    assert wm["2008-09-26"] == 0.16
    assert wm[(wm.index > "2008-09-26") & (wm.index < "2009-08-05")].empty
    ids = defaultdict(int)
    for e in _events(lean, "WM"):
        ids[e.instrument_id] += 1
    assert ids == {"XNYS:WM-1998": (wm.index <= "2008-09-26").sum(),
                   "XNYS:WM": (wm.index >= "2009-08-05").sum()}
    assert M.get("XNYS:WM-1998").delisting_date == D("2008-09-26")


# -- renames -----------------------------------------------------------------------------------

def test_renames_map_every_old_ticker_to_one_instrument(lean):
    history = M.history("XNYS:WM")
    assert [(a.symbol, a.valid_from, a.valid_to) for a in history] == [
        ("UW", D("1998-01-02"), D("1998-07-16")),
        ("WMI", D("1998-07-17"), D("2009-08-04")),
        ("WM", D("2009-08-05"), None)]
    assert {a.source for a in history} == {"lean_map:wm"}
    assert M.resolve("WMI", D("2005-01-03")).instrument_id == "XNYS:WM"
    assert M.resolve("UW").instrument_id == "XNYS:WM"
    # the Lean segments (uw.zip, wmi.zip and wm.zip from 2009) are one continuous series
    ids = {e.instrument_id for s in ("UW", "WMI") for e in _events(lean, s)}
    assert ids == {"XNYS:WM"}
    uw_last = lean[(lean["symbol"] == "UW")]["date"].max()
    wmi_first = lean[(lean["symbol"] == "WMI")]["date"].min()
    assert (uw_last, wmi_first) == ("1998-07-16", "1998-07-17")


@pytest.mark.parametrize(("symbol", "day", "expected"), [
    ("AOL", "2000-01-03", "XNYS:TWX"),
    ("NWSA", "2010-01-04", "XNAS:FOXA"),     # News Corp's class A became 21st Century Fox
    ("NWSA", "2014-01-02", "XNAS:NWSA"),     # the new News Corp
    ("TFCFA", "2019-03-19", "XNAS:FOXA"),
    ("QQQQ", "2008-01-02", "XNAS:QQQ"),
    ("SPWRA", "2009-01-02", "XNAS:SPWR"),
    ("TAPA", "2011-01-03", "XNYS:TAP.A"),
    ("VXXB", "2018-06-01", "BATS:VXX"),
])
def test_other_renames_of_the_map_files(symbol, day, expected):
    assert M.resolve(symbol, D(day)).instrument_id == expected


def test_alias_ranges_reproduce_the_map_files():
    # map file rows: a ticker is valid from the day after the previous row through its row
    for path in sorted(MAP_FILES.glob("*.csv")):
        rows = [r for r in csv.reader(path.read_text().splitlines()) if r]
        for prev, row in zip(rows, rows[1:]):
            day = D(f"{row[0][:4]}-{row[0][4:6]}-{row[0][6:]}")
            if row[0] == "20501231":
                day = D(f"{prev[0][:4]}-{prev[0][4:6]}-{prev[0][6:]}") + dt.timedelta(days=1)
            inst = M.resolve(row[1], day)
            assert row[1].upper() in {a.symbol for a in inst.aliases}, (path.name, row)
            assert any(a.symbol == row[1].upper() and a.covers(day) for a in inst.aliases)


# -- GOOG / GOOGL --------------------------------------------------------------------------------

def test_goog_before_the_2014_share_split_is_todays_googl(lean):
    assert M.resolve("GOOG", D("2010-01-04")).instrument_id == "XNAS:GOOGL"
    assert M.resolve("GOOG", D("2014-04-02")).instrument_id == "XNAS:GOOGL"
    assert M.resolve("GOOG", D("2014-04-03")).instrument_id == "XNAS:GOOG"
    assert M.resolve("GOOCV", D("2014-03-27")).instrument_id == "XNAS:GOOG"
    assert M.resolve("GOOGL", D("2004-08-19")).instrument_id == "XNAS:GOOGL"  # back-filled
    events = {(e.instrument_id, e.session_date.isoformat()): e.close
              for e in _events(lean, "GOOG")}
    # Lean's goog.zip: class A at 1135.10 on 2014-04-02, class C at 569.74 the next day; each
    # side lands on its own instrument, so neither series shows a -50 % "move"
    assert events[("XNAS:GOOGL", "2014-04-02")] == 1135.10
    assert events[("XNAS:GOOG", "2014-04-03")] == 569.74
    assert ("XNAS:GOOG", "2014-04-02") not in events
    googl = {e.session_date.isoformat(): e.close for e in _events(lean, "GOOGL")}
    assert googl["2014-04-03"] == 571.50
    assert {e.instrument_id for e in _events(lean, "GOOGL")} == {"XNAS:GOOGL"}


def test_a_vendor_snapshot_reads_its_tickers_at_the_snapshot_date():
    # Kaggle's file labels every row with its 2018 ticker: GOOG on 2014-03-27 is class C at
    # 558.46 (Lean's GOOCV), NWSA on 2013-06-19 the new News Corp at 15.80 (the old NWSA closed
    # 32.69 on 2013-06-27 in Lean)
    sp = pd.read_csv(SP500, dtype={"date": str})
    got = {}
    for sym, day in (("GOOG", "2014-03-27"), ("NWSA", "2013-06-19")):
        row = sp[(sp["symbol"] == sym) & (sp["date"] == day)].iloc[0]
        e = parse_fields({k: str(v) for k, v in row.items()}, default_source="sp500_5yr",
                         master=M)
        got[sym] = (e.instrument_id, e.close)
    assert got == {"GOOG": ("XNAS:GOOG", 558.46), "NWSA": ("XNAS:NWSA", 15.80)}
    assert M.symbols_on("sp500_5yr", D("2013-06-19")) == D("2018-02-07")
    assert M.symbols_on("lean", D("2013-06-19")) == D("2013-06-19")



def test_alpha_vantage_rows_carry_the_tickers_of_its_download_day():
    # the Alpha Vantage file was downloaded on 2021-04-21: its GOOG rows from 2014-03-27 are
    # class C (558.46 on the first day, as in Kaggle), its GOOGL rows the class A history
    av = NORMALIZED / "us_daily_alphavantage_1999_2021.normalized.csv.gz"
    spec = file_spec(av)
    assert spec.default_source == "alphavantage_daily"
    got = {}
    for e in iter_file(spec):
        if getattr(e, "symbol", None) in ("GOOG", "GOOGL") and \
                e.session_date == D("2014-03-27"):
            got[e.symbol] = (e.instrument_id, e.close, e.source)
    assert got == {"GOOG": ("XNAS:GOOG", 558.46, "alphavantage_daily"),
                   "GOOGL": ("XNAS:GOOGL", 1114.28, "alphavantage_daily")}
    assert M.symbols_on("alphavantage_daily", D("2010-01-04")) == D("2021-04-21")

# -- Tokyo, indices, unknown symbols -----------------------------------------------------------

@pytest.mark.parametrize("symbol", ["7203.T", "7203.t", "XTKS:7203", "9984.T", "1306.T"])
def test_tokyo_codes(symbol):
    inst = M.resolve(symbol, D("2017-06-01"))
    assert (inst.mic, inst.currency, inst.timezone, inst.calendar, inst.known) == \
        ("XTKS", "JPY", "Asia/Tokyo", "XTKS", True)
    assert re.fullmatch(r"XTKS:\d{4}", inst.instrument_id)


def test_an_unknown_tokyo_code_resolves_by_rule():
    inst = M.resolve("1234.T", D("2017-06-01"))
    assert (inst.instrument_id, inst.currency, inst.calendar, inst.known) == \
        ("XTKS:1234", "JPY", "XTKS", False)


@pytest.mark.parametrize(("symbol", "expected", "calendar", "currency"), [
    ("N225", "INDEX:N225", "XTKS", "JPY"), ("TOPIX", "INDEX:TOPIX", "XTKS", "JPY"),
    ("SPX", "INDEX:SPX", "XNYS", "USD"), ("^GSPC", "INDEX:SPX", "XNYS", "USD"),
    ("^IXIC", "INDEX:IXIC", "XNYS", "USD"),
])
def test_indices(symbol, expected, calendar, currency):
    inst = M.resolve(symbol, D("2018-01-02"))
    assert (inst.instrument_id, inst.kind, inst.mic, inst.calendar, inst.currency) == \
        (expected, "index", "", calendar, currency)


def test_unknown_and_invalid_symbols():
    inst = M.resolve("ZZZZ", D("2018-01-02"))
    assert (inst.instrument_id, inst.known) == ("XNYS:ZZZZ", False)
    assert M.lookup("ZZZZ") is None and M.get("XNYS:ZZZZ") is None
    with pytest.raises(ValueError):
        M.resolve("AA PL!")
    with pytest.raises(KeyError):
        M.history("XNYS:ZZZZ")


def test_a_master_without_dated_aliases_behaves_as_before():
    m = InstrumentMaster([Instrument("XNAS:AAPL", "AAPL", "XNAS", "XNYS", "USD",
                                     "America/New_York", "stock")])
    assert m.resolve("aapl", D("1990-01-02")).instrument_id == "XNAS:AAPL"
    assert m.history("XNAS:AAPL") == (Alias("AAPL", None, None, "reference"),)


def test_store_round_trips_keep_equality():
    # the stores keep the reference columns; the dated fields come from the packaged master
    fb = M.get("XNAS:FB")
    bare = Instrument(*(getattr(fb, f) for f in ("instrument_id", "symbol", "mic", "calendar",
                                                 "currency", "timezone", "kind", "name")))
    assert bare == fb and hash(bare) == hash(fb)


# -- the reference files -------------------------------------------------------------------------

def test_reference_files_are_what_the_build_derives_from_the_data():
    rows, aliases = build.build(SHARED)
    with build.INSTRUMENTS.open(newline="") as f:
        assert list(csv.DictReader(f)) == rows
    with build.ALIASES.open(newline="") as f:
        assert list(csv.DictReader(f)) == aliases


def test_alias_ranges_are_consistent():
    by_symbol = defaultdict(list)
    for inst in M:
        assert INSTRUMENT_ID_RE.match(inst.instrument_id), inst.instrument_id
        assert inst.aliases, inst.instrument_id
        assert inst.symbol in {a.symbol for a in inst.aliases}
        for a in inst.aliases:
            by_symbol[a.symbol].append(a)
            # every alias lies inside the listing
            assert inst.listing_date is None or a.valid_from >= inst.listing_date
            assert inst.delisting_date is None or (
                a.valid_to is not None and a.valid_to <= inst.delisting_date)
        if inst.delisting_date is not None:
            assert inst.listing_date <= inst.delisting_date
    for symbol, ranges in by_symbol.items():  # one ticker never names two instruments at once
        ranges.sort(key=lambda a: a.valid_from)
        for a, b in zip(ranges, ranges[1:]):
            assert a.valid_to is not None and a.valid_to < b.valid_from, symbol


# -- every symbol of the data ----------------------------------------------------------------------

def _symbol_dates(path):
    """(source or '', symbol) → set of dates (YYYY-MM-DD) of one gzip CSV file."""
    out = defaultdict(set)
    with gzip.open(path, "rt", newline="") as f:
        reader = csv.reader(f)
        header = [c.strip().lower() for c in next(reader)]
        si = header.index("symbol") if "symbol" in header else header.index("name")
        di = header.index("date") if "date" in header else header.index("timestamp")
        src = header.index("source") if "source" in header else None
        for row in reader:
            if row:
                out[(row[src] if src is not None else "", row[si])].add(row[di][:10])
    return out


def test_every_symbol_of_every_file_the_parser_reads_is_known():
    files = sorted(NORMALIZED.glob("*.normalized.csv.gz")) + [RAW_SP500]
    assert len(files) == 13
    checked = unlisted = 0
    symbols = set()
    for path in files:
        try:
            default_source = file_spec(path).default_source
        except ValueError:  # quote files: no OHLC columns, the price parser does not read them
            default_source = "lean"
        for (source, symbol), days in _symbol_dates(path).items():
            symbols.add(symbol)
            for day in days:
                on = M.symbols_on(source or default_source, D(day))
                inst = M.resolve(symbol, on)
                assert inst.known, (path.name, symbol, day)
                checked += 1
                # point-in-time tickers (Lean): the instrument is listed on the row's date
                if "lean" in path.name and not inst.listed_on(D(day)):
                    unlisted += 1
    assert len(symbols) == 441 and checked > 100_000
    assert unlisted == 0


def test_the_pipeline_emits_the_instrument_of_the_events_id(lean):
    # the ordering step looks the instrument up by id: the symbol FB alone names Facebook
    events = [e for e in _events(lean, "FB") if e.instrument_id == "XNYS:FB-1999"][:5]
    fn = _OrderedGroupsFn(["lean"], [], 5, True, "XNYS")
    fn.setup()
    out = list(fn.process(("XNYS:FB-1999", events)))
    emitted = [o.value for o in out if getattr(o, "tag", None) == "instruments"]
    assert [i.instrument_id for i in emitted] == ["XNYS:FB-1999"]
    assert emitted[0].delisting_date == D("2003-03-28")


def test_iter_file_parses_the_lean_file_with_dated_instruments():
    spec = file_spec(LEAN_DAILY)
    ids = defaultdict(int)
    for out in iter_file(spec, M):
        ids[getattr(out, "instrument_id", "dead_letter")] += 1
    assert "dead_letter" not in ids
    assert {"XNYS:FB-1999", "XNAS:FB", "XNYS:WM-1998", "XNYS:WM", "XNYS:BNO-1998", "ARCX:BNO",
            "XNYS:USO-1998", "ARCX:USO", "XNYS:EEM-1998", "ARCX:EEM", "XNYS:AAA-2002",
            "ARCX:AAA", "XNAS:GOOG", "XNAS:GOOGL", "XNAS:GOOAV"} <= set(ids)
    assert sum(ids.values()) == 58_327  # every row of the file (README's count)


def test_the_analytics_instruments_table_holds_the_dates():
    from analytics.warehouse import Warehouse

    with Warehouse(None) as wh:
        wh.create_tables()
        assert wh.load_instruments() == len(M)
        rows = wh.query(
            "SELECT instrument_id, symbol, listing_date, delisting_date "
            "FROM miraikakaku.instruments WHERE symbol = @symbol ORDER BY instrument_id",
            {"symbol": "FB"})
    got = [(r.instrument_id, r.symbol, pd.Timestamp(r.listing_date).date(),
            None if pd.isna(r.delisting_date) else pd.Timestamp(r.delisting_date).date())
           for r in rows.itertuples()]
    assert got == [("XNAS:FB", "FB", D("2012-05-18"), None),
                   ("XNYS:FB-1999", "FB", D("1999-09-29"), D("2003-03-28"))]
