"""Prediction tracking records and math: realized outcomes and per-day error statistics.

A ``Prediction`` (made at the close of ``as_of_date`` for ``target_date``) is *realized* by the
bar of ``target_date`` from the same ``source``: its feature price (``adj_close`` when the
source has one, else ``close``, exactly as ``PriceEvent.feature_price``) is the realized price.
``make_outcome`` turns the pair into a ``PredictionOutcome``; ``aggregate_outcomes`` sums outcomes
per (model name, model version, instrument, target date) into ``ModelPerformance`` rows, which
the stores keep in the ``model_performance`` table (one column definition here,
``PERFORMANCE_COLUMNS``, feeds the SQLite DDL, the BigQuery ``TableSpec`` and the Bigtable
qualifiers); ``summarize_performance`` combines rows over a date range.

This module is pure Python (no Beam, no TensorFlow) so the stores and the API can import it; the
Beam steps are in ``transforms.tracking`` and the batch job in ``match_predictions`` here (run by
``miraikakaku track``).

Formulas (per outcome; prices in the instrument's quote currency):

* ``error = predicted_price - realized_price`` (positive: the forecast was too high);
* ``abs_error = |error|``, ``squared_error = error ** 2``;
* ``abs_pct_error = |error| / realized_price`` (a fraction);
* ``realized_log_return = ln(realized_price / base_price)``;
* ``direction_hit = sign(predicted_log_return) == sign(realized_log_return)``, None when the
  realized return is exactly 0 (no direction to hit); a zero forecast counts as a miss. This is
  the convention of ``models.training.evaluate_forecasts``.

Aggregates over n outcomes: MAE = Σ|e| / n, RMSE = sqrt(Σe² / n), MAPE = 100 · Σ(|e| / P) / n
(percent; Hyndman & Koehler, "Another look at measures of forecast accuracy", IJF 2006),
directional accuracy = hits / outcomes with a direction, mean error (bias) = Σe / n. Rows keep the
sums, so any set of rows combines exactly (``summarize_performance``).
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import json
import math
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple, Protocol, runtime_checkable

from miraikakaku.schema import Prediction

__all__ = [
    "PERFORMANCE_TABLE",
    "PERFORMANCE_COLUMNS",
    "PERFORMANCE_KEY",
    "UNMATCHED_TARGET_BAR_MISSING",
    "UNMATCHED_NO_LATER_BAR",
    "UNMATCHED_IMPLAUSIBLE_TARGET",
    "MAX_TARGET_GAP_DAYS",
    "plausible_target",
    "PredictionOutcome",
    "ModelPerformance",
    "PerformanceSummary",
    "MatchResult",
    "PerformanceStore",
    "TrackReport",
    "track_store",
    "bar_feature_price",
    "make_outcome",
    "match_predictions",
    "aggregate_outcomes",
    "summarize_performance",
    "summary_from_sums",
    "prediction_payload",
]

PERFORMANCE_TABLE = "model_performance"
"""Name of the per (model version, instrument, day) error table in every store."""

UNMATCHED_TARGET_BAR_MISSING = "target_bar_missing"
"""Bars of the instrument after ``target_date`` exist, but none on it from the prediction's
source (a hole in the data, a blocked bar, or the source stopped)."""

UNMATCHED_NO_LATER_BAR = "no_later_bar"
"""No bar on or after ``target_date`` has arrived (yet): the input ended before the target
session (the latest predictions of a bounded run) or the instrument stopped trading."""


UNMATCHED_IMPLAUSIBLE_TARGET = "implausible_target_date"
"""``target_date`` is not 1 to ``MAX_TARGET_GAP_DAYS`` days after ``as_of_date``: not a
next-session forecast (e.g. a prediction dated before the exchange calendar's first session,
whose "next session" is that first session years later). Never scored: its error would say
nothing about next-session accuracy."""

MAX_TARGET_GAP_DAYS = 14
"""Longest plausible as-of → target gap in calendar days (Golden Week, New Year closures, the
four sessions NYSE lost in September 2001 and the TSE outage of 2020-10-01 all fit)."""


def plausible_target(p: Prediction) -> bool:
    """True when ``p.target_date`` is 1 to ``MAX_TARGET_GAP_DAYS`` days after ``p.as_of_date``."""
    return 0 < (p.target_date - p.as_of_date).days <= MAX_TARGET_GAP_DAYS


class _Column(NamedTuple):
    name: str
    type: str  # BigQuery type: STRING, DATE, INTEGER, FLOAT
    required: bool
    description: str


PERFORMANCE_COLUMNS: tuple[_Column, ...] = (
    _Column("model_name", "STRING", True, "model name, e.g. lstm_daily"),
    _Column("model_version", "STRING", True, "model version (integer directory name)"),
    _Column("instrument_id", "STRING", True, "exchange-qualified id, e.g. XNAS:AAPL"),
    _Column("target_date", "DATE", True, "the realized session (the day of the row)"),
    _Column("currency", "STRING", True, "ISO 4217 currency of the price errors"),
    _Column("n", "INTEGER", True, "outcomes in the row"),
    _Column("n_direction", "INTEGER", True, "outcomes whose realized return is not 0"),
    _Column("direction_hits", "INTEGER", True, "outcomes whose forecast sign was right"),
    _Column("sum_error", "FLOAT", True, "sum of predicted - realized price"),
    _Column("sum_abs_error", "FLOAT", True, "sum of |predicted - realized| price"),
    _Column("sum_squared_error", "FLOAT", True, "sum of squared price errors"),
    _Column("sum_abs_pct_error", "FLOAT", True, "sum of |error| / realized price (fractions)"),
    _Column("mae", "FLOAT", True, "mean absolute error, price units"),
    _Column("rmse", "FLOAT", True, "root mean squared error, price units"),
    _Column("mape", "FLOAT", True, "mean absolute percentage error, percent"),
    _Column("directional_accuracy", "FLOAT", False,
            "direction_hits / n_direction; NULL when n_direction is 0"),
)
"""The one column definition of the ``model_performance`` table (order = storage order)."""

PERFORMANCE_KEY = ("model_name", "model_version", "instrument_id", "target_date")
"""Primary key of the table: one row per model version, instrument and realized session."""


def bar_feature_price(bar: Any) -> float:
    """The feature price of a bar: ``adj_close`` when present, else ``close``.

    Args:
        bar: a ``PriceEvent`` or a ``stores.base.BarRow`` (anything with ``adj_close`` and
            ``close``).

    Returns:
        The price in the bar's ``currency`` (same rule as ``PriceEvent.feature_price``).
    """
    return bar.adj_close if bar.adj_close is not None else bar.close


def _sign(x: float) -> int:
    return (x > 0) - (x < 0)


@dataclasses.dataclass(frozen=True)
class PredictionOutcome:
    """A prediction next to the price that was realized on its target session.

    Attributes:
        instrument_id: exchange-qualified id.
        source: source of the features and of the realized bar.
        currency: ISO 4217 currency of every price and price error.
        model_name, model_version: the model that made the prediction.
        as_of_date: session of the last bar the model saw.
        target_date: the forecast (and realized) session.
        base_price: feature price at ``as_of_date``.
        predicted_price: ``base_price * exp(predicted_log_return)``.
        realized_price: feature price of the ``target_date`` bar of ``source``.
        predicted_log_return: forecast ln(P_target / P_as_of).
        realized_log_return: ln(realized_price / base_price).
        error: ``predicted_price - realized_price`` (price units).
        abs_error: ``|error|``.
        squared_error: ``error ** 2`` (price units squared).
        abs_pct_error: ``|error| / realized_price`` (a fraction, 0.01 = 1 %).
        direction_hit: sign of the forecast return equals the sign of the realized one; None
            when the realized return is 0.
    """

    instrument_id: str
    source: str
    currency: str
    model_name: str
    model_version: str
    as_of_date: dt.date
    target_date: dt.date
    base_price: float
    predicted_price: float
    realized_price: float
    predicted_log_return: float
    realized_log_return: float
    error: float
    abs_error: float
    squared_error: float
    abs_pct_error: float
    direction_hit: bool | None


def make_outcome(prediction: Prediction, realized_price: float,
                 currency: str) -> PredictionOutcome:
    """Score one prediction against the realized feature price of its target session.

    Args:
        prediction: the forecast.
        realized_price: feature price of the ``target_date`` bar from ``prediction.source``.
        currency: that bar's currency.

    Returns:
        The outcome (formulas in the module docstring).

    Raises:
        ValueError: if ``realized_price`` or ``prediction.base_price`` is not a positive finite
            number, or the predicted values are not finite.
    """
    p = prediction
    for name, value in (("realized_price", realized_price), ("base_price", p.base_price)):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a positive finite price, got {value!r}")
    if not (math.isfinite(p.predicted_price) and math.isfinite(p.predicted_log_return)):
        raise ValueError(f"non-finite prediction {p.predicted_price!r}/{p.predicted_log_return!r}")
    realized = float(realized_price)
    error = float(p.predicted_price) - realized
    realized_return = math.log(realized / p.base_price)
    hit = None if realized_return == 0 else _sign(p.predicted_log_return) == _sign(realized_return)
    return PredictionOutcome(
        instrument_id=p.instrument_id, source=p.source, currency=currency,
        model_name=p.model_name, model_version=str(p.model_version), as_of_date=p.as_of_date,
        target_date=p.target_date, base_price=float(p.base_price),
        predicted_price=float(p.predicted_price), realized_price=realized,
        predicted_log_return=float(p.predicted_log_return),
        realized_log_return=realized_return, error=error, abs_error=abs(error),
        squared_error=error * error, abs_pct_error=abs(error) / realized, direction_hit=hit)


class _Sums:
    """Running sums of outcomes (the sufficient statistics of every aggregate)."""

    __slots__ = ("n", "n_direction", "hits", "err", "abs", "sq", "pct")

    def __init__(self) -> None:
        self.n = self.n_direction = self.hits = 0
        self.err = self.abs = self.sq = self.pct = 0.0

    def add_outcome(self, o: PredictionOutcome) -> None:
        self.n += 1
        self.err += o.error
        self.abs += o.abs_error
        self.sq += o.squared_error
        self.pct += o.abs_pct_error
        if o.direction_hit is not None:
            self.n_direction += 1
            self.hits += int(o.direction_hit)

    def add_row(self, r: ModelPerformance | PerformanceSummary) -> None:
        self.n += r.n
        self.n_direction += r.n_direction
        self.hits += r.direction_hits
        self.err += r.sum_error
        self.abs += r.sum_abs_error
        self.sq += r.sum_squared_error
        self.pct += r.sum_abs_pct_error

    def metrics(self) -> dict[str, Any]:
        n = self.n
        return {"n": n, "n_direction": self.n_direction, "direction_hits": self.hits,
                "sum_error": self.err, "sum_abs_error": self.abs, "sum_squared_error": self.sq,
                "sum_abs_pct_error": self.pct, "mae": self.abs / n, "rmse": math.sqrt(self.sq / n),
                "mape": 100.0 * self.pct / n,
                "directional_accuracy": self.hits / self.n_direction if self.n_direction else None}


@dataclasses.dataclass(frozen=True)
class ModelPerformance:
    """Errors of one model version on one instrument for one realized session (a table row).

    Columns are ``PERFORMANCE_COLUMNS``; the derived ``mae``/``rmse``/``mape``/
    ``directional_accuracy`` are stored next to the sums they come from. Prices in ``currency``.
    """

    model_name: str
    model_version: str
    instrument_id: str
    target_date: dt.date
    currency: str
    n: int
    n_direction: int
    direction_hits: int
    sum_error: float
    sum_abs_error: float
    sum_squared_error: float
    sum_abs_pct_error: float
    mae: float
    rmse: float
    mape: float
    directional_accuracy: float | None

    @property
    def mean_error(self) -> float:
        """Mean of predicted - realized price (bias; positive = forecasts too high)."""
        return self.sum_error / self.n

    def key(self) -> tuple[str, str, str, dt.date]:
        """``(model_name, model_version, instrument_id, target_date)``: the primary key."""
        return (self.model_name, self.model_version, self.instrument_id, self.target_date)

    @classmethod
    def from_outcomes(cls, outcomes: Sequence[PredictionOutcome]) -> ModelPerformance:
        """The row of outcomes that share one key (model, version, instrument, target date).

        Raises:
            ValueError: if ``outcomes`` is empty or mixes keys or currencies.
        """
        if not outcomes:
            raise ValueError("no outcomes")
        first = outcomes[0]
        key = (first.model_name, first.model_version, first.instrument_id, first.target_date,
               first.currency)
        sums = _Sums()
        for o in outcomes:
            if (o.model_name, o.model_version, o.instrument_id, o.target_date, o.currency) != key:
                raise ValueError(f"outcomes of different rows: {key} and {o}")
            sums.add_outcome(o)
        return cls(*key, **sums.metrics())

    def to_row(self) -> dict[str, Any]:
        """Column name → value in ``PERFORMANCE_COLUMNS`` order (dates as ``datetime.date``)."""
        return {c.name: getattr(self, c.name) for c in PERFORMANCE_COLUMNS}

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> ModelPerformance:
        """Inverse of ``to_row``; ``target_date`` may be ISO text.

        Raises:
            KeyError: if a column is missing.
        """
        values = {c.name: row[c.name] for c in PERFORMANCE_COLUMNS}
        if isinstance(values["target_date"], str):
            values["target_date"] = dt.date.fromisoformat(values["target_date"])
        for name in ("n", "n_direction", "direction_hits"):
            values[name] = int(values[name])
        return cls(**values)


@dataclasses.dataclass(frozen=True)
class PerformanceSummary:
    """Errors of one model version over several rows (e.g. one instrument over a date range).

    Attributes:
        model_name, model_version: the model.
        instrument_id: the instrument, or None when rows of several instruments are combined.
        currency: the price errors' currency, or None when rows of several currencies are
            combined (then ``mae``, ``rmse`` and ``mean_error`` are None: adding yen to dollars
            means nothing; ``mape`` and ``directional_accuracy`` are unit-free).
        first_date, last_date: first and last target date.
        n, n_direction, direction_hits, sum_*: sums over the rows.
        mae, rmse, mape, directional_accuracy, mean_error: as in the module docstring.
    """

    model_name: str
    model_version: str
    instrument_id: str | None
    currency: str | None
    first_date: dt.date
    last_date: dt.date
    n: int
    n_direction: int
    direction_hits: int
    sum_error: float
    sum_abs_error: float
    sum_squared_error: float
    sum_abs_pct_error: float
    mae: float | None
    rmse: float | None
    mape: float
    directional_accuracy: float | None
    mean_error: float | None


def summary_from_sums(model_name: str, model_version: str, instrument_id: str | None,
                      currency: str | None, first_date: dt.date, last_date: dt.date, n: int,
                      n_direction: int, direction_hits: int, sum_error: float,
                      sum_abs_error: float, sum_squared_error: float,
                      sum_abs_pct_error: float) -> PerformanceSummary:
    """Build a ``PerformanceSummary`` from summed columns (the stores sum in their query engine).

    Args:
        currency: the one currency of the rows, or None when they span several (then ``mae``,
            ``rmse`` and ``mean_error`` are None).
        Others: as the ``PerformanceSummary`` attributes.

    Raises:
        ValueError: if ``n`` is not positive.
    """
    if n <= 0:
        raise ValueError(f"a summary needs at least one outcome, got n={n}")
    priced = currency is not None
    return PerformanceSummary(
        model_name, model_version, instrument_id, currency, first_date, last_date, int(n),
        int(n_direction), int(direction_hits), float(sum_error), float(sum_abs_error),
        float(sum_squared_error), float(sum_abs_pct_error),
        mae=sum_abs_error / n if priced else None,
        rmse=math.sqrt(sum_squared_error / n) if priced else None,
        mape=100.0 * sum_abs_pct_error / n,
        directional_accuracy=direction_hits / n_direction if n_direction else None,
        mean_error=sum_error / n if priced else None)


def summarize_performance(rows: Iterable[ModelPerformance], *, by_instrument: bool = True
                          ) -> list[PerformanceSummary]:
    """Combine performance rows per (model name, version[, instrument]).

    Args:
        rows: ``ModelPerformance`` rows (any order).
        by_instrument: one summary per instrument (default) or one per model version
            (``instrument_id`` None).

    Returns:
        Summaries sorted by model name, version and instrument id; empty for no rows.
    """
    groups: dict[tuple, list[ModelPerformance]] = collections.defaultdict(list)
    for r in rows:
        iid = r.instrument_id if by_instrument else None
        groups[(r.model_name, r.model_version, iid)].append(r)
    out = []
    for (name, version, iid), group in sorted(groups.items(),
                                              key=lambda kv: (kv[0][0], kv[0][1], kv[0][2] or "")):
        sums = _Sums()
        for r in group:
            sums.add_row(r)
        currencies = {r.currency for r in group}
        out.append(summary_from_sums(
            name, version, iid, currencies.pop() if len(currencies) == 1 else None,
            min(r.target_date for r in group), max(r.target_date for r in group), sums.n,
            sums.n_direction, sums.hits, sums.err, sums.abs, sums.sq, sums.pct))
    return out


def aggregate_outcomes(outcomes: Iterable[PredictionOutcome]) -> list[ModelPerformance]:
    """Group outcomes per (model name, model version, instrument, target date).

    Returns:
        One ``ModelPerformance`` per key, sorted by key.

    Raises:
        ValueError: if one key has outcomes in two currencies.
    """
    groups: dict[tuple, list[PredictionOutcome]] = collections.defaultdict(list)
    for o in outcomes:
        groups[(o.model_name, o.model_version, o.instrument_id, o.target_date)].append(o)
    return [ModelPerformance.from_outcomes(groups[k]) for k in sorted(groups)]


def prediction_payload(p: Prediction) -> str:
    """A prediction as compact JSON (dead-letter payloads)."""
    d = dataclasses.asdict(p)
    d["as_of_date"] = p.as_of_date.isoformat()
    d["as_of_time"] = p.as_of_time.isoformat()
    d["target_date"] = p.target_date.isoformat()
    return json.dumps(d, separators=(",", ":"), sort_keys=True)


class MatchResult(NamedTuple):
    """What ``match_predictions`` found.

    Attributes:
        outcomes: one per prediction whose target bar exists.
        unmatched: ``(prediction, reason)`` for the others; reason is
            ``UNMATCHED_IMPLAUSIBLE_TARGET``, ``UNMATCHED_TARGET_BAR_MISSING`` or
            ``UNMATCHED_NO_LATER_BAR``.
    """

    outcomes: list[PredictionOutcome]
    unmatched: list[tuple[Prediction, str]]


def match_predictions(predictions: Iterable[Prediction], bars: Iterable[Any]) -> MatchResult:
    """Join predictions with the realized bars of their target sessions (the batch job's core).

    Args:
        predictions: forecasts (any instruments, models, order).
        bars: daily bars (``PriceEvent`` or ``BarRow``: ``instrument_id``, ``source``,
            ``session_date``, ``close``, ``adj_close``, ``currency``; other intervals are
            ignored). A prediction is realized by the bar of the same instrument and source on
            its ``target_date``.

    Returns:
        Outcomes in input order and the unmatched predictions with a reason (see
        ``MatchResult``): ``implausible_target_date`` (see ``plausible_target``; never scored),
        ``target_bar_missing`` when the instrument has a bar (any source) after the target
        date, else ``no_later_bar``.

    Raises:
        ValueError: for a bar with a non-positive price (``make_outcome``).
    """
    realized: dict[tuple[str, str, dt.date], tuple[float, str]] = {}
    last_date: dict[str, dt.date] = {}
    for b in bars:
        if getattr(b, "interval", "1d") != "1d":
            continue
        realized[(b.instrument_id, b.source, b.session_date)] = (bar_feature_price(b), b.currency)
        if b.session_date > last_date.get(b.instrument_id, dt.date.min):
            last_date[b.instrument_id] = b.session_date
    outcomes, unmatched = [], []
    for p in predictions:
        if not plausible_target(p):
            unmatched.append((p, UNMATCHED_IMPLAUSIBLE_TARGET))
            continue
        hit = realized.get((p.instrument_id, p.source, p.target_date))
        if hit is not None:
            outcomes.append(make_outcome(p, hit[0], hit[1]))
        elif last_date.get(p.instrument_id, dt.date.min) > p.target_date:
            unmatched.append((p, UNMATCHED_TARGET_BAR_MISSING))
        else:
            unmatched.append((p, UNMATCHED_NO_LATER_BAR))
    return MatchResult(outcomes, unmatched)


@runtime_checkable
class PerformanceStore(Protocol):
    """The part of a serving store that keeps ``model_performance`` (SQLite, Bigtable)."""

    def get_model_performance(self, model_name: str, model_version: str, *,
                              instrument_id: str | None = None, start: dt.date | None = None,
                              end: dt.date | None = None,
                              limit: int = 10_000) -> list[ModelPerformance]:
        """Rows of one model version with ``start <= target_date <= end``, ordered by
        instrument id, then target date."""

    def summarize_model_performance(self, model_name: str, model_version: str, *,
                                    instrument_id: str | None = None,
                                    start: dt.date | None = None,
                                    end: dt.date | None = None) -> list[PerformanceSummary]:
        """``summarize_performance`` of the same rows, per instrument (no row limit)."""

    def list_performance_versions(self) -> list[PerformanceSummary]:
        """One summary per (model name, version) present in the table (all instruments)."""


@dataclasses.dataclass
class TrackReport:
    """What ``track_store`` did.

    Attributes:
        instruments: instruments scanned.
        predictions: predictions read.
        outcomes: predictions matched with their realized bar.
        unmatched: unmatched predictions per reason.
        rows_written: ``model_performance`` rows written.
        versions: one ``PerformanceSummary`` per model name and version over this run's rows.
        seconds: wall time.
    """

    instruments: int = 0
    predictions: int = 0
    outcomes: int = 0
    unmatched: dict[str, int] = dataclasses.field(default_factory=dict)
    rows_written: int = 0
    versions: list[PerformanceSummary] = dataclasses.field(default_factory=list)
    seconds: float = 0.0


def _combine(parts: Sequence[PerformanceSummary]) -> PerformanceSummary:
    """One summary of several summaries of the same model version (sums add)."""
    sums = _Sums()
    for p in parts:
        sums.add_row(p)
    currencies = {p.currency for p in parts}
    first = parts[0]
    return summary_from_sums(
        first.model_name, first.model_version, None,
        currencies.pop() if len(currencies) == 1 else None, min(p.first_date for p in parts),
        max(p.last_date for p in parts), sums.n, sums.n_direction, sums.hits, sums.err,
        sums.abs, sums.sq, sums.pct)


def _all_predictions(store: Any, instrument_id: str) -> list[Prediction]:
    """Every stored prediction of an instrument: the champion's and, where the store keeps
    roles, the challengers' (each model version is scored on its own)."""
    import inspect

    kwargs: dict[str, Any] = {"limit": 2**62}
    if "role" in inspect.signature(store.get_predictions).parameters:
        kwargs["role"] = None
    return store.get_predictions(instrument_id, **kwargs)


def track_store(store: Any, *, instrument_ids: Sequence[str] | None = None,
                write_batch_size: int = 20_000, progress: Any = None) -> TrackReport:
    """The batch tracking job: join a serving store's predictions with its bars, write errors.

    For each instrument, reads every prediction (``store.get_predictions``, every role) and
    every daily bar of every source (``store.get_bars``), matches them (``match_predictions``),
    aggregates the outcomes per (model, version, instrument, target date)
    (``aggregate_outcomes``) and writes the rows with ``store.write_batch`` (an upsert:
    rerunning the job rewrites the same rows, and predictions realized since the last run add
    theirs).

    Args:
        store: a serving store opened for writing (``SqliteServingStore``,
            ``BigtableServingStore``).
        instrument_ids: only these instruments; default every instrument in the store.
        write_batch_size: rows per ``write_batch`` call (one transaction each on SQLite).
        progress: optional callable ``progress(done, total)`` called after each instrument.

    Returns:
        A ``TrackReport``.

    Raises:
        ValueError: for a stored bar with a non-positive price (``make_outcome``).
    """
    import time

    t0 = time.perf_counter()
    ids = list(instrument_ids) if instrument_ids is not None else [
        i.instrument_id for i in store.list_instruments()]
    report = TrackReport(instruments=len(ids))
    unmatched: collections.Counter[str] = collections.Counter()
    batch: list[ModelPerformance] = []
    per_version: dict[tuple[str, str], list[PerformanceSummary]] = collections.defaultdict(list)
    for done, iid in enumerate(ids, 1):
        preds = _all_predictions(store, iid)
        report.predictions += len(preds)
        if preds:
            result = match_predictions(preds, store.get_bars(iid, limit=2**62))
            report.outcomes += len(result.outcomes)
            unmatched.update(reason for _, reason in result.unmatched)
            rows = aggregate_outcomes(result.outcomes)
            batch.extend(rows)
            for summary in summarize_performance(rows, by_instrument=False):
                per_version[(summary.model_name, summary.model_version)].append(summary)
            if len(batch) >= write_batch_size:
                report.rows_written += store.write_batch(batch)
                batch = []
        if progress is not None:
            progress(done, len(ids))
    if batch:
        report.rows_written += store.write_batch(batch)
    report.unmatched = dict(sorted(unmatched.items()))
    report.versions = [_combine(per_version[k]) for k in sorted(per_version)]
    report.seconds = time.perf_counter() - t0
    return report
