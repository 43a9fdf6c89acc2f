"""The quality suites on real rows: each expectation passes on real rows and fails on a mutated
copy (one field changed); block reasons agree with ``transforms.validation.validate_event``;
blocked + passing = input; training drops what the suite blocks."""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import math

import numpy as np
import pandas as pd
import pytest

from miraikakaku.schema import Prediction
from quality.suites import KINDS, SUITES, get_suite
from quality.validate import (
    events_to_frame,
    features_to_frame,
    predictions_to_frame,
    prepare,
    split_events,
    validate_frame,
)
from tests.conftest import write_csv
from transforms.features import FEATURE_NAMES, FeatureVector, SymbolHistory
from transforms.validation import BlockedEvent, validate_event

pytestmark = pytest.mark.unit


def _rows(events, symbol, start, end):
    return [e for e in events
            if e.symbol == symbol and dt.date.fromisoformat(start) <= e.session_date
            <= dt.date.fromisoformat(end)]


@pytest.fixture(scope="module")
def aapl(sp500_events):
    """120 real AAPL daily bars (2016-01-04 onwards), clean under every rule."""
    return _rows(sp500_events, "AAPL", "2016-01-04", "2016-12-31")[:120]


@pytest.fixture(scope="module")
def clean_aapl(aapl):
    """The full price suite's result on the real AAPL rows."""
    return validate_frame(prepare(events_to_frame(aapl), "price_events"), "price_events")


# --- price events: one mutation per rule ------------------------------------------------------

K = 100  # the mutated row (enough history before it for the large_move window)


def _mut_frame(field, value):
    def f(df):
        df.loc[K, field] = value
    return f


def _mut_time_back(df):
    df.loc[K, "event_time"] = df.loc[K - 3, "event_time"]


def _mut_duplicate(df):
    df.loc[K, "start"] = df.loc[K - 1, "start"]


def _mut_saturday(df):
    df.loc[K, "session_date"] = pd.Timestamp("2016-05-28")  # a Saturday


def _mut_drop_before(df):
    return df.drop(index=[K - 1, K - 2]).reset_index(drop=True)


PRICE_MUTATIONS = {
    # rule: (mutation of the frame, severity, needs prepare)
    "missing_field": (_mut_frame("open", np.nan), "block", False),
    "bad_number": (_mut_frame("volume", np.inf), "block", False),
    "non_positive_price": (_mut_frame("low", 0.0), "block", False),
    "high_below_low": (lambda df: df.__setitem__("high", df["high"].where(
        df.index != K, df["low"] - 0.01)), "block", False),
    "negative_volume": (_mut_frame("volume", -100.0), "block", False),
    "ohlc_inconsistent": (lambda df: df.__setitem__("open", df["open"].where(
        df.index != K, df["high"] * 1.05)), "flag", False),
    "extreme_range": (lambda df: df.__setitem__("low", df["low"].where(
        df.index != K, df["high"] / 1.6)), "flag", False),
    "zero_volume": (_mut_frame("volume", 0.0), "flag", False),
    "outside_session": (_mut_saturday, "flag", False),
    "time_not_increasing": (_mut_time_back, "flag", True),
    "duplicate_key": (_mut_duplicate, "flag", False),
    "large_move": (lambda df: df.__setitem__("close", df["close"].where(
        df.index != K, df["close"] * 0.7)), "flag", True),
    "gap": (_mut_drop_before, "flag", True),
}


def test_every_price_rule_has_a_mutation_test():
    names = set(get_suite("price_events").rule_names)
    assert names - {"intraday_gap"} == set(PRICE_MUTATIONS)


