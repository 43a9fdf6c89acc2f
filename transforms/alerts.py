"""Market alert rules from a config file, evaluated in the stream.

Rules (``config/alert_rules.yaml``):

* ``price_cross``: the close crosses ``level`` (quote currency) between two consecutive bars of
  the feature source: ``prev < level <= close`` fires ``above``, ``prev > level >= close`` fires
  ``below`` (``direction``: above | below | both);
* ``pct_move``: ``|P_t / P_{t-1} - 1| >= threshold`` on the feature price (adjusted close);
* ``predicted_move``: ``|exp(predicted_log_return) - 1| >= threshold``.

``symbols`` lists aliases or instrument ids; ``"*"`` matches every instrument. Per-event rules fire
on the event; the stream emits market-level ``AlertEvent``s and the notification service matches
them against users' rules. Alert ids are deterministic (``{rule}/{instrument}/{yyyymmdd}``), so a
replay alerts once.

``ComputePredictedMoveAlerts``: ``PCollection[Prediction]`` → ``PCollection[AlertEvent]``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Sequence
from pathlib import Path

import apache_beam as beam
import yaml

from miraikakaku.instruments import load_master
from miraikakaku.schema import AlertEvent, Prediction, PriceEvent

__all__ = ["AlertRule", "load_rules", "evaluate_price_rules", "evaluate_prediction_rules",
           "DetectPriceCrossings",
           "ComputePredictedMoveAlerts", "KINDS"]

KINDS = ("price_cross", "pct_move", "predicted_move")


@dataclasses.dataclass(frozen=True)
class AlertRule:
    """One market alert rule (see the module docstring for the semantics).

    Attributes:
        rule_id: unique id.
        kind: one of ``KINDS``.
        instruments: instrument ids it applies to; empty = all.
        level: price level for ``price_cross`` (quote currency).
        direction: ``above``, ``below`` or ``both`` for ``price_cross``.
        threshold: fraction for ``pct_move`` / ``predicted_move`` (0.05 = 5 %).
    """

    rule_id: str
    kind: str
    instruments: frozenset[str] = frozenset()
    level: float | None = None
    direction: str = "both"
    threshold: float | None = None

    def applies_to(self, instrument_id: str) -> bool:
        """True if the rule covers the instrument."""
        return not self.instruments or instrument_id in self.instruments


def load_rules(path: str | Path) -> list[AlertRule]:
    """Read and check a rules file.

    Raises:
        FileNotFoundError: no such file.
        ValueError: a rule with an unknown kind, a missing level/threshold, a bad direction or a
            duplicate id (the message names the rule).
    """
    data = yaml.safe_load(Path(path).read_text()) or {}
    master = load_master()
    rules: list[AlertRule] = []
    seen: set[str] = set()
    for i, r in enumerate(data.get("rules", [])):
        rid = str(r.get("id") or f"rule-{i}")
        kind = r.get("kind")
        if kind not in KINDS:
            raise ValueError(f"rule {rid}: unknown kind {kind!r} (expected one of {KINDS})")
        if rid in seen:
            raise ValueError(f"rule {rid}: duplicate id")
        seen.add(rid)
        symbols = r.get("symbols") or ["*"]
        ids = frozenset() if "*" in symbols else frozenset(
            master.resolve(str(s)).instrument_id for s in symbols)
        direction = r.get("direction", "both")
        if direction not in ("above", "below", "both"):
            raise ValueError(f"rule {rid}: direction must be above, below or both")
        level = r.get("level")
        threshold = r.get("threshold")
        if kind == "price_cross" and (level is None or float(level) <= 0):
            raise ValueError(f"rule {rid}: price_cross needs a positive level")
        if kind != "price_cross" and (threshold is None or float(threshold) <= 0):
            raise ValueError(f"rule {rid}: {kind} needs a positive threshold")
        rules.append(AlertRule(rid, kind, ids, float(level) if level is not None else None,
                               direction, float(threshold) if threshold is not None else None))
    return rules


def _alert(rule: AlertRule, instrument_id: str, event_time, session_date, value: float,
           threshold: float, message: str) -> AlertEvent:
    return AlertEvent(f"{rule.rule_id}/{instrument_id}/{session_date:%Y%m%d}", rule.rule_id,
                      rule.kind, instrument_id, event_time, session_date, value, threshold, message)


def evaluate_price_rules(rules: Sequence[AlertRule], event: PriceEvent, prev_close: float | None,
                         prev_price: float | None) -> Iterator[AlertEvent]:
    """Alerts fired by one bar of the feature source.

    Args:
        rules: all rules (non-price kinds are skipped).
        event: the bar.
        prev_close: previous bar's close on the same basis (None after a reset).
        prev_price: previous bar's feature price (None after a reset).
    """
    for rule in rules:
        if not rule.applies_to(event.instrument_id):
            continue
        if rule.kind == "price_cross" and prev_close is not None and rule.level is not None:
            lvl, c = rule.level, event.close
            up = prev_close < lvl <= c
            down = prev_close > lvl >= c
            if (up and rule.direction in ("above", "both")) or (
                    down and rule.direction in ("below", "both")):
                word = "above" if up else "below"
                yield _alert(rule, event.instrument_id, event.event_time, event.session_date, c,
                             lvl, f"{event.symbol} closed {word} {lvl:g} {event.currency} at "
                                  f"{c:g} (previous close {prev_close:g})")
        elif rule.kind == "pct_move" and prev_price is not None and rule.threshold is not None:
            move = event.feature_price / prev_price - 1.0
            if abs(move) >= rule.threshold:
                yield _alert(rule, event.instrument_id, event.event_time, event.session_date,
                             move, rule.threshold,
                             f"{event.symbol} moved {move:+.1%} on {event.session_date}")


def evaluate_prediction_rules(rules: Sequence[AlertRule], p: Prediction) -> Iterator[AlertEvent]:
    """Alerts fired by one prediction (``predicted_move`` rules)."""
    move = math.expm1(p.predicted_log_return)
    for rule in rules:
        if (rule.kind == "predicted_move" and rule.threshold is not None
                and rule.applies_to(p.instrument_id) and abs(move) >= rule.threshold):
            yield _alert(rule, p.instrument_id, p.as_of_time, p.as_of_date, move, rule.threshold,
                         f"{p.instrument_id}: model {p.model_name} v{p.model_version} predicts "
                         f"{move:+.1%} for {p.target_date}")


class ComputePredictedMoveAlerts(beam.PTransform):
    """``PCollection[Prediction]`` → ``PCollection[AlertEvent]`` for ``predicted_move`` rules."""

    def __init__(self, rules: Sequence[AlertRule]) -> None:
        super().__init__()
        self._rules = [r for r in rules if r.kind == "predicted_move"]

    def expand(self, predictions):
        rules = self._rules
        return predictions | "EvaluatePredictionRules" >> beam.FlatMap(
            lambda p: list(evaluate_prediction_rules(rules, p)))


class _PriceCrossingFn(beam.DoFn):
    from apache_beam.coders import FloatCoder as _FloatCoder
    from apache_beam.transforms.userstate import ReadModifyWriteStateSpec as _Spec

    LAST = _Spec("last_price", _FloatCoder())

    def __init__(self, rules: Sequence[AlertRule]) -> None:
        self._rules = [r for r in rules if r.kind == "price_cross"]

    def process(self, element, last=beam.DoFn.StateParam(LAST)):
        _, trade = element
        prev = last.read()
        yield from evaluate_price_rules(self._rules, trade, prev, None)
        last.write(trade.close)


class DetectPriceCrossings(beam.PTransform):
    """``PCollection[PriceEvent]`` (trades, in arrival order per instrument) →
    ``PCollection[AlertEvent]``: per-event ``price_cross`` rules fire on the trade that crosses,
    without waiting for a window. The alert id is per rule, instrument and session day, so a price
    flapping around the level alerts once a day (the sinks are idempotent on the id)."""

    def __init__(self, rules: Sequence[AlertRule]) -> None:
        super().__init__()
        self._fn = _PriceCrossingFn(rules)

    def expand(self, trades):
        import typing

        return (trades
                | "KeyByInstrument" >> beam.Map(lambda e: (e.instrument_id, e))
                | "Detect" >> beam.ParDo(self._fn).with_input_types(
                    beam.typehints.Tuple[str, typing.Any]))
