"""Expectation suites in code, one per record kind, each expectation with a severity.

Severities (../shared/ARCHITECTURE.md, "The stream's core"):

* **block** → the row is dead-lettered with the rule's name as the reason (structurally
  impossible: a missing or non-numeric field, a price ≤ 0, high < low, volume < 0);
* **flag** → the row is stored with the rule's name as a quality flag (suspicious but possibly
  real: open/close outside [low, high], zero volume, a time outside the exchange session, a time
  that does not increase, a duplicate key, a return beyond k standard deviations, a gap).

The price rules keep the semantics and reason names of ``transforms.validation.validate_event``
(``non_positive_price``, ``high_below_low``, ``negative_volume`` block; ``ohlc_inconsistent``,
``zero_volume`` flag), so the main job's counts stay explainable; ``missing_field`` and
``bad_number`` are the parser's reasons (``transforms.parsing``), repeated here for frames that
do not come through the parser (a table, a feature frame).

Each ``Rule`` wraps one GX expectation whose ``meta`` carries ``{"rule": name, "severity": ...}``.
A rule name may appear on several expectations (``missing_field`` on each required column); a row
fails the rule when it fails any of them. Rules on derived columns (``in_session``,
``time_increasing``, ``return_z``, ``session_gap``, ``intraday_gap_bars``) need
``quality.validate.prepare`` (batch) or the row-level derivation that ``validate_frame`` does
itself (``in_session``); ``validate_frame`` skips a rule whose columns the frame lacks.

Per-instrument rules and their sources:

* ``large_move`` (flag): ``|z| > LARGE_MOVE_K`` where ``z = (r_t - mean) / std`` of the previous
  ``LARGE_MOVE_WINDOW`` one-bar log returns of the feature price (adjusted close, else close) of
  the same instrument, source and interval (ddof=1, at least ``LARGE_MOVE_MIN_PERIODS``
  returns). A k-sigma rule as in ARCHITECTURE.md ("a return beyond k σ"); k = 8 with a 60-session
  window was chosen on the S&P 500 five-year file (see ``LARGE_MOVE_K``).
* ``gap`` (flag, daily bars): sessions of the instrument's exchange calendar
  (``miraikakaku.calendars``, from exchange_calendars) missing between two consecutive bars of one
  instrument, source and interval (e.g. DHR and ES 2015-03-09..20 in the S&P 500 file).
* ``intraday_gap`` (flag, intraday bars): bars missing between two consecutive bars of one
  session, both inside the regular session.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Sequence
from typing import Any, Literal

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")  # offline: no usage statistics

import great_expectations as gx  # noqa: E402
import great_expectations.expectations as gxe  # noqa: E402

from transforms.features import FEATURE_NAMES, LARGE_MOVE  # noqa: E402

__all__ = [
    "Rule",
    "QualitySuite",
    "SUITES",
    "KINDS",
    "get_suite",
    "BLOCK",
    "FLAG",
    "LARGE_MOVE_K",
    "LARGE_MOVE_WINDOW",
    "LARGE_MOVE_MIN_PERIODS",
    "VOLUME_Z_BOUND",
    "REQUIRED",
    "NUMBERS",
    "RANGE_LIMITS",
    "KEY_COLUMNS",
]

BLOCK: Literal["block"] = "block"
FLAG: Literal["flag"] = "flag"
Severity = Literal["block", "flag"]

LARGE_MOVE_K = 8.0
"""k of the ``large_move`` rule: |return z-score| above k flags the bar.

