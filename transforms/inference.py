"""Run the LSTM on feature windows with Beam's RunInference, dead-lettering failures.

``PredictNextReturn``: ``PCollection[tuple[PredictionContext, ndarray float32 [N, F]]]`` →
``InferenceResult(predictions: PCollection[Prediction], dead_letters: PCollection[DeadLetter])``.

The model is a versioned SavedModel (``models.registry``) taking raw windows ``[batch, N, F]``
(normalization is inside the model) and returning the next session's log return
``[batch, 1]``. RunInference batches the windows (``min_batch_size``/``max_batch_size``) and
``with_exception_handling()`` routes a failed batch to dead letters (one per element, step
``RunInference``) so the stream goes on. A non-finite output is dead-lettered too. Every
prediction carries the model's name and version.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import apache_beam as beam
import numpy as np
from apache_beam.ml.inference.base import KeyedModelHandler, PredictionResult, RunInference

from miraikakaku.schema import DeadLetter, Prediction
from transforms import progress
from transforms.ordering import PredictionContext

__all__ = ["PredictNextReturn", "InferenceResult", "STEP"]

STEP = "RunInference"


class InferenceResult(NamedTuple):
    """Outputs of ``PredictNextReturn``."""

    predictions: beam.PCollection
    dead_letters: beam.PCollection


def _payload(ctx: PredictionContext, window: object) -> str:
    shape = getattr(window, "shape", None)
    return (f"{ctx.instrument_id} {ctx.source} as_of={ctx.as_of_date} "
            f"window_shape={shape}")


class _ToPredictionFn(beam.DoFn):
    DEAD_LETTER = "dead_letter"

    def __init__(self, model_name: str, model_version: str) -> None:
        self._name = model_name
        self._version = model_version
        self._count = progress.counter("PredictNextReturn", "predictions")

    def process(self, element: tuple[PredictionContext, PredictionResult]):
        ctx, result = element
        value = float(np.asarray(result.inference).reshape(-1)[0])
        if not math.isfinite(value):
            yield beam.pvalue.TaggedOutput(self.DEAD_LETTER, DeadLetter(
                STEP, "non_finite_prediction", f"model returned {value}",
                _payload(ctx, result.example), self._version, ctx.as_of_time))
            return
        self._count.inc()
        progress.tick("predicted")
        yield Prediction(ctx.instrument_id, ctx.source, ctx.as_of_date, ctx.as_of_time,
                         ctx.target_date, ctx.base_price, value, ctx.base_price * math.exp(value),
                         self._name, self._version)


def _failed_batch_to_dead_letters(failure, model_version: str):
    batch, exc = failure
    for item in batch:
        ctx, window = item if isinstance(item, tuple) and len(item) == 2 else (None, item)
        if isinstance(ctx, PredictionContext):
            yield DeadLetter(STEP, "inference_failed", f"{type(exc).__name__}: {exc}"[:500],
                             _payload(ctx, window), model_version, ctx.as_of_time)
        else:
            yield DeadLetter(STEP, "inference_failed", f"{type(exc).__name__}: {exc}"[:500],
                             repr(item)[:500], model_version)


class PredictNextReturn(beam.PTransform):
    """``PCollection[(PredictionContext, window)]`` → ``InferenceResult``.

    Args:
        model_uri: path of a SavedModel version directory.
        model_name: model name recorded on predictions.
        model_version: version recorded on predictions.
        min_batch_size, max_batch_size: RunInference batching bounds.
    """

    def __init__(self, model_uri: str, model_name: str, model_version: str,
                 min_batch_size: int = 32, max_batch_size: int = 1024) -> None:
        super().__init__()
        self._uri = model_uri
        self._name = model_name
        self._version = model_version
        self._min = min_batch_size
        self._max = max_batch_size

    def expand(self, windows):
        from apache_beam.ml.inference.tensorflow_inference import TFModelHandlerNumpy

        handler = KeyedModelHandler(TFModelHandlerNumpy(
            model_uri=self._uri, min_batch_size=self._min, max_batch_size=self._max))
        main, other = windows | "RunInference" >> RunInference(handler).with_exception_handling()
        out = main | "ToPrediction" >> beam.ParDo(
            _ToPredictionFn(self._name, self._version)).with_outputs(
                _ToPredictionFn.DEAD_LETTER, main="predictions")
        version = self._version
        failed = other.failed_inferences | "FailedBatchToDeadLetters" >> beam.FlatMap(
            _failed_batch_to_dead_letters, version)
        dead = ((out[_ToPredictionFn.DEAD_LETTER], failed)
                | "FlattenInferenceDeadLetters" >> beam.Flatten())
        return InferenceResult(out.predictions, dead)
