"""The feature registry: every feature is defined here once, as plain Python.

The streaming/batch pipeline (``transforms.ordering.ComputeFeatures``) and model training
(``models.training``) both feed bars, in event-time order, through the same ``SymbolHistory``
object, so features and LSTM windows are identical in both (training/serving parity, tested in
``tests/unit/test_features.py`` against pandas and in ``tests/pipeline``).

Inputs are ``BarPoint``s: ``price`` is the feature price (adjusted close, see
``PriceEvent.feature_price``), ``high/low/close`` are on the source's own basis and only used as a
scale-free ratio, ``volume`` in shares.

Features (``FEATURE_NAMES`` gives the order of the model's last axis):

==================  ==========================================================================
``log_return_1``    ln(P_t / P_{t-1})
``log_return_5``    ln(P_t / P_{t-5})
``sma_gap_10``      P_t / mean(P_{t-9..t}) - 1
``sma_gap_20``      P_t / mean(P_{t-19..t}) - 1
``volatility_20``   sample standard deviation (ddof=1) of the last 20 one-bar log returns
``rsi_14``          Cutler's RSI over the last 14 price changes, as a fraction in [0, 1]:
                    sum(gains) / (sum(gains) + sum(losses)); 0.5 when nothing changed.
                    (Cutler's simple-average variant of Wilder's RSI, J. W. Wilder, *New Concepts
                    in Technical Trading Systems*, 1978; chosen because it depends on a bounded
                    window only, so stream and batch agree exactly.)
``range_ratio``     (high_t - low_t) / close_t
``volume_z_20``     z-score of ln(1 + V_t) within the last 20 bars (ddof=1); 0 when the
                    deviation is 0 or volume is missing (indices)
==================  ==========================================================================

Holes: a bar whose session ordinal is more than 1 after the previous one (a blocked bar, a data
gap) is flagged ``gap``; more than ``max_gap_sessions`` resets the history (flag
``history_reset``), e.g. a ticker reused by another company years later.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import math
from collections.abc import Sequence

import numpy as np

__all__ = [
    "FEATURE_NAMES",
    "N_FEATURES",
    "MIN_HISTORY",
    "DEFAULT_WINDOW",
    "BarPoint",
    "StepResult",
    "SymbolHistory",
    "compute_features",
    "log_return",
    "FeatureVector",
]

FEATURE_NAMES: tuple[str, ...] = (
    "log_return_1",
    "log_return_5",
    "sma_gap_10",
    "sma_gap_20",
    "volatility_20",
    "rsi_14",
    "range_ratio",
    "volume_z_20",
)
N_FEATURES = len(FEATURE_NAMES)
MIN_HISTORY = 21
"""Bars needed before the first feature vector (20 returns need 21 prices)."""
DEFAULT_WINDOW = 20
"""LSTM timesteps N: a window is the last N feature vectors, shape ``[N, N_FEATURES]``."""

LARGE_MOVE = math.log(1.3)
"""|log return| above ln(1.3), a 30 % gap, flags ``large_move`` (ARCHITECTURE.md: flag, not
block)."""


@dataclasses.dataclass(frozen=True)
class BarPoint:
    """The part of a bar the features use.

    Attributes:
        session_date: exchange-local session date.
        ordinal: session ordinal from the exchange calendar (consecutive sessions differ by 1).
        price: feature price (adjusted close), quote currency, > 0.
        high, low, close: the bar's prices on the source's basis (> 0).
        volume: shares, or None.
    """

    session_date: dt.date
    ordinal: float
    price: float
    high: float
    low: float
    close: float
    volume: float | None


def log_return(p1: float, p0: float) -> float:
    """ln(p1 / p0) for positive prices."""
    return math.log(p1 / p0)


def _mean(xs: Sequence[float]) -> float:
    return math.fsum(xs) / len(xs)


def _std(xs: Sequence[float]) -> float:
    m = _mean(xs)
    return math.sqrt(math.fsum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def compute_features(history: Sequence[BarPoint]) -> tuple[float, ...]:
    """Feature vector for the last bar of ``history`` (oldest first), in ``FEATURE_NAMES`` order.

    Args:
        history: at least ``MIN_HISTORY`` consecutive bars of one instrument and source.

    Returns:
        ``N_FEATURES`` floats.

    Raises:
        ValueError: if fewer than ``MIN_HISTORY`` bars are given.
    """
    if len(history) < MIN_HISTORY:
        raise ValueError(f"need {MIN_HISTORY} bars, got {len(history)}")
    h = list(history)[-MIN_HISTORY:]
    p = [b.price for b in h]
    rets = [math.log(p[i] / p[i - 1]) for i in range(1, len(p))]  # 20 returns
    last = h[-1]
    diffs = [p[i] - p[i - 1] for i in range(len(p) - 14, len(p))]
    gains = math.fsum(d for d in diffs if d > 0)
    losses = math.fsum(-d for d in diffs if d < 0)
    rsi = 0.5 if gains + losses == 0 else gains / (gains + losses)
    vols = [math.log1p(b.volume) if b.volume is not None and b.volume >= 0 else None
            for b in h[-20:]]
    if any(v is None for v in vols):
        vz = 0.0
    else:
        sd = _std(vols)  # type: ignore[arg-type]
        vz = 0.0 if sd == 0 else (vols[-1] - _mean(vols)) / sd  # type: ignore[operator,arg-type]
    return (
        rets[-1],
        math.log(p[-1] / p[-6]),
        p[-1] / _mean(p[-10:]) - 1.0,
        p[-1] / _mean(p[-20:]) - 1.0,
        _std(rets),
        rsi,
        (last.high - last.low) / last.close,
        vz,
    )


@dataclasses.dataclass(frozen=True)
class StepResult:
    """What pushing one bar into a ``SymbolHistory`` produced.

    Attributes:
        features: the bar's feature vector, or None while history is too short.
        window: ``float32 [window, N_FEATURES]`` ending at this bar, or None while too short.
        prev_price: the previous bar's feature price (None for the first bar after a reset).
        flags: quality flags raised on this bar (``gap``, ``history_reset``, ``large_move``).
    """

    features: tuple[float, ...] | None
    window: np.ndarray | None
    prev_price: float | None
    prev_close: float | None
    flags: tuple[str, ...]


class SymbolHistory:
    """Ordered per-instrument history: push bars in event-time order, get features and windows.

    Args:
        window: LSTM timesteps N.
        max_gap_sessions: a gap of more sessions than this resets the history.

    The state is small (the last ``MIN_HISTORY`` bars and the last ``window`` feature vectors)
    and picklable, so a Beam stateful DoFn keeps it in a ``ReadModifyWriteState``.
    """

    def __init__(self, window: int = DEFAULT_WINDOW, max_gap_sessions: int = 5) -> None:
        self.window = window
        self.max_gap_sessions = max_gap_sessions
        self.bars: collections.deque[BarPoint] = collections.deque(maxlen=MIN_HISTORY)
        self.feats: collections.deque[tuple[float, ...]] = collections.deque(maxlen=window)

    def reset(self) -> None:
        """Forget all history (new source, long gap)."""
        self.bars.clear()
        self.feats.clear()

    def push(self, bar: BarPoint) -> StepResult:
        """Add the next bar (strictly later than the last one) and compute what it enables.

        Raises:
            ValueError: if ``bar`` is not later than the previous bar (callers order first).
        """
        flags: list[str] = []
        prev = self.bars[-1] if self.bars else None
        if prev is not None:
            if bar.session_date <= prev.session_date:
                raise ValueError(f"out of order: {bar.session_date} after {prev.session_date}")
            gap = bar.ordinal - prev.ordinal
            if gap > self.max_gap_sessions:
                flags.append("history_reset")
                self.reset()
                prev = None
            elif gap > 1:
                flags.append("gap")
        if prev is not None and abs(math.log(bar.price / prev.price)) > LARGE_MOVE:
            flags.append("large_move")
        self.bars.append(bar)
        feats = None
        window = None
        if len(self.bars) >= MIN_HISTORY:
            feats = compute_features(self.bars)
            self.feats.append(feats)
            if len(self.feats) == self.window:
                window = np.asarray(self.feats, dtype=np.float32)
        return StepResult(feats, window, prev.price if prev else None,
                          prev.close if prev else None, tuple(flags))


@dataclasses.dataclass(frozen=True)
class FeatureVector:
    """The features of one instrument's session (``FEATURE_NAMES`` order).

    Attributes:
        instrument_id: exchange-qualified id.
        source: the source whose bars fed the features.
        session_date: exchange-local session date.
        event_time: the session's close (UTC aware).
        values: ``N_FEATURES`` floats (returns as log returns, ratios unitless).
    """

    instrument_id: str
    source: str
    session_date: dt.date
    event_time: dt.datetime
    values: tuple[float, ...]

    @classmethod
    def from_window(cls, element: tuple[object, np.ndarray]) -> FeatureVector:
        """The last feature vector of a ``ComputeFeatures`` window.

        Args:
            element: ``(PredictionContext, ndarray[window, N_FEATURES])``.

        Raises:
            ValueError: if the window's last axis is not ``N_FEATURES`` long.
        """
        ctx, window = element  # ctx: transforms.ordering's PredictionContext
        last = np.asarray(window)[-1]
        if last.shape != (len(FEATURE_NAMES),):
            raise ValueError(f"window rows have shape {last.shape}, want ({len(FEATURE_NAMES)},)")
        return cls(ctx.instrument_id, ctx.source, ctx.as_of_date,  # type: ignore[attr-defined]
                   ctx.as_of_time,  # type: ignore[attr-defined]
                   tuple(last.tolist()))

    @property
    def insert_id(self) -> str:
        """``{instrument_id}/{source}/{yyyymmdd}``: deterministic, so a replay has the same id."""
        return f"{self.instrument_id}/{self.source}/{self.session_date:%Y%m%d}"