@pytest.mark.parametrize("rule", sorted(PRICE_MUTATIONS))
def test_price_rule_passes_real_rows_and_fails_the_mutated_copy(aapl, clean_aapl, rule):
    mutate, severity, needs_prepare = PRICE_MUTATIONS[rule]
    res = clean_aapl
    assert res.per_rule[rule].success, res.per_rule[rule]
    assert res.row_failures == {} and res.blocked == set()

    df = events_to_frame(aapl)
    out = mutate(df)
    df = out if out is not None else df
    if needs_prepare:
        df = prepare(df, "price_events")
    res = validate_frame(df, "price_events")
    assert rule in res.per_rule, f"{rule} did not run"
    assert not res.per_rule[rule].success
    assert res.per_rule[rule].severity == severity == get_suite("price_events").severity(rule)
    failing = {p for p, f in res.row_failures.items() if rule in {n for n, _ in f}}
    if rule == "duplicate_key":
        assert failing == {K - 1, K}  # every row of the repeated key
    elif rule == "gap":
        assert failing == {K - 2}  # two rows before it were dropped
        assert df.loc[K - 2, "session_gap"] == 2
    else:
        assert failing == {K}
    pos = min(failing)
    assert (pos in res.blocked) == (severity == "block")
    if severity == "flag":
        assert rule in res.flags(pos)


def test_intraday_gap_and_outside_session_on_real_minute_bars(minute_events):
    df = prepare(events_to_frame(minute_events), "price_events")
    res = validate_frame(df, "price_events")
    in_session = df["in_session"].to_numpy()
    # pre-market (from 04:00 ET) and after-hours bars are flagged, the 390 session bars are not
    assert in_session.sum() == 390
    outside = {p for p, f in res.row_failures.items() if ("outside_session", "flag") in f}
    assert outside == set(np.flatnonzero(~in_session))
    assert res.per_rule["intraday_gap"].success
    # drop one bar inside the session: the next bar is flagged intraday_gap (1 bar missing)
    first = int(np.flatnonzero(in_session)[100])
    cut = [e for i, e in enumerate(minute_events) if i != first]
    df2 = prepare(events_to_frame(cut), "price_events")
    res2 = validate_frame(df2, "price_events")
    gaps = {p for p, f in res2.row_failures.items() if ("intraday_gap", "flag") in f}
    assert gaps == {first}
    assert df2.loc[first, "intraday_gap_bars"] == 1


def test_known_anomalies_of_the_sp500_slice(sp500_events):
    df = prepare(events_to_frame(sp500_events), "price_events")
    res = validate_frame(df, "price_events")

    def rules_on(symbol, day):
        pos = df.index[(df["symbol"] == symbol)
                       & (df["session_date"] == pd.Timestamp(day))].tolist()
        assert len(pos) == 1, (symbol, day)
        return set(res.flags(pos[0])), res.block_reasons(pos[0])

    assert rules_on("CHD", "2014-05-19") == ({"ohlc_inconsistent"}, ())
    assert "large_move" in rules_on("NWL", "2017-09-14")[0]
    assert "extreme_range" in rules_on("XL", "2015-08-24")[0]
    assert rules_on("DHR", "2015-03-23") == ({"gap"}, ())
    assert df.loc[(df.symbol == "DHR") & (df.session_date == "2015-03-23"),
                  "session_gap"].item() == 10  # 2015-03-09..20: ten sessions missing
    # BHF 2017-07-26 never parsed (empty open): the next bar shows the hole
    assert rules_on("BHF", "2017-07-27") == ({"gap"}, ())
    assert res.blocked == set()


def test_block_reasons_agree_with_validate_event(aapl):
    """Today's per-event validation and the suite block the same rows for the same reason."""
    e = aapl[K]
    cases = [
        dataclasses.replace(e, low=0.0),
        dataclasses.replace(e, close=-1.0),
        dataclasses.replace(e, adj_close=0.0),
        dataclasses.replace(e, high=e.low - 0.5),
        dataclasses.replace(e, volume=-1.0),
        dataclasses.replace(e, open=e.high * 1.1),   # flag only
        dataclasses.replace(e, volume=0.0),          # flag only
        e,
    ]
    split = split_events(cases)
    blocked = {id(ev): reasons for ev, reasons in split.blocked}
    for pos, ev in enumerate(cases):
        try:
            out = validate_event(ev)
        except BlockedEvent as b:
            assert id(ev) in blocked, (pos, b.reason)
            assert blocked[id(ev)][0] == b.reason
        else:
            assert id(ev) not in blocked
            kept = next(k for k in split.kept if k.event_id == ev.event_id
                        and k.open == ev.open and k.volume == ev.volume and k.low == ev.low)
            assert set(out.flags) <= set(kept.flags)


