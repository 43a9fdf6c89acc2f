"""``TrackPredictions`` on the DirectRunner with real bars (AAPL, MSFT from the S&P 500 file,
7203.T from chart0 and mlbot).

The stream's outcomes must equal the batch join's (``match_predictions``) on the same input,
whatever the arrival order, with state and timers and with the bounded ``GroupByKey`` path; a
prediction whose realized bar is missing is dead-lettered (never dropped); and with
``TestStream`` a prediction that arrives before its bar waits in state and a prediction whose
bar never comes leaves state when the watermark passes the horizon.
Run: ``pytest tests/pipeline/test_tracking.py -q``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Timestamp

from miraikakaku.schema import DeadLetter
from miraikakaku.tracking import (
    UNMATCHED_IMPLAUSIBLE_TARGET,
    ModelPerformance,
    match_predictions,
)
from tests.api.conftest import load_real_events
from tests.unit.test_tracking import momentum_predictions
from transforms.tracking import STEP, UNMATCHED_NO_REALIZED_BAR, TrackPredictions

pytestmark = pytest.mark.pipeline


@pytest.fixture(scope="module")
def events():
    return load_real_events()


def _stamp(x):
    t = x.event_time if hasattr(x, "event_time") else x.as_of_time
    return TimestampedValue(x, t.timestamp())


@pytest.mark.parametrize("bounded", [False, True], ids=["state-and-timers", "group-by-key"])
def test_stream_outcomes_equal_the_batch_join(events, bounded):
    preds = (momentum_predictions(events, "XNAS:AAPL", "sp500_5yr", 200)
             + momentum_predictions(events, "XNAS:MSFT", "sp500_5yr", 50, version="8")
             + momentum_predictions(events, "XTKS:7203", "chart0", 120))
    # A prediction dated before its exchange calendar began gets a target years later; a bar of
    # that target exists, but such a pair must not be scored. Model it with a 30-day gap.
    far = dataclasses.replace(preds[50], target_date=preds[70].target_date)
    preds.append(far)
    hole = preds[100].target_date  # AAPL's bar of that session never arrives
    bars = [e for e in events if not (e.instrument_id == "XNAS:AAPL" and e.session_date == hole)]
    bars = [e for e in bars if e.session_date >= dt.date(2017, 1, 1)]
    expected = match_predictions(preds, bars)
    assert len(expected.unmatched) == 5  # the hole, the last of each series, the far one
    with TestPipeline() as p:
        result = (p | "Predictions" >> beam.Create(preds) | "StampP" >> beam.Map(_stamp),
                  p | "Bars" >> beam.Create(bars) | "StampB" >> beam.Map(_stamp)
                  ) | TrackPredictions(horizon_days=5, bounded=bounded)
        assert_that(result.outcomes, equal_to(expected.outcomes), label="Outcomes")
        assert_that(result.performance,
                    equal_to([ModelPerformance.from_outcomes([o]) for o in expected.outcomes]),
                    label="Performance")
        assert_that(result.unmatched | beam.Map(lambda d: (d.step, d.reason, d.payload)),
                    equal_to([(STEP, r if r == UNMATCHED_IMPLAUSIBLE_TARGET
                               else UNMATCHED_NO_REALIZED_BAR, _payload(p))
                              for p, r in expected.unmatched]),
                    label="Unmatched")


def _payload(p):
    from miraikakaku.tracking import prediction_payload

    return prediction_payload(p)


def test_predictions_wait_for_their_bar_and_expire_past_the_horizon(events):
    aapl = sorted((e for e in events if e.instrument_id == "XNAS:AAPL"),
                  key=lambda e: e.session_date)
    preds = momentum_predictions(events, "XNAS:AAPL", "sp500_5yr", 12)
    # Drop the bar of preds[2]'s target session: that prediction must expire.
    missing = preds[2].target_date
    later = [e for e in aapl[-12:] if e.session_date != missing]
    wrong_source = dataclasses.replace(preds[3], source="mlbot")  # no mlbot bars for AAPL
    stream = TestStream().advance_watermark_to(
        Timestamp.of(preds[0].as_of_time.timestamp() - 86_400))
    for p in [*preds[:-1], wrong_source]:  # predictions first: they wait in state
        stream = stream.add_elements([TimestampedValue(p, p.as_of_time.timestamp())])
    for e in later:  # then the realized bars arrive, in time order
        stream = stream.advance_watermark_to(Timestamp.of(e.event_time.timestamp() - 1))
        stream = stream.add_elements([TimestampedValue(e, e.event_time.timestamp())])
    # The missing bar turns up after the watermark passed its session + horizon: the prediction
    # already left state as a dead letter, so the late bar finds nothing to realize.
    late_bar = next(e for e in aapl if e.session_date == missing)
    assert Timestamp.of(later[-1].event_time.timestamp() - 1) > Timestamp.from_utc_datetime(
        dt.datetime.combine(missing + dt.timedelta(days=1 + 3), dt.time(), dt.timezone.utc))
    stream = stream.add_elements([TimestampedValue(late_bar, late_bar.event_time.timestamp())])
    stream = stream.advance_watermark_to_infinity()
    expected = match_predictions([*preds[:-1], wrong_source], later)
    assert {p.target_date for p, _ in expected.unmatched} == {missing, wrong_source.target_date}

    with TestPipeline() as p:
        elements = p | stream
        predictions = elements | "OnlyPredictions" >> beam.Filter(
            lambda x: not hasattr(x, "event_time"))
        bars = elements | "OnlyBars" >> beam.Filter(lambda x: hasattr(x, "event_time"))
        result = (predictions, bars) | TrackPredictions(horizon_days=3)
        assert_that(result.outcomes, equal_to(expected.outcomes), label="Outcomes")
        assert_that(result.unmatched | beam.Map(_reason_and_day),
                    equal_to([(UNMATCHED_NO_REALIZED_BAR, missing.isoformat()),
                              (UNMATCHED_NO_REALIZED_BAR, wrong_source.target_date.isoformat())]),
                    label="Expired")


def _reason_and_day(d: DeadLetter):
    import json

    return d.reason, json.loads(d.payload)["target_date"]


def test_negative_horizon_is_refused():
    with pytest.raises(ValueError):
        TrackPredictions(horizon_days=-1)
