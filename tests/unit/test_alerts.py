"""Market alert rules: loading, and each kind firing (and not firing) on real prices."""

from __future__ import annotations

import dataclasses
import datetime as dt
import math

import pytest

from miraikakaku.instruments import load_master
from miraikakaku.schema import Prediction
from miraikakaku.settings import Settings
from tests.conftest import SP500, read_rows
from transforms.alerts import (
    AlertRule,
    evaluate_prediction_rules,
    evaluate_price_rules,
    load_rules,
)
from transforms.parsing import file_spec, parse_line

pytestmark = pytest.mark.unit


def _aapl(date: str):
    header, rows = read_rows(SP500, {"AAPL"})
    row = next(r for r in rows if r[1] == date)
    return parse_line(",".join(row), file_spec(SP500).columns, default_source="sp500_5yr",
                      master=load_master())


def test_the_shipped_rules_file_loads():
    rules = load_rules(Settings().alert_rules_path)
    assert {r.kind for r in rules} == {"price_cross", "pct_move", "predicted_move"}
    cross = next(r for r in rules if r.rule_id == "aapl-crosses-170")
    assert cross.instruments == {"XNAS:AAPL"} and cross.level == 170.0


@pytest.mark.parametrize("text,msg", [
    ("rules: [{id: a, kind: nope}]", "unknown kind"),
    ("rules: [{id: a, kind: price_cross}]", "positive level"),
    ("rules: [{id: a, kind: pct_move, threshold: -1}]", "positive threshold"),
    ("rules: [{id: a, kind: price_cross, level: 1, direction: sideways}]", "direction"),
    ("rules: [{id: a, kind: pct_move, threshold: 0.1}, {id: a, kind: pct_move, threshold: 0.2}]",
     "duplicate"),
])
def test_bad_rules_are_refused_with_the_rule_named(tmp_path, text, msg):
    path = tmp_path / "rules.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=msg):
        load_rules(path)


def test_price_cross_fires_on_the_crossing_day_only():
    # real rows: AAPL closed 174.81 on 2017-11-07 and 176.24 on 2017-11-08, crossing 175 upwards
    today, before = _aapl("2017-11-08"), _aapl("2017-11-07")
    assert (before.close, today.close) == (174.81, 176.24)
    above = AlertRule("up", "price_cross", frozenset({"XNAS:AAPL"}), level=175.0,
                      direction="above")
    below = dataclasses.replace(above, rule_id="down", direction="below")
    both = dataclasses.replace(above, rule_id="both", direction="both")
    fired = list(evaluate_price_rules([below, above, both], today, before.close, before.close))
    assert [a.rule_id for a in fired] == ["up", "both"] and fired[0].value == 176.24
    assert fired[0].alert_id == "up/XNAS:AAPL/20171108"
    # the next day back below 175 would fire "down"; staying above fires nothing
    assert not list(evaluate_price_rules([above, both], today, today.close, today.close))
    back = list(evaluate_price_rules([below, above], before, today.close, today.close))
    assert [a.rule_id for a in back] == ["down"]
    other = dataclasses.replace(above, instruments=frozenset({"XNYS:IBM"}))
    assert not list(evaluate_price_rules([other], today, before.close, before.close))


def test_pct_move_uses_the_feature_price():
    today = _aapl("2017-11-08")
    rule = AlertRule("m", "pct_move", threshold=0.05)
    assert not list(evaluate_price_rules([rule], today, None, today.close * 1.04))
    (a,) = evaluate_price_rules([rule], today, None, today.close * 1.06)
    assert math.isclose(a.value, 1 / 1.06 - 1)


def test_predicted_move_threshold():
    p = Prediction("XNAS:AAPL", "sp500_5yr", dt.date(2018, 2, 7),
                   dt.datetime(2018, 2, 7, 21, tzinfo=dt.timezone.utc), dt.date(2018, 2, 8),
                   159.54, math.log(1.04), 159.54 * 1.04, "lstm_daily", "1")
    rule = AlertRule("p", "predicted_move", threshold=0.03)
    (a,) = evaluate_prediction_rules([rule], p)
    assert math.isclose(a.value, 0.04) and "v1" in a.message
    assert not list(evaluate_prediction_rules([dataclasses.replace(rule, threshold=0.05)], p))