def test_blocked_count_reconciles_with_input(sp500_events):
    events = list(sp500_events[:3000])
    rng = np.random.default_rng(6)
    mutated = []
    for i in rng.choice(len(events), 25, replace=False):
        e = events[i]
        events[i] = dataclasses.replace(e, high=e.low - 1.0) if i % 2 else \
            dataclasses.replace(e, volume=-5.0)
        mutated.append(i)
    split = split_events(events)
    v = split.validation
    assert len(split.kept) + len(split.blocked) == len(events) == v.n_rows
    assert v.n_passing == len(split.kept)
    assert len(v.blocked) == len(mutated) == len(split.blocked)
    assert v.blocked == {int(i) for i in mutated}
    assert v.flagged <= set(range(len(events))) - v.blocked
    counts = collections.Counter(r[0] for _, r in split.blocked)
    assert counts == {"high_below_low": sum(1 for i in mutated if i % 2),
                      "negative_volume": sum(1 for i in mutated if not i % 2)}


# --- features and predictions -----------------------------------------------------------------


def test_real_features_and_predictions_pass(feature_vectors, predictions):
    assert validate_frame(features_to_frame(feature_vectors), "features").row_failures == {}
    assert validate_frame(predictions_to_frame(predictions), "predictions").row_failures == {}


@pytest.fixture(scope="module")
def feature_vectors(aapl):
    """Real feature vectors of AAPL 2016 (transforms.features.SymbolHistory, as the stream)."""
    from miraikakaku.calendars import get_calendar
    from transforms.features import BarPoint

    cal = get_calendar("XNYS")
    hist = SymbolHistory()
    out = []
    for e in aapl:
        step = hist.push(BarPoint(e.session_date, cal.ordinal(e.session_date), e.feature_price,
                                  e.high, e.low, e.close, e.volume))
        if step.features is not None:
            out.append(FeatureVector(e.instrument_id, e.source, e.session_date, e.event_time,
                                     tuple(step.features)))
    assert len(out) > 50
    return out


FEATURE_MUTATIONS = {
    "missing_field": ("instrument_id", None, "block"),
    "non_finite": ("sma_gap_10", math.inf, "block"),
    "out_of_range": ("rsi_14", 1.5, "block"),
    "large_move": ("log_return_1", 0.5, "flag"),
}


@pytest.mark.parametrize("rule", sorted(FEATURE_MUTATIONS))
def test_feature_rules(feature_vectors, rule):
    col, value, severity = FEATURE_MUTATIONS[rule]
    df = features_to_frame(feature_vectors)
    df[col] = df[col].astype(object) if value is None else df[col]
    df.loc[10, col] = value
    res = validate_frame(df, "features")
    assert {p for p, f in res.row_failures.items() if rule in {n for n, _ in f}} == {10}
    assert (10 in res.blocked) == (severity == "block")


def test_feature_nan_and_volume_z_bound(feature_vectors):
    df = features_to_frame(feature_vectors)
    df.loc[3, "volatility_20"] = np.nan
    df.loc[4, "volume_z_20"] = 4.3  # beyond 19/sqrt(20): impossible within a 20-bar sample
    df.loc[5, "session_date"] = df.loc[6, "session_date"]
    res = validate_frame(df, "features")
    assert res.block_reasons(3) == ("non_finite",)
    assert res.block_reasons(4) == ("out_of_range",)
    assert set(res.flags(5)) == set(res.flags(6)) == {"duplicate_key"}
    assert set(FEATURE_NAMES) <= set(df.columns)


@pytest.fixture(scope="module")
def predictions(aapl):
    """Predictions shaped like the stream's, on real AAPL closes (forecast 0.1 %)."""
    out = []
    for a, b in zip(aapl, aapl[1:]):
        out.append(Prediction(a.instrument_id, a.source, a.session_date, a.event_time,
                              b.session_date, a.close, 0.001, a.close * math.exp(0.001),
                              "lstm_daily", "3"))
    return out


