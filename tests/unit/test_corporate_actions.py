"""Corporate actions from the data, adjusted prices, and split detection, on real rows.

Data (../shared/data, see its README): the Alpha Vantage daily file (raw OHLC, ``adj_close``,
``dividend_amount``, ``split_coefficient``), the Lean daily file (raw prices) with its factor
and map files, the S&P 500 five-year file (split-adjusted OHLC) and the MLbot Tokyo rows (raw
OHLC, split-adjusted ``adj_close``).
"""

from __future__ import annotations

import datetime as dt
import math
import statistics

import pytest

from miraikakaku import corporate_actions as ca
from miraikakaku.cli import main as cli_main
from miraikakaku.instruments import load_master
from miraikakaku.schema import PriceEvent
from tests.conftest import JP, SHARED, SP500, read_rows, write_csv
from transforms.ordering import InstrumentSequencer
from transforms.parsing import file_spec, parse_line

pytestmark = pytest.mark.unit

AV = SHARED / "normalized" / "us_daily_alphavantage_1999_2021.normalized.csv.gz"
LEAN = SHARED / "normalized" / "us_daily_lean.normalized.csv.gz"
LEAN_DIR = SHARED / "us_daily" / "lean_algoseek"
M = load_master()
D = dt.date.fromisoformat


def _events(path, symbols, source=None, default_source="user") -> dict[str, list[PriceEvent]]:
    """The file's rows of ``symbols`` through the real parser, per symbol in session order."""
    spec = file_spec(path)
    _, rows = read_rows(path, set(symbols), source)
    out: dict[str, list[PriceEvent]] = {}
    for r in rows:
        e = parse_line(",".join(r), spec.columns, default_source=spec.default_source, master=M)
        out.setdefault(r[0], []).append(e)
    for v in out.values():
        v.sort(key=lambda e: e.session_date)
    return out


def _av_rows(symbols) -> dict[str, list[dict]]:
    header, rows = read_rows(AV, set(symbols))
    out: dict[str, list[dict]] = {}
    for r in rows:
        d = dict(zip(header, r, strict=True))
        out.setdefault(d["symbol"], []).append(d)
    return out


@pytest.fixture(scope="module")
def av_actions() -> list[ca.CorporateAction]:
    return ca.load_alphavantage_actions(AV)


@pytest.fixture(scope="module")
def av() -> dict[str, list[dict]]:
    return _av_rows({"AAPL", "C", "GOOGL"})


def _ret(series: dict[dt.date, float], day: str) -> float:
    days = sorted(series)
    i = days.index(D(day))
    return series[days[i]] / series[days[i - 1]] - 1


def _by_day(events, attr="feature_price") -> dict[dt.date, float]:
    return {e.session_date: getattr(e, attr) for e in events}


def test_alpha_vantage_split_coefficients_become_actions(av_actions):
    got = {(a.symbol, a.ex_date.isoformat()): a for a in av_actions if a.kind != "dividend"}
    aapl = got[("AAPL", "2014-06-09")]
    assert (aapl.kind, aapl.ratio, aapl.reference_price) == ("split", 7.00000700001, 645.57)
    assert aapl.factor == pytest.approx(1 / 7, rel=2e-6)  # 1 / 7.00000700001
    assert (got[("AAPL", "2020-08-31")].kind, got[("AAPL", "2020-08-31")].ratio) == ("split", 4.0)
    c = got[("C", "2011-05-09")]
    assert (c.kind, c.ratio, c.factor, c.instrument_id) == ("reverse_split", 0.1, 10.0, "XNYS:C")
    assert (got[("NVDA", "2007-09-11")].kind, got[("BRK.B", "2010-01-21")].ratio) == \
        ("split", 50.0)
    # the Viatris spin-off: coefficient 1.054 is no share ratio
    assert got[("PFE", "2020-11-17")].kind == "spin_off_as_split"
    assert len(got) == 32  # every row of the file with split_coefficient != 1
    div = next(a for a in av_actions if a.symbol == "AAPL" and a.ex_date == D("2012-08-09"))
    assert (div.kind, div.amount, div.reference_price) == ("dividend", 2.65, 619.86)
    assert div.factor == pytest.approx(1 - 2.65 / 619.86)


