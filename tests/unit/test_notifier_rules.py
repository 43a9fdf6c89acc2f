"""Rule matching (notifier.rules) on real daily bars: every rule kind, cooldown, history warm-up.

The events go through the wire format (``encode_event`` -> ``decode_event``) as they do through
the outbox; the expected firing dates are computed independently with pandas from the raw file.

Run: ``.venv/bin/python -m pytest -q tests/unit/test_notifier_rules.py``.
"""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pandas as pd
import pytest

from miraikakaku.schema import AlertEvent
from notifier.events import decode_event, encode_event
from notifier.rules import Bar, BarHistory, RuleBook, RuleMatcher, RuleSpec
from tests.api.conftest import US_FILE, instrument, make_predictions, read_rows, to_price_event

pytestmark = pytest.mark.unit

AAPL = "XNAS:AAPL"


@pytest.fixture(scope="module")
def aapl_events():
    inst = instrument("AAPL")
    events = [to_price_event(r, inst, "sp500_5yr") for r in read_rows(US_FILE, ("AAPL",))]
    events = sorted((e for e in events if e is not None), key=lambda e: e.session_date)
    return [decode_event(*encode_event(e)) for e in events]


@pytest.fixture(scope="module")
def aapl_frame() -> pd.DataFrame:
    df = pd.read_csv(US_FILE, dtype={"symbol": str, "date": str})
    df = df[df["symbol"] == "AAPL"].copy()
    df["date"] = pd.to_datetime(df["date"]).dt.date
    return df.sort_values("date").reset_index(drop=True)


def rule(kind: str, params: dict, *, rule_id: int = 1, cooldown: int = 0) -> RuleSpec:
    return RuleSpec(rule_id, 7, f"{kind} test", AAPL, kind, params, ["inbox"], cooldown, None)


def fire_dates(rules: list[RuleSpec], events, history: BarHistory | None = None):
    book = RuleBook()
    book.set_rules(rules)
    matcher = RuleMatcher(book, history)
    out = []
    for e in events:
        ms = matcher.match(e)
        matcher.fired(ms)
        out.extend((m.rule.id, m.event.session_date) for m in ms)
    return out


def test_price_above_and_below_fire_on_the_exact_crossing_sessions(aapl_events, aapl_frame):
    closes = aapl_frame.set_index("date")["close"]
    level = float(np.round(closes.median(), 0))  # a level AAPL crosses many times
    prev = closes.shift(1)
    up = list(closes.index[(prev < level) & (closes >= level)])
    down = list(closes.index[(prev > level) & (closes <= level)])
    assert len(up) >= 3 and len(down) >= 3
    got = fire_dates([rule("price_above", {"level": level}, rule_id=1),
                      rule("price_below", {"level": level}, rule_id=2)], aapl_events)
    assert [d for r, d in got if r == 1] == up
    assert [d for r, d in got if r == 2] == down


def test_pct_move_compares_with_the_close_window_sessions_ago(aapl_events, aapl_frame):
    closes = aapl_frame.set_index("date")["close"]
    move = closes / closes.shift(5) - 1
    expected = list(closes.index[move.abs() >= 0.06])
    assert 3 <= len(expected) < 100
    got = fire_dates([rule("pct_move", {"threshold": 0.06, "window": 5})], aapl_events)
    assert [d for _, d in got] == expected


def test_volume_spike_against_the_mean_of_the_previous_bars(aapl_events, aapl_frame):
    vol = aapl_frame.set_index("date")["volume"].astype(float)
    mean = vol.shift(1).rolling(20).mean()
    expected = list(vol.index[vol >= 2.5 * mean])
    assert 2 <= len(expected) < 60
    got = fire_dates([rule("volume_spike", {"multiplier": 2.5, "window": 20})], aapl_events)
    assert [d for _, d in got] == expected


def test_predicted_move_fires_on_large_forecasts_of_the_champion_only(aapl_events, aapl_frame):
    closes = aapl_frame["close"].to_numpy()
    log_returns = np.log(closes[1:] / closes[:-1])  # a "perfect" forecast per bar
    bars = sorted(aapl_events, key=lambda e: e.session_date)[:-1]
    preds = make_predictions([_as_price_event(b) for b in bars], AAPL, "sp500_5yr",
                             list(log_returns))
    events = [decode_event(*encode_event(p)) for p in preds]
    expected = [d for d, r in zip(aapl_frame["date"][:-1], log_returns) if abs(r) >= 0.04]
    assert expected
    got = fire_dates([rule("predicted_move", {"threshold": 0.04})], events)
    assert [d for _, d in got] == expected
    challenger = [e.__class__(**{**e.__dict__, "role": "challenger"}) for e in events]
    assert fire_dates([rule("predicted_move", {"threshold": 0.04})], challenger) == []