PREDICTION_MUTATIONS = {
    "missing_field": ("base_price", np.nan),
    "missing_model_version": ("model_version", ""),
    "non_finite": ("predicted_price", math.inf),
    "non_positive_price": ("base_price", -1.0),
    "target_not_after_as_of": ("target_date", None),  # set to as_of_date below
    "bad_role": ("role", "shadow"),
    "large_move": ("predicted_log_return", -0.4),
}


@pytest.mark.parametrize("rule", sorted(PREDICTION_MUTATIONS))
def test_prediction_rules(predictions, rule):
    col, value = PREDICTION_MUTATIONS[rule]
    df = predictions_to_frame(predictions)
    df.loc[7, col] = df.loc[7, "as_of_date"] if value is None else value
    res = validate_frame(df, "predictions")
    failing = {p for p, f in res.row_failures.items() if rule in {n for n, _ in f}}
    assert failing == {7}
    sev = get_suite("predictions").severity(rule)
    assert (7 in res.blocked) == (sev == "block")


def test_model_version_missing_as_null(predictions):
    df = predictions_to_frame(predictions)
    df["model_version"] = df["model_version"].astype(object)
    df.loc[2, "model_version"] = None
    assert validate_frame(df, "predictions").block_reasons(2) == ("missing_model_version",)


# --- contract ---------------------------------------------------------------------------------


def test_suites_contract():
    assert set(KINDS) == {"price_events", "bars", "features", "predictions"}
    for kind, suite in SUITES.items():
        assert suite.name == kind
        gx_suite = suite.gx_suite()
        assert len(gx_suite.expectations) == len(suite.rules)
        for r in suite.rules:
            assert r.severity in ("block", "flag")
            assert r.expectation.meta == {"rule": r.name, "severity": r.severity}
            assert r.description
    price = get_suite("price_events")
    for name in ("missing_field", "non_positive_price", "high_below_low", "negative_volume"):
        assert price.severity(name) == "block"
    for name in ("ohlc_inconsistent", "zero_volume", "outside_session", "time_not_increasing",
                 "duplicate_key", "large_move", "gap", "intraday_gap"):
        assert price.severity(name) == "flag"
    with pytest.raises(KeyError):
        get_suite("ticks")


def test_only_selected_rules_run(aapl):
    res = validate_frame(events_to_frame(aapl), "price_events",
                         rules=["high_below_low", "zero_volume"])
    assert set(res.per_rule) == {"high_below_low", "zero_volume"}
    with pytest.raises(KeyError):
        validate_frame(events_to_frame(aapl), "price_events", rules=["no_such_rule"])


# --- training uses the suite ------------------------------------------------------------------


def test_training_drops_what_the_suite_blocks(sp500_slice, tmp_path):
    import csv

    from models.training import _read_events

    with open(sp500_slice, newline="") as f:
        rows = list(csv.reader(f))
    header, body = rows[0], rows[1:]
    # make two real AAPL rows impossible: high below low, negative volume
    idx = [i for i, r in enumerate(body) if r[0] == "AAPL"][:2]
    body[idx[0]][header.index("high")] = str(float(body[idx[0]][header.index("low")]) - 1)
    body[idx[1]][header.index("volume")] = "-10"
    path = write_csv(tmp_path / "mutated.csv", header, body)
    stats: collections.Counter = collections.Counter()
    groups = _read_events([path], stats, None)
    assert stats["blocked"] == 2
    assert stats["blocked:high_below_low"] == 1 and stats["blocked:negative_volume"] == 1
    assert stats["dead_letters"] == 3  # empty opens: BHF 2017-07-26, DHR 2015-07-17, 2016-01-12
    kept = sum(len(v) for v in groups.values())
    assert stats["records_read"] == kept + stats["blocked"] + stats["dead_letters"] \
        + stats["duplicates"]