def test_aapl_7_for_1_adjusted_close_is_continuous_and_equals_the_files(av, av_actions):
    rows = av["AAPL"]
    sched = ca.AdjustmentSchedule(a for a in av_actions if a.symbol == "AAPL")
    days = [D(r["date"]) for r in rows]
    closes = [float(r["close"]) for r in rows]
    adj = dict(zip(days, ca.adjusted_closes(days, closes, sched), strict=True))
    raw = dict(zip(days, closes, strict=True))
    assert _ret(raw, "2014-06-09") == pytest.approx(-0.855, abs=1e-3)  # the raw split day
    assert abs(_ret(adj, "2014-06-09")) < 0.05
    assert abs(_ret(adj, "2020-08-31")) < 0.05 and _ret(raw, "2020-08-31") < -0.7
    file_adj = {D(r["date"]): float(r["adj_close"]) for r in rows}
    for day in ("2014-06-06", "2014-06-09", "2020-08-28", "2020-08-31"):
        assert adj[D(day)] == pytest.approx(file_adj[D(day)], rel=5e-4), day
    errors = [abs(adj[d] / file_adj[d] - 1) for d in days]
    # measured: max 1.9e-4, median 1.3e-4 (Alpha Vantage rounds its adjusted prices)
    assert max(errors) < 5e-4 and statistics.median(errors) < 2e-4


def test_every_alpha_vantage_series_reproduces_the_files_adjusted_close(av_actions):
    header, rows = read_rows(AV)
    i_sym, i_date, i_close, i_adj = (header.index(c) for c in ("symbol", "date", "close",
                                                                "adj_close"))
    scheds: dict[str, ca.AdjustmentSchedule] = {}
    worst: dict[str, float] = {}
    errors = []
    for r in rows:
        sym = r[i_sym]
        if sym not in scheds:
            scheds[sym] = ca.AdjustmentSchedule(a for a in av_actions if a.symbol == sym)
        err = abs(float(r[i_close]) * scheds[sym].factor(D(r[i_date])) / float(r[i_adj]) - 1)
        errors.append(err)
        worst[sym] = max(worst.get(sym, 0.0), err)
    assert len(scheds) == 41 and statistics.median(errors) < 5e-4  # measured 3.0e-4
    # F: before 2000-06-29 (Ford's recapitalisation, dividend_amount 1.771 with new shares)
    # the file's factor differs by 4.6 %; every other series within 0.55 %
    assert {s for s, e in worst.items() if e > 5.5e-3} == {"F"}


def test_c_1_for_10_reverse_split_is_adjusted(av, av_actions):
    rows = av["C"]
    sched = ca.AdjustmentSchedule(a for a in av_actions if a.symbol == "C")
    raw = {D(r["date"]): float(r["close"]) for r in rows}
    adj = {d: c * sched.factor(d) for d, c in raw.items()}
    assert _ret(raw, "2011-05-09") > 8.7  # 4.52 -> 44.16
    assert abs(_ret(adj, "2011-05-09")) < 0.05
    file_adj = {D(r["date"]): float(r["adj_close"]) for r in rows}
    assert adj[D("2011-05-06")] == pytest.approx(file_adj[D("2011-05-06")], rel=3e-3)
    errors = [abs(adj[d] / file_adj[d] - 1) for d in raw]
    assert max(errors) < 3e-3  # measured 2.1e-3: dividends of 1999-2008 rounded


def test_lean_factor_file_adjusts_raw_lean_rows_when_parsed(av):
    lean = _events(LEAN, {"AAPL"})["AAPL"]
    assert all(e.source == "lean" and e.adj_close is not None for e in lean)
    raw, adj = _by_day(lean, "close"), _by_day(lean)
    for day in ("2014-06-09", "2020-08-31"):
        assert _ret(raw, day) < -0.7 and abs(_ret(adj, day)) < 0.05, day
    # the factor file itself: adj_close = close x price_factor x split_factor of the first row
    # dated on or after the session (Lean's CorporateFactorProvider.GetPriceFactor)
    rows = [line.split(",") for line in
            (LEAN_DIR / "factor_files" / "aapl.csv").read_text().split()]
    table = sorted((D(f"{r[0][:4]}-{r[0][4:6]}-{r[0][6:]}"), float(r[1]) * float(r[2]))
                   for r in rows)
    for e in lean[::97]:
        scale = next(s for d, s in table if d >= e.session_date)
        assert e.adj_close == pytest.approx(e.close * scale, rel=1e-12)
    # and it reproduces Alpha Vantage's own adjusted series (another vendor, same actions)
    file_adj = {D(r["date"]): float(r["adj_close"]) for r in av["AAPL"]}
    errors = [abs(adj[d] / file_adj[d] - 1) for d in adj if d in file_adj]
    assert len(errors) > 5000 and statistics.median(errors) < 5e-4  # measured 1.3e-4
    # the split as an action of the factor file: ex-date is the session after the row's date
    acts = ca.load_lean_factor_file(LEAN_DIR / "factor_files" / "aapl.csv")
    split = next(a for a in acts if a.ex_date == D("2014-06-09"))
    assert (split.kind, round(split.ratio, 4), split.reference_price) == ("split", 7.0, 645.57)
    div = next(a for a in acts if a.ex_date == D("2012-08-09"))
    assert (div.kind, div.amount, div.provider) == ("dividend", 2.65, "lean")


