"""RunInference in the pipeline: predictions carry the model version; bad inputs dead-letter."""

from __future__ import annotations

import datetime as dt

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from models.lstm import build_lstm_model
from models.registry import save_version
from transforms.features import N_FEATURES
from transforms.inference import PredictNextReturn
from transforms.ordering import PredictionContext

pytestmark = pytest.mark.pipeline


def _ctx(i: int) -> PredictionContext:
    day = dt.date(2018, 1, 2) + dt.timedelta(days=i)
    return PredictionContext("XNAS:AAPL", "sp500_5yr", day,
                             dt.datetime.combine(day, dt.time(21), tzinfo=dt.timezone.utc),
                             day + dt.timedelta(days=1), 100.0 + i, "USD")


def test_broken_windows_are_dead_lettered_and_the_rest_predicted(tmp_path):
    model = build_lstm_model(20, N_FEATURES, units=4)
    mv = save_version(model, tmp_path, {"model_name": "lstm_daily", "window": 20})
    rng = np.random.default_rng(0)
    good = [(_ctx(i), rng.normal(size=(20, N_FEATURES)).astype(np.float32)) for i in range(5)]
    wrong_shape = (_ctx(10), np.zeros((5, 3), dtype=np.float32))
    not_finite = (_ctx(11), np.full((20, N_FEATURES), np.nan, dtype=np.float32))
    expected = model.predict(np.stack([w for _, w in good]), verbose=0).reshape(-1)
    with TestPipeline() as p:
        out = (p | beam.Create([*good, wrong_shape, not_finite])
               | PredictNextReturn(str(mv.path), "lstm_daily", mv.version, min_batch_size=1,
                                   max_batch_size=1))
        assert_that(out.predictions | beam.Map(lambda r: (r.as_of_date, r.model_name,
                                                          r.model_version,
                                                          round(r.predicted_log_return, 5))),
                    equal_to([(c.as_of_date, "lstm_daily", mv.version, round(float(v), 5))
                              for (c, _), v in zip(good, expected)]),
                    label="Predictions")
        assert_that(out.dead_letters | beam.Map(lambda d: (d.step, d.reason,
                                                           d.payload.split(" ")[2])),
                    equal_to([("RunInference", "inference_failed", "as_of=2018-01-12"),
                              ("RunInference", "non_finite_prediction", "as_of=2018-01-13")]),
                    label="DeadLetters")