On the S&P 500 five-year file (495,552 parsed daily bars) k = 8 over a 60-session window flags
the README's bad prints (NWL 2017-09-14 and the next day's reversal, LNT 2016-05-19) and the big
genuine moves (spin-offs, earnings gaps) while staying below ~0.1 % of bars; the normal-tail
probability of 8σ is ~1e-15, so what it flags is a fat-tail event or a bad print."""
LARGE_MOVE_WINDOW = 60
"""Returns (sessions for daily bars, about three months) the ``large_move`` z-score looks back."""
LARGE_MOVE_MIN_PERIODS = 20
"""Fewest previous returns for a z-score; before that the rule does not evaluate the bar."""
RANGE_LIMITS = {"1d": 1.5, "intraday": 1.2}
"""Largest plausible high/low ratio of one bar (``extreme_range`` flag); the thresholds of the
shared data's own checks (../shared/data/README.md, "How this was checked": high/low ratios over
1.5 daily or 1.2 intraday), which single out e.g. XL 2015-08-24 low 5.40 against close 36.79."""
VOLUME_Z_BOUND = 19 / math.sqrt(20)
"""Largest |z| a value can have within its own sample of n = 20 (ddof = 1): (n - 1) / √n
(Samuelson's inequality, 1968). ``volume_z_20`` beyond it is a computation error."""
_FINITE = 1e300  # |x| <= this is finite; ±inf fails (NaN is caught by the not-null rules)

PRICE_COLUMNS = ("open", "high", "low", "close")
REQUIRED: dict[str, tuple[str, ...]] = {
    "price_events": ("instrument_id", "source", "interval", "event_time", *PRICE_COLUMNS),
    "features": ("instrument_id", "source", "session_date", "event_time"),
    "predictions": ("instrument_id", "source", "as_of_date", "as_of_time", "target_date",
                    "base_price", "predicted_log_return", "predicted_price", "model_name"),
}
"""Columns whose null fails ``missing_field`` (derived column ``required_present``)."""
REQUIRED["bars"] = REQUIRED["price_events"]
NUMBERS: dict[str, tuple[tuple[str, ...], bool]] = {
    "price_events": ((*PRICE_COLUMNS, "volume", "adj_close"), True),
    "features": (FEATURE_NAMES, False),
    "predictions": (("base_price", "predicted_log_return", "predicted_price"), True),
}
"""Numeric columns checked by ``bad_number``/``non_finite`` (derived column ``numbers_ok``):
(columns, whether null is allowed there). A value passes when it converts to a finite float."""
NUMBERS["bars"] = NUMBERS["price_events"]
KEY_COLUMNS = ("instrument_id", "source", "interval", "start", "sequence")
"""Row key of a price event / bar: (instrument, source, interval, start) plus the per-source
sequence (0 for bars; distinguishes trades sharing a timestamp)."""


@dataclasses.dataclass(frozen=True)
class Rule:
    """One expectation with a severity.

    Attributes:
        name: stable snake_case rule name: the dead-letter reason (block) or quality flag (flag).
        severity: ``block`` or ``flag``.
        expectation: the GX expectation; its ``meta`` is ``{"rule": name, "severity": severity}``.
        description: what the rule checks, in one sentence.
    """

    name: str
    severity: Severity
    expectation: gxe.Expectation
    description: str

    @property
    def columns(self) -> tuple[str, ...]:
        """The frame columns the expectation reads."""
        e = self.expectation
        cols: list[str] = []
        for attr in ("column", "column_A", "column_B"):
            value = getattr(e, attr, None)
            if isinstance(value, str):
                cols.append(value)
        cols.extend(getattr(e, "column_list", None) or ())
        return tuple(cols)


def _rule(name: str, severity: Severity, cls: type, description: str, **kwargs: Any) -> Rule:
    return Rule(name, severity, cls(meta={"rule": name, "severity": severity},
                                    notes=f"{severity} `{name}`: {description}", **kwargs),
                description)


def _price_rules() -> list[Rule]:
    """Rules shared by price events and bars (columns: ``quality.validate.events_to_frame``).

    One expectation per rule (GX's per-expectation planning costs ~10-20 ms, so a micro-batch
    suite stays small): multi-column checks read a row-level derived column that
    ``quality.validate.add_row_columns`` computes (``required_present``, ``numbers_ok``,
    ``min_price``, ``ohlc_consistent``, ``in_session``).
    """
    cols = ", ".join(("instrument_id", "source", "interval", "event_time", *PRICE_COLUMNS))
    nums = ", ".join((*PRICE_COLUMNS, "volume", "adj_close"))
    return [
        _rule("missing_field", BLOCK, gxe.ExpectColumnValuesToBeInSet,
              f"types and nulls: {cols} are all present (required_present)",
              column="required_present", value_set=[True]),
        _rule("bad_number", BLOCK, gxe.ExpectColumnValuesToBeInSet,
              f"types: {nums} are finite numbers or null (numbers_ok)",
              column="numbers_ok", value_set=[True]),
        _rule("non_positive_price", BLOCK, gxe.ExpectColumnValuesToBeBetween,
              "open, high, low, close and adj_close (when present) > 0 (min_price > 0)",
              column="min_price", min_value=0, strict_min=True),
        _rule("high_below_low", BLOCK, gxe.ExpectColumnPairValuesAToBeGreaterThanB,
              "high >= low", column_A="high", column_B="low", or_equal=True,
              ignore_row_if="either_value_is_missing"),
        _rule("negative_volume", BLOCK, gxe.ExpectColumnValuesToBeBetween,
              "volume >= 0 (null volume, e.g. an index, is not evaluated)",
              column="volume", min_value=0),
        _rule("ohlc_inconsistent", FLAG, gxe.ExpectColumnValuesToBeInSet,
              "open and close inside [low, high] (ohlc_consistent)",
              column="ohlc_consistent", value_set=[True]),
        _rule("extreme_range", FLAG, gxe.ExpectColumnPairValuesAToBeGreaterThanB,
              "high / low <= RANGE_LIMITS (1.5 daily, 1.2 intraday; hl_limit >= hl_ratio): a "
              "bad print such as the 2015-08-24 flash-crash lows", column_A="hl_limit",
              column_B="hl_ratio", or_equal=True, ignore_row_if="either_value_is_missing"),
        _rule("zero_volume", FLAG, gxe.ExpectColumnValuesToBeBetween,
              "volume > 0 (Yahoo's phantom holiday rows, outage rows)",
              column="volume", min_value=0, strict_min=True),
        _rule("outside_session", FLAG, gxe.ExpectColumnValuesToBeInSet,
              "the bar lies inside a regular session of the instrument's exchange calendar "
              "(daily: the date is a session; intraday: the bar's start is within "
              "[open, close)) (in_session)", column="in_session", value_set=[True]),
        _rule("time_not_increasing", FLAG, gxe.ExpectColumnValuesToBeInSet,
              "event time increases row after row per (instrument, source, interval) "
              "(time_increasing)", column="time_increasing", value_set=[True]),
        _rule("duplicate_key", FLAG, gxe.ExpectCompoundColumnsToBeUnique,
              "no two rows share (instrument, source, interval, start, sequence); every row of "
              "a repeated key is flagged", column_list=list(KEY_COLUMNS)),
        _rule("large_move", FLAG, gxe.ExpectColumnValuesToBeBetween,
              f"|return z-score| <= {LARGE_MOVE_K:g} against the previous {LARGE_MOVE_WINDOW} "
              "returns (return_z)", column="return_z", min_value=-LARGE_MOVE_K,
              max_value=LARGE_MOVE_K),
        _rule("gap", FLAG, gxe.ExpectColumnValuesToBeBetween,
              "no exchange session missing between two daily bars of one instrument "
              "(session_gap)", column="session_gap", max_value=0),
        _rule("intraday_gap", FLAG, gxe.ExpectColumnValuesToBeBetween,
              "no bar missing between two bars inside one regular session "
              "(intraday_gap_bars)", column="intraday_gap_bars", max_value=0),
    ]


def _feature_rules() -> list[Rule]:
    """Rules on feature vectors (``transforms.features.FeatureVector``; columns: ``quality.validate
    .features_to_frame``, one column per ``FEATURE_NAMES``)."""
    rules: list[Rule] = [
        _rule("missing_field", BLOCK, gxe.ExpectColumnValuesToBeInSet,
              "types and nulls: instrument_id, source, session_date, event_time present "
              "(required_present)", column="required_present", value_set=[True]),
        _rule("non_finite", BLOCK, gxe.ExpectColumnValuesToBeInSet,
              "every feature is a finite number, not null/NaN/inf (numbers_ok)",
              column="numbers_ok", value_set=[True]),
    ]
    bounds: list[tuple[str, float | None, float | None, bool, str]] = [
        ("rsi_14", 0.0, 1.0, False, "Cutler's RSI as a fraction: 0 <= rsi_14 <= 1"),
        ("volatility_20", 0.0, None, False, "a standard deviation: volatility_20 >= 0"),
        ("range_ratio", 0.0, None, False, "(high - low) / close >= 0"),
        ("sma_gap_10", -1.0, None, True, "P / SMA - 1 > -1 for positive prices"),
        ("sma_gap_20", -1.0, None, True, "P / SMA - 1 > -1 for positive prices"),
        ("volume_z_20", -VOLUME_Z_BOUND, VOLUME_Z_BOUND, False,
         "|z| <= 19/sqrt(20) within its own 20-bar sample (Samuelson)"),
    ]
    for col, lo, hi, strict, text in bounds:
        rules.append(_rule("out_of_range", BLOCK, gxe.ExpectColumnValuesToBeBetween, text,
                           column=col, min_value=lo, max_value=hi, strict_min=strict))
    rules.append(_rule("large_move", FLAG, gxe.ExpectColumnValuesToBeBetween,
                       "|log_return_1| <= ln(1.3) (transforms.features.LARGE_MOVE)",
                       column="log_return_1", min_value=-LARGE_MOVE, max_value=LARGE_MOVE))
    rules.append(_rule("duplicate_key", FLAG, gxe.ExpectCompoundColumnsToBeUnique,
                       "one feature vector per (instrument, source, session)",
                       column_list=["instrument_id", "source", "session_date"]))
    return rules


def _prediction_rules() -> list[Rule]:
    """Rules on predictions (``miraikakaku.schema.Prediction``; columns: ``quality.validate
    .predictions_to_frame``)."""
    rules: list[Rule] = [
        _rule("missing_field", BLOCK, gxe.ExpectColumnValuesToBeInSet,
              "types and nulls: " + ", ".join(REQUIRED["predictions"]) + " present "
              "(required_present)", column="required_present", value_set=[True]),
        _rule("missing_model_version", BLOCK, gxe.ExpectColumnValuesToBeInSet,
              "model_version is a non-empty string (model_version_present)",
              column="model_version_present", value_set=[True]),
        _rule("non_finite", BLOCK, gxe.ExpectColumnValuesToBeInSet,
              "base_price, predicted_log_return, predicted_price are finite numbers "
              "(numbers_ok)", column="numbers_ok", value_set=[True]),
    ]
    rules += [_rule("non_positive_price", BLOCK, gxe.ExpectColumnValuesToBeBetween,
                    f"{c} > 0", column=c, min_value=0, strict_min=True)
              for c in ("base_price", "predicted_price")]
    rules.append(_rule("target_not_after_as_of", BLOCK, gxe.ExpectColumnPairValuesAToBeGreaterThanB,
                       "target_date > as_of_date", column_A="target_date", column_B="as_of_date",
                       or_equal=False, ignore_row_if="either_value_is_missing"))
    rules.append(_rule("bad_role", BLOCK, gxe.ExpectColumnValuesToBeInSet,
                       "role is champion or challenger (schema.PREDICTION_ROLES)",
                       column="role", value_set=["champion", "challenger"]))
    rules.append(_rule("large_move", FLAG, gxe.ExpectColumnValuesToBeBetween,
                       "|predicted_log_return| <= ln(1.3)", column="predicted_log_return",
                       min_value=-LARGE_MOVE, max_value=LARGE_MOVE))
    rules.append(_rule("duplicate_key", FLAG, gxe.ExpectCompoundColumnsToBeUnique,
                       "one prediction per (instrument, source, as_of_date, model, role)",
                       column_list=["instrument_id", "source", "as_of_date", "model_name",
                                    "role"]))
    return rules


class QualitySuite:
    """A named list of ``Rule``s and the GX suite built from them.

    Args:
        name: the kind (``price_events``, ``bars``, ``features``, ``predictions``).
        rules: the rules, block rules first within each column group; the first failing block
            rule of a row is its dead-letter reason.
    """

    def __init__(self, name: str, rules: Sequence[Rule]) -> None:
        self.name = name
        self.rules: tuple[Rule, ...] = tuple(rules)
        for r in self.rules:
            if r.expectation.meta != {"rule": r.name, "severity": r.severity}:
                raise ValueError(f"rule {r.name}: expectation meta {r.expectation.meta}")

    @property
    def rule_names(self) -> tuple[str, ...]:
        """Distinct rule names, in suite order."""
        return tuple(dict.fromkeys(r.name for r in self.rules))

    def severity(self, name: str) -> Severity:
        """The severity of rule ``name``.

        Raises:
            KeyError: no such rule in this suite.
        """
        for r in self.rules:
            if r.name == name:
                return r.severity
        raise KeyError(name)

    def select(self, names: Sequence[str] | None = None,
               columns: Sequence[str] | None = None) -> tuple[Rule, ...]:
        """The rules named in ``names`` (all when None) whose columns are all in ``columns``
        (no filter when None).

        Raises:
            KeyError: a name that is not a rule of this suite.
        """
        if names is not None:
            unknown = set(names) - set(self.rule_names)
            if unknown:
                raise KeyError(f"unknown rules for {self.name}: {sorted(unknown)}")
        have = None if columns is None else set(columns)
        return tuple(r for r in self.rules
                     if (names is None or r.name in names)
                     and (have is None or set(r.columns) <= have))

    def gx_suite(self, rules: Sequence[Rule] | None = None) -> gx.ExpectationSuite:
        """A new GX ``ExpectationSuite`` named after the kind, with the rules' expectations
        (all rules when ``rules`` is None)."""
        suite = gx.ExpectationSuite(name=f"miraikakaku_{self.name}")
        for r in (self.rules if rules is None else rules):
            suite.add_expectation(r.expectation.copy(deep=True))
        return suite

    def __repr__(self) -> str:
        return f"QualitySuite({self.name!r}, {len(self.rules)} expectations)"


SUITES: dict[str, QualitySuite] = {
    "price_events": QualitySuite("price_events", _price_rules()),
    "bars": QualitySuite("bars", _price_rules()),
    "features": QualitySuite("features", _feature_rules()),
    "predictions": QualitySuite("predictions", _prediction_rules()),
}
"""The suites by kind. ``bars`` has the same rules as ``price_events`` (a stored bar is an
event's OHLCV; the frame is built the same way)."""
KINDS = tuple(SUITES)


def get_suite(kind: str) -> QualitySuite:
    """The suite for ``kind``.

    Raises:
        KeyError: ``kind`` is not one of ``KINDS``.
    """
    try:
        return SUITES[kind]
    except KeyError:
        raise KeyError(f"unknown quality kind {kind!r}; expected one of {KINDS}") from None