def test_lean_map_files_pick_the_security_behind_a_ticker():
    files = ca.lean_factor_files()
    goog = _events(LEAN, {"GOOG", "WM"})
    raw, adj = _by_day(goog["GOOG"], "close"), _by_day(goog["GOOG"])
    # GOOG up to 2014-04-02 is today's GOOGL (map googl: split factor 0.5), after it class C
    assert (files.permtick("GOOG", D("2014-04-02")), files.permtick("GOOG", D("2014-04-03"))) \
        == ("googl", "goog")
    assert _ret(raw, "2014-04-03") < -0.49 and abs(_ret(adj, "2014-04-03")) < 0.05
    # WM before 2009-08-05 is Washington Mutual (a reused ticker): no Waste Management factors
    wm = {e.session_date: e for e in goog["WM"]}
    assert files.permtick("WM", D("2008-09-25")) is None and wm[D("2008-09-25")].adj_close is None
    assert files.permtick("WM", D("2009-08-05")) == "wm"
    assert wm[D("2009-08-05")].adj_close == pytest.approx(
        wm[D("2009-08-05")].close * files.factor("WM", D("2009-08-05")), rel=1e-12)
    # EEM's 3:1 splits in Lean's raw prices (2005-06-09, 2008-07-24)
    eem = _events(LEAN, {"EEM"})["EEM"]
    for day in ("2005-06-09", "2008-07-24"):
        assert _ret(_by_day(eem, "close"), day) < -0.65 and abs(_ret(_by_day(eem), day)) < 0.05
    # NWSA 2013-06-28 is the old News Corp (map tfcfa), not the new one (factor file nwsa)
    assert files.permtick("NWSA", D("2013-06-28")) == "tfcfa"


def test_googl_2014_04_03_without_coefficient_is_a_candidate_not_applied(av, av_actions):
    rows = av["GOOGL"]
    events = [dict(session_date=D(r["date"]), open=float(r["open"]), close=float(r["close"]),
                   volume=float(r["volume"])) for r in rows]
    day = D("2014-04-03")
    assert next(r for r in rows if r["date"] == "2014-04-03")["split_coefficient"] == "1.0"
    splits = [a for a in av_actions if a.symbol == "GOOGL" and a.kind != "dividend"]
    assert splits == []
    cands = {c.session_date: c for c in ca.detect_candidates(events, splits)}
    assert cands[day].flag == "split_candidate" and cands[day].split_ratio == 2.0
    # not applied: split actions leave the -49.7 % in place
    sched = ca.AdjustmentSchedule(splits)
    assert events[-1]["close"] * sched.factor(day) == events[-1]["close"]
    # what the file does record that day: the class C share as a cash distribution
    # (dividend_amount 567.9717 = 50.0 % of the previous close). With it the move is explained.
    dist = [a for a in av_actions if a.symbol == "GOOGL" and a.ex_date == day]
    assert [(a.kind, a.amount) for a in dist] == [("dividend", 567.9717)]
    assert day not in {c.session_date for c in ca.detect_candidates(events, dist)}


def test_bad_prints_and_big_moves_are_not_split_candidates():
    ev = _events(SP500, {"LNT", "NWL", "AMD", "EBAY"})
    flags = {(s, c.session_date): c.flag for s, es in ev.items()
             for c in ca.detect_candidates(es)}
    # LNT 2016-05-19 -49 % then +101 %; NWL 2017-09-14 -30 % then +40 %: bad prints
    assert flags[("LNT", D("2016-05-19"))] == "bad_print_candidate"
    assert flags[("NWL", D("2017-09-14"))] == "bad_print_candidate"
    assert ("LNT", D("2016-05-20")) not in flags and ("NWL", D("2017-09-15")) not in flags
    # AMD 2016-04-22 +52 % on x15.8 volume (earnings); EBAY 2015-07-20 -57 % (PayPal spin-off)
    assert flags[("AMD", D("2016-04-22"))] == "large_move"
    assert flags[("EBAY", D("2015-07-20"))] == "large_move"
    assert "split_candidate" not in {f for (s, _), f in flags.items()
                                     if s in ("LNT", "AMD", "EBAY")}