def _as_price_event(e):
    from tests.api.conftest import instrument as inst_of

    inst = inst_of("AAPL")
    row = {"date": e.session_date.isoformat(), "open": str(e.close), "high": str(e.close),
           "low": str(e.close), "close": str(e.close), "volume": str(e.volume or ""),
           "adj_close": "", "symbol": "AAPL"}
    return to_price_event(row, inst, "sp500_5yr")


def test_market_alert_forwards_pipeline_alerts_filtered_by_kind(aapl_events):
    bar = aapl_events[-1]
    alerts = [AlertEvent(f"{k}/{AAPL}/{bar.session_date:%Y%m%d}", k, k, AAPL, bar.event_time,
                         bar.session_date, 1.0, 0.5, k)
              for k in ("price_cross", "pct_move", "predicted_move")]
    events = [decode_event(*encode_event(a)) for a in alerts]
    book = RuleBook()
    book.set_rules([rule("market_alert", {}, rule_id=1),
                    rule("market_alert", {"alert_kinds": ["pct_move"]}, rule_id=2)])
    matcher = RuleMatcher(book)
    got = [(m.rule.id, m.event.alert_kind) for e in events for m in matcher.match(e)]
    assert got == [(1, "price_cross"), (1, "pct_move"), (2, "pct_move"), (1, "predicted_move")]


def test_cooldown_in_event_time_suppresses_a_flapping_series(aapl_events, aapl_frame):
    closes = aapl_frame.set_index("date")["close"]
    times = {e.session_date: e.event_time for e in aapl_events}
    # the level with the most upward crossings: the price flaps around it
    best = None
    for level in np.arange(closes.min().round(), closes.max().round(), 1.0):
        prev = closes.shift(1)
        ups = list(closes.index[(prev < level) & (closes >= level)])
        if best is None or len(ups) > len(best[1]):
            best = (float(level), ups)
    level, ups = best
    cooldown = 30 * 86_400
    kept, last = [], None
    for d in ups:  # independent greedy cooldown over the crossing times
        if last is None or (times[d] - last).total_seconds() >= cooldown:
            kept.append(d)
            last = times[d]
    assert len(kept) < len(ups)  # the cooldown really suppresses some crossings
    got = fire_dates([rule("price_above", {"level": level}, cooldown=cooldown)], aapl_events)
    assert [d for _, d in got] == kept


def test_history_is_warmed_so_rules_work_from_the_first_event(aapl_events, aapl_frame):
    """Starting mid-series with history from a loader (the serving store in the service)."""
    start = 600
    by_date = {e.session_date: e for e in aapl_events}

    def loader(instrument_id, source, before, n):
        bars = [Bar(e.session_date, e.close, e.feature_price, e.volume)
                for e in aapl_events if e.session_date < before]
        return bars[-n:]

    closes = aapl_frame.set_index("date")["close"]
    move = closes / closes.shift(5) - 1
    expected = [d for d in closes.index[move.abs() >= 0.06] if d >= aapl_events[start].session_date]
    got = fire_dates([rule("pct_move", {"threshold": 0.06, "window": 5})],
                     aapl_events[start:], BarHistory(loader))
    assert [d for _, d in got] == expected
    cold = fire_dates([rule("pct_move", {"threshold": 0.06, "window": 5})],
                      aapl_events[start:start + 5])
    assert cold == []  # without warm-up the first five sessions cannot fire
    assert by_date


def test_a_replayed_bar_replaces_its_session_in_history(aapl_events):
    h = BarHistory(size=3)
    for e in aapl_events[:5]:
        h.add(AAPL, "s", Bar(e.session_date, e.close, e.close, e.volume))
    h.add(AAPL, "s", Bar(aapl_events[4].session_date, 1.0, 1.0, None))  # replay, corrected
    prev = h.previous(AAPL, "s", aapl_events[5].session_date)
    assert [b.session_date for b in prev] == [e.session_date for e in aapl_events[2:5]]
    assert prev[-1].close == 1.0
    assert math.isfinite(prev[0].close)
    assert h.previous(AAPL, "s", dt.date(2000, 1, 1)) == []
