"""Feature math on real rows, checked against pandas computing the same quantities."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from miraikakaku.calendars import get_calendar
from tests.conftest import SP500, read_rows
from transforms.features import (
    FEATURE_NAMES,
    MIN_HISTORY,
    BarPoint,
    SymbolHistory,
    compute_features,
)

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def aapl() -> pd.DataFrame:
    header, rows = read_rows(SP500, {"AAPL"})
    df = pd.DataFrame(rows, columns=header)
    for c in ("open", "high", "low", "close", "volume"):
        df[c] = df[c].astype(float)
    df["date"] = pd.to_datetime(df["date"]).dt.date
    return df.iloc[:300].reset_index(drop=True)


def _points(df: pd.DataFrame) -> list[BarPoint]:
    cal = get_calendar("XNYS")
    return [BarPoint(r.date, cal.ordinal(r.date), r.close, r.high, r.low, r.close, r.volume)
            for r in df.itertuples()]


def _pandas_features(df: pd.DataFrame) -> pd.DataFrame:
    p, v = df["close"], np.log1p(df["volume"])
    r = np.log(p / p.shift(1))
    d = p.diff()
    gains = d.clip(lower=0).rolling(14).sum()
    losses = (-d.clip(upper=0)).rolling(14).sum()
    out = pd.DataFrame({
        "log_return_1": r,
        "log_return_5": np.log(p / p.shift(5)),
        "sma_gap_10": p / p.rolling(10).mean() - 1,
        "sma_gap_20": p / p.rolling(20).mean() - 1,
        "volatility_20": r.rolling(20).std(ddof=1),
        "rsi_14": gains / (gains + losses),
        "range_ratio": (df["high"] - df["low"]) / df["close"],
        "volume_z_20": (v - v.rolling(20).mean()) / v.rolling(20).std(ddof=1),
    })
    return out[list(FEATURE_NAMES)]


def test_features_match_pandas_on_real_aapl_rows(aapl):
    hist = SymbolHistory(window=20)
    ours = [hist.push(b).features for b in _points(aapl)]
    expected = _pandas_features(aapl)
    assert all(f is None for f in ours[: MIN_HISTORY - 1])
    got = np.array(ours[MIN_HISTORY - 1:])
    np.testing.assert_allclose(got, expected.iloc[MIN_HISTORY - 1:].to_numpy(), rtol=1e-9,
                               atol=1e-12)


def test_windows_are_the_last_n_feature_vectors(aapl):
    hist = SymbolHistory(window=20)
    steps = [hist.push(b) for b in _points(aapl)]
    first = next(i for i, s in enumerate(steps) if s.window is not None)
    assert first == MIN_HISTORY - 1 + 19
    w = steps[first + 5].window
    assert w.shape == (20, len(FEATURE_NAMES)) and w.dtype == np.float32
    np.testing.assert_allclose(w[-1], np.float32(steps[first + 5].features))
    np.testing.assert_allclose(w[0], np.float32(steps[first + 5 - 19].features))


def test_compute_features_needs_enough_history(aapl):
    with pytest.raises(ValueError, match="need 21"):
        compute_features(_points(aapl)[:20])


def test_gap_and_reset_flags_and_order_check(aapl):
    pts = _points(aapl)
    hist = SymbolHistory(window=20, max_gap_sessions=5)
    for b in pts[:30]:
        hist.push(b)
    # skip two sessions: a hole left by blocked bars
    assert hist.push(pts[32]).flags == ("gap",)
    res = hist.push(pts[60])  # 28 sessions later: history reset
    assert res.flags == ("history_reset",) and res.features is None and res.prev_price is None
    with pytest.raises(ValueError, match="out of order"):
        hist.push(pts[10])


def test_large_move_flag_on_a_real_bad_print():
    # NWL 2017-09-14: the whole bar ~30 % below its neighbours (shared/data README, anomaly 3)
    header, rows = read_rows(SP500, {"NWL"})
    df = pd.DataFrame(rows, columns=header)
    i = df.index[df["date"] == "2017-09-14"][0]
    cal = get_calendar("XNYS")
    hist = SymbolHistory()
    flags = {}
    for r in df.iloc[i - 25: i + 2].itertuples():
        d = dt.date.fromisoformat(r.date)
        c = float(r.close)
        flags[r.date] = hist.push(BarPoint(d, cal.ordinal(d), c, float(r.high), float(r.low), c,
                                           float(r.volume))).flags
    assert "large_move" in flags["2017-09-14"] and "large_move" in flags["2017-09-15"]
    assert "large_move" not in flags[df.iloc[i - 1]["date"]]