def test_mufg_1_to_1000_split_in_mlbot_raw_prices():
    ev = _events(JP, {"8306.T", "6501.T"}, "mlbot")
    mufg = ev["8306.T"]
    cands = {c.session_date: c for c in ca.detect_candidates(mufg)}
    c = cands[D("2007-10-01")]
    assert (c.flag, c.split_ratio) == ("split_candidate", 1000.0)
    assert c.ratio < 0.0011 and c.volume_ratio > 500
    # the file's adjusted close makes it continuous, and the features see that one
    assert abs(_ret(_by_day(mufg), "2007-10-01")) < 0.05
    # Hitachi's 5:1 consolidation: a reverse-split candidate (MLbot's adj_close misses it)
    hitachi = {c.session_date: c for c in ca.detect_candidates(ev["6501.T"])}
    assert (hitachi[D("2018-09-26")].flag, hitachi[D("2018-09-26")].split_ratio) == \
        ("split_candidate", 0.2)


def _stream_flags(events) -> dict[dt.date, tuple[str, ...]]:
    seq = InstrumentSequencer("XTKS" if events[0].currency == "JPY" else "XNYS", ["x"])
    out = {}
    for e in events:
        bar = seq.step(e)
        out[e.session_date] = bar.flags
    return out


def test_the_stream_flags_split_candidates_on_the_feature_price():
    import dataclasses

    mufg = _events(JP, {"8306.T"}, "mlbot")["8306.T"]
    hitachi = _events(JP, {"6501.T"}, "mlbot")["6501.T"]
    day = D("2007-10-01")
    # adjusted by the file: no move, no candidate ('gap': no rows 2007-09-25..28, no trading)
    assert _stream_flags(mufg)[day] == ("gap",)
    # the same rows as a raw-only source (no adj_close): flagged on the day, for review
    raw = [dataclasses.replace(e, adj_close=None) for e in mufg]
    assert _stream_flags(raw)[day] == ("gap", "large_move", "split_candidate")
    assert "split_candidate" in _stream_flags(hitachi)[D("2018-09-26")]
    # Lean AAPL: the parsed adj_close removes the 7:1 split from the features
    lean = _events(LEAN, {"AAPL"})["AAPL"]
    flags = _stream_flags(lean)
    assert flags[D("2014-06-09")] == () and flags[D("2020-08-31")] == ()
    # the bad print LNT 2016-05-19 came on normal volume: large move, no split candidate
    lnt = _events(SP500, {"LNT"})["LNT"]
    assert _stream_flags(lnt)[D("2016-05-19")] == ("large_move",)


def test_stream_rule_needs_the_volume():
    prev = [100.0] * 20
    assert ca.stream_split_flag(100.0, 50.2, 250.0, prev) == "split_candidate"
    assert ca.stream_split_flag(100.0, 50.2, 100.0, prev) is None  # volume unchanged
    assert ca.stream_split_flag(100.0, 50.2, 3000.0, prev) is None  # x30: a crash, not 2:1
    assert ca.stream_split_flag(100.0, 80.0, 250.0, prev) is None  # -20 %: no large move


def test_adjustment_schedule_multiplies_actions_after_the_day():
    a = [ca.CorporateAction("XNAS:AAPL", "AAPL", D("2014-06-09"), "split", 7.0, None, 1 / 7,
                            645.57, "USD", "x", "alphavantage"),
         ca.CorporateAction("XNAS:AAPL", "AAPL", D("2014-08-07"), "dividend", None, 0.47,
                            1 - 0.47 / 94.48, 94.48, "USD", "x", "alphavantage")]
    s = ca.AdjustmentSchedule(a)
    assert s.factor(D("2014-06-06")) == pytest.approx((1 / 7) * (1 - 0.47 / 94.48))
    assert s.factor(D("2014-06-09")) == pytest.approx(1 - 0.47 / 94.48)
    assert s.factor(D("2014-08-07")) == 1.0
    with pytest.raises(ValueError):
        ca.CorporateAction("X:Y", "Y", D("2014-06-09"), "merger", 1.0, None, 1.0, None, "USD",
                           "x", "x")
    assert [ca.classify_ratio(r) for r in (7.00000700001, 1.49999925, 0.1, 1.054)] == \
        ["split", "split", "reverse_split", "spin_off_as_split"]
    assert math.isclose(ca.AdjustmentSchedule([]).factor(D("2000-01-03")), 1.0)


def test_actions_command_lists_actions_and_candidates(capsys, tmp_path):
    assert cli_main(["actions", "--symbol", "C"]) == 0
    out = capsys.readouterr().out
    assert "2011-05-09  reverse_split" in out and "1:10 reverse split" in out
    assert "dividend" not in out
    header, rows = read_rows(SP500, {"LNT", "AMD"})
    path = write_csv(tmp_path / "us_daily_sp500_5yr_2013_2018.csv", header, rows)
    assert cli_main(["actions", "--input", str(path), "--symbol", "LNT"]) == 0
    out = capsys.readouterr().out
    assert "bad_print_candidate" in out and "LNT" in out and "2016-05-19" in out
    assert "split_candidate" not in out
