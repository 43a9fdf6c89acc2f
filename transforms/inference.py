"""Run the LSTM on feature windows with Beam's RunInference: local model or Vertex AI endpoint,
hot-swapped versions, a local fallback, champion/challenger scoring, dead letters.

``PredictNextReturn``: ``PCollection[tuple[PredictionContext, ndarray float32 [N, F]]]`` →
``InferenceResult(predictions: PCollection[Prediction], dead_letters: PCollection[DeadLetter])``.

Model handlers (chosen by ``PredictNextReturn(..., vertex=...)``, i.e. ``--model_handler``):

* **local** (default): ``KeyedModelHandler(TFModelHandlerNumpy)`` on a versioned SavedModel
  (``models.registry``) taking raw windows ``[batch, N, F]`` (normalization is inside the model)
  and returning the next session's log return ``[batch, 1]``.
* **vertex**: ``KeyedModelHandler(VertexAIModelHandlerJSON)`` on an endpoint. Each instance is
  the JSON object ``{"windows": [[f_1 .. f_F] x N], "last_price": base_price}`` in TF Serving's
  row format: the inputs of the ``serving_default`` signature the TFX Trainer exports
  (``tfx_pipelines.trainer``: raw windows plus the last feature price, both required). For a
  model saved by ``models.registry.save_version`` (``windows`` only) set
  ``VertexEndpoint.send_last_price=False``. A prediction may be a number, a one-element list, or
  an object with ``predicted_log_return`` (TF Serving's answer for a signature with several
  outputs, as the TFX export has). ``PredictionResult.model_id`` is the endpoint's
  ``deployedModelId``; predictions record it as version ``vertex-<deployedModelId>``.

Failures (``RunInference.with_exception_handling()``; the stream goes on):

* a failed local batch → one ``DeadLetter`` per element (step ``RunInference``, reason
  ``inference_failed``, the element's instrument, source and as-of date, the error);
* a non-finite output → reason ``non_finite_prediction``;
* Vertex: the handler retries 429 and 5xx itself (``num_retries``, exponential backoff from 5 s,
  client-side throttling); a batch that still fails with 429/5xx is answered by the local model
  (same hot-swapped version), counted as ``PredictNextReturn/fallback_predictions``; any other
  error (4xx, a bad answer) → reason ``inference_failed``; a window Vertex cannot carry (JSON has
  no NaN) → reason ``invalid_window``.

Hot-swap (``watch_interval_seconds > 0``, streaming runs without a pinned version): the local
handler is wrapped in ``HotSwapModelHandler``, which looks at ``<model_dir>/*/`` for a higher
complete version (one with ``miraikakaku_model.json``) at most every ``watch_interval_seconds``
and answers with it from then on, without a restart (see its docstring for why not RunInference's
``model_metadata_pcoll`` side input). Every prediction's version is read from the
``PredictionResult.model_id`` of the model that answered, not from the configuration.

Champion/challenger: with ``challenger_uri`` and ``challenger_share`` in (0, 1], the instruments
whose stable hash (``in_challenger_share``) falls below the share are also scored by the
challenger (a fixed local version); both predictions are emitted, the challenger's with
``role="challenger"`` (stored under its own key, ``miraikakaku.rowkeys.prediction_key``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import posixpath
import time
from collections.abc import Iterable
from typing import Any, NamedTuple

import apache_beam as beam
import numpy as np
from apache_beam.ml.inference.base import (
    KeyedModelHandler,
    ModelHandler,
    PredictionResult,
    RunInference,
)

from miraikakaku.schema import DeadLetter, Prediction
from transforms import progress
from transforms.ordering import PredictionContext

__all__ = ["PredictNextReturn", "InferenceResult", "VertexEndpoint", "HotSwapModelHandler",
           "VERTEX_MAX_BATCH_SIZE", "numpy_inference_fn",
           "in_challenger_share", "latest_version_dir", "STEP", "VERTEX_VERSION_PREFIX"]

STEP = "RunInference"
VERTEX_VERSION_PREFIX = "vertex-"
"""Prefix of ``Prediction.model_version`` for answers from a Vertex AI endpoint."""
VERTEX_MAX_BATCH_SIZE = 256
"""Largest Vertex request batch: one instance is ~3.6 KB of JSON (measured on real 20x8
windows), and a public endpoint takes at most 1.5 MB per request (~418 instances)."""
_NS = "PredictNextReturn"
_METADATA_FILE = "miraikakaku_model.json"  # models.registry.METADATA_FILE (no TF import here)


class InferenceResult(NamedTuple):
    """Outputs of ``PredictNextReturn``."""

    predictions: beam.PCollection
    dead_letters: beam.PCollection


@dataclasses.dataclass(frozen=True)
class VertexEndpoint:
    """A Vertex AI endpoint to score with (``VertexAIModelHandlerJSON``).

    Attributes:
        endpoint_id: numeric endpoint id.
        project: Google Cloud project of the endpoint.
        location: region of the endpoint (``us-central1``).
        network: VPC network for a private endpoint (``projects/N/global/networks/V``).
        private: True for a private endpoint (needs ``network``).
        api_endpoint: API host to call instead of ``{location}-aiplatform.googleapis.com``
            (Private Service Connect, or a local server speaking the REST format in tests).
        api_transport: ``rest`` or ``grpc``; None: the client library's default.
        num_retries: retries of a 429/5xx answer before the batch fails (then the fallback).
        throttle_delay_secs: client-side throttling delay (Beam's ``RemoteModelHandler``).
        credentials: ``google.auth`` credentials; None: Application Default Credentials.
        send_last_price: include ``last_price`` in each instance (the TFX export requires it).
    """

    endpoint_id: str
    project: str
    location: str
    network: str | None = None
    private: bool = False
    api_endpoint: str | None = None
    api_transport: str | None = None
    num_retries: int = 5
    throttle_delay_secs: int = 5
    credentials: Any = None
    send_last_price: bool = True

    def client_config(self) -> dict[str, Any]:
        """Keyword arguments for ``aiplatform.init`` beyond what Beam's handler passes."""
        cfg: dict[str, Any] = {}
        if self.api_endpoint:
            cfg["api_endpoint"] = self.api_endpoint
        if self.api_transport:
            cfg["api_transport"] = self.api_transport
        if self.credentials is not None:
            cfg["credentials"] = self.credentials
        return cfg


def in_challenger_share(instrument_id: str, share: float) -> bool:
    """Whether the challenger also scores this instrument: stable across runs and workers.

    The first 8 bytes of SHA-256(instrument_id) as a fraction of 2**64 is compared with
    ``share`` (Python's ``hash`` is salted per process, so it would not be stable).

    Args:
        instrument_id: exchange-qualified id (``XNAS:AAPL``).
        share: fraction of instruments in [0, 1].

    Returns:
        True when the instrument's hash fraction is below ``share``.
    """
    digest = hashlib.sha256(instrument_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64 < share


def latest_version_dir(model_dir: str) -> str | None:
    """The highest complete version directory under ``model_dir`` (local path or ``gs://``).

    A version is complete when ``<model_dir>/<int>/miraikakaku_model.json`` exists
    (``models.registry.save_version`` renames a finished version into place with the file).

    Returns:
        The version directory's path, or None when there is none.
    """
    from apache_beam.io.filesystems import FileSystems

    pattern = FileSystems.join(model_dir, "*", _METADATA_FILE)
    best: tuple[int, str] | None = None
    for result in FileSystems.match([pattern]):
        for meta in result.metadata_list:
            version_dir = posixpath.dirname(meta.path.replace("\\", "/"))
            name = posixpath.basename(version_dir)
            if name.isdigit() and (best is None or int(name) > best[0]):
                best = (int(name), version_dir)
    return best[1] if best else None


def _version_number(version_dir: str) -> int:
    return int(posixpath.basename(version_dir.replace("\\", "/").rstrip("/")))


class HotSwapModelHandler(ModelHandler):
    """A model handler that swaps to each new complete model version while the pipeline runs.

    Wraps a local handler (``TFModelHandlerNumpy``). Before a batch, at most every
    ``interval_seconds``, it looks for a higher complete version in ``model_dir``
    (``latest_version_dir``); if there is one it loads it and answers this and later batches
    with it. The base handler's ``model_uri`` follows the swap, so ``PredictionResult.model_id``
    names the version that answered. A version that fails to load is logged and counted
    (``PredictNextReturn/model_swap_failures``) and the current model keeps answering.

    Why not RunInference's ``model_metadata_pcoll`` side input: measured with Beam 2.74, the
    Python DirectRunner's streaming mode holds main-input elements until a global-window side
    input's watermark passes (a ``PeriodicImpulse``-fed singleton side input let no element
    through in 10 s), keeps every pane's values (a second version would break ``AsSingleton``),
    and failed to expand ``PeriodicImpulse`` inside this pipeline ("Transform node ...
    GroupByKey was not replaced as expected"). Swapping inside the handler behaves the same on
    the DirectRunner and on Dataflow, and it needs no extra source.

    Args:
        base: the local handler (its ``model_uri`` is the version to start with).
        model_dir: the model family's directory (local or ``gs://``).
        interval_seconds: shortest time between two looks at ``model_dir``, > 0.

    Raises:
        ValueError: for a non-positive interval.
    """

    def __init__(self, base: ModelHandler, model_dir: str, interval_seconds: float) -> None:
        if interval_seconds <= 0:
            raise ValueError(f"interval_seconds must be > 0, got {interval_seconds}")
        super().__init__()
        self._base = base
        self._dir = model_dir
        self._interval = interval_seconds
        self._current: tuple[int, Any] | None = None  # (version, loaded model) after a swap
        self._next_look = 0.0
        self._swaps = progress.counter(_NS, "model_swaps")
        self._failures = progress.counter(_NS, "model_swap_failures")

    def load_model(self):
        return self._base.load_model()

    def _maybe_swap(self, model):
        now = time.monotonic()
        if now >= self._next_look:
            self._next_look = now + self._interval
            latest = latest_version_dir(self._dir)
            loaded = (self._current[0] if self._current
                      else _version_number(self._base._model_uri))
            if latest is not None and _version_number(latest) > loaded:
                previous = self._base._model_uri
                try:
                    self._base.update_model_path(latest)
                    self._current = (_version_number(latest), self._base.load_model())
                    self._swaps.inc()
                    logging.info("hot-swapped to model version %s", latest)
                except Exception:  # a broken version must not stop the stream
                    logging.exception("cannot load model version %s; keeping %s", latest,
                                      previous)
                    self._failures.inc()
                    self._base.update_model_path(previous)
        return self._current[1] if self._current else model

    def run_inference(self, batch, model, inference_args=None):
        return self._base.run_inference(batch, self._maybe_swap(model), inference_args)

    def update_model_path(self, model_path: str | None = None) -> None:
        self._base.update_model_path(model_path)

    def get_num_bytes(self, batch) -> int:
        return self._base.get_num_bytes(batch)

    def get_metrics_namespace(self) -> str:
        return self._base.get_metrics_namespace()

    def batch_elements_kwargs(self):
        return self._base.batch_elements_kwargs()

    def validate_inference_args(self, inference_args) -> None:
        self._base.validate_inference_args(inference_args)

    def share_model_across_processes(self) -> bool:
        return False


def numpy_inference_fn(model: Any, batch: list[np.ndarray], inference_args: dict[str, Any],
                       model_id: str | None = None) -> list[PredictionResult]:
    """``TFModelHandlerNumpy``'s inference function: one model call per batch, numpy outputs.

    Beam's ``default_numpy_inference_fn`` with the model's output converted to numpy once per
    batch. The default iterates the output ``EagerTensor`` row by row, one TensorFlow slice op
    per element (~100 µs each): a third of RunInference's time at batch 256
    (``benchmarks/inference.py``, profiled with cProfile). The model is still called eagerly as
    ``model(batch)``: Keras's compiled ``predict_on_batch`` is faster on full batches but traces
    a graph on a new model's first call and again for new batch shapes (measured slower per
    pipeline in the benchmark), and RunInference's batches vary in size.

    Args:
        model: the loaded Keras model (``[batch, N, F]`` → ``[batch, 1]``).
        batch: windows, each ``float32 [N, F]``.
        inference_args: extra keyword arguments of the model call.
        model_id: the model's path, recorded on each result.

    Returns:
        One ``PredictionResult`` per window, ``inference`` a ``float32 [1]`` array (or a dict of
        arrays for a model with several named outputs).
    """
    out = model(np.stack(batch, axis=0), **(inference_args or {}))
    if isinstance(out, dict):
        arrays = {k: np.asarray(v) for k, v in out.items()}
        rows: Any = [dict(zip(arrays, v, strict=True)) for v in zip(*arrays.values(), strict=True)]
    else:
        rows = np.asarray(out)
    return [PredictionResult(x, y, model_id) for x, y in zip(batch, rows, strict=True)]


def _payload(ctx: PredictionContext, window: object) -> str:
    shape = getattr(window, "shape", None)
    if shape is None and isinstance(window, dict):
        shape = np.shape(window.get("windows"))
    return (f"{ctx.instrument_id} {ctx.source} as_of={ctx.as_of_date} "
            f"window_shape={shape}")


def _log_return(inference: Any) -> float:
    """The forecast from a local output row or a Vertex prediction (see the module docstring)."""
    if isinstance(inference, dict):
        inference = inference["predicted_log_return"]
    return float(np.asarray(inference, dtype=np.float64).reshape(-1)[0])


class _ToPredictionFn(beam.DoFn):
    DEAD_LETTER = "dead_letter"

    def __init__(self, model_name: str, role: str, fallback: bool = False) -> None:
        self._name = model_name
        self._role = role
        self._fallback = fallback
        self._count = progress.counter(_NS, "predictions")
        self._fallbacks = progress.counter(_NS, "fallback_predictions")

    @staticmethod
    def version_of(result: PredictionResult) -> str:
        """The version of the model that answered, from ``PredictionResult.model_id``."""
        model_id = str(result.model_id or "")
        if not model_id:
            return ""
        if "/" in model_id or "\\" in model_id:  # a local version directory
            return posixpath.basename(model_id.replace("\\", "/").rstrip("/"))
        return VERTEX_VERSION_PREFIX + model_id  # a Vertex deployedModelId

    def process(self, element: tuple[PredictionContext, PredictionResult]):
        ctx, result = element
        version = self.version_of(result)
        try:
            value = _log_return(result.inference)
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            yield beam.pvalue.TaggedOutput(self.DEAD_LETTER, DeadLetter(
                STEP, "bad_model_answer", f"{type(exc).__name__}: {exc}"[:500],
                _payload(ctx, result.example), version, ctx.as_of_time))
            return
        if not math.isfinite(value):
            yield beam.pvalue.TaggedOutput(self.DEAD_LETTER, DeadLetter(
                STEP, "non_finite_prediction", f"model returned {value}",
                _payload(ctx, result.example), version, ctx.as_of_time))
            return
        self._count.inc()
        if self._fallback:
            self._fallbacks.inc()
        progress.tick("predicted")
        yield Prediction(ctx.instrument_id, ctx.source, ctx.as_of_date, ctx.as_of_time,
                         ctx.target_date, ctx.base_price, value, ctx.base_price * math.exp(value),
                         self._name, version, self._role)


def _error_text(exc_info: Any) -> str:
    """``Type: message`` from RunInference's ``(exc_type, repr(exc), traceback)`` or an error."""
    if isinstance(exc_info, tuple) and exc_info and isinstance(exc_info[0], type):
        return f"{exc_info[0].__name__}: {exc_info[1]}"[:500]
    return f"{type(exc_info).__name__}: {exc_info}"[:500]


def _dead_letters_of_batch(batch: Iterable[Any], error: str, origin: str,
                           reason: str = "inference_failed"):
    for item in batch:
        ctx, window = item if isinstance(item, tuple) and len(item) == 2 else (None, item)
        if isinstance(ctx, PredictionContext):
            yield DeadLetter(STEP, reason, error, _payload(ctx, window), origin, ctx.as_of_time)
        else:
            yield DeadLetter(STEP, reason, error, repr(item)[:500], origin)


def _failed_batch_to_dead_letters(failure, origin: str):
    batch, exc_info = failure
    yield from _dead_letters_of_batch(batch, _error_text(exc_info), origin)


def _is_retryable(exc_info: Any) -> bool:
    """429 or 5xx (the errors Beam's Vertex handler retries), after its retries ran out."""
    from google.api_core.exceptions import ServerError, TooManyRequests

    exc_type = exc_info[0] if isinstance(exc_info, tuple) else type(exc_info)
    return isinstance(exc_type, type) and issubclass(exc_type, (TooManyRequests, ServerError))


class _RouteFailedVertexBatchFn(beam.DoFn):
    """A failed Vertex batch: 429/5xx → the local fallback (main output, windows as arrays);
    anything else → dead letters."""

    DEAD_LETTER = "dead_letter"

    def __init__(self, origin: str, fallback: bool) -> None:
        self._origin = origin
        self._fallback = fallback
        self._routed = progress.counter(_NS, "fallback_elements")

    def process(self, failure):
        batch, exc_info = failure
        if self._fallback and _is_retryable(exc_info):
            for ctx, instance in batch:
                self._routed.inc()
                yield ctx, np.asarray(instance["windows"], dtype=np.float32)
            return
        for dl in _dead_letters_of_batch(batch, _error_text(exc_info), self._origin):
            yield beam.pvalue.TaggedOutput(self.DEAD_LETTER, dl)


def _to_vertex_instance(element: tuple[PredictionContext, np.ndarray], send_last_price: bool):
    """``(ctx, window)`` → ``(ctx, {"windows": nested lists[, "last_price": base price]})``.

    Raises:
        ValueError: for a non-finite window (JSON cannot carry NaN or infinity).
    """
    ctx, window = element
    arr = np.asarray(window, dtype=np.float32)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"window has non-finite values (shape {arr.shape})")
    instance: dict[str, Any] = {"windows": arr.tolist()}
    if send_last_price:
        instance["last_price"] = float(ctx.base_price)
    return ctx, instance


def _invalid_window_to_dead_letter(failure, origin: str):
    element, exc_info = failure
    yield from _dead_letters_of_batch([element], _error_text(exc_info), origin,
                                      reason="invalid_window")


def _vertex_handler(endpoint: VertexEndpoint, batching: dict[str, int]):
    """``VertexAIModelHandlerJSON`` that re-applies ``endpoint.client_config()`` on workers.

    Beam's handler passes only project, location, experiment and network to ``aiplatform.init``
    (its own TODO says so); ``aiplatform.init`` is process-global, so an API host, transport or
    explicit credentials set at construction would be missing in a worker process. The subclass
    only re-applies them in ``create_client`` before calling Beam's.
    """
    from apache_beam.ml.inference.vertex_ai_inference import VertexAIModelHandlerJSON
    from google.cloud import aiplatform

    class _Handler(VertexAIModelHandlerJSON):
        def __init__(self, **kwargs) -> None:
            self._client_config = endpoint.client_config()
            if self._client_config:
                aiplatform.init(project=endpoint.project, location=endpoint.location,
                                **self._client_config)
            super().__init__(**kwargs)

        def create_client(self):
            if self._client_config:
                aiplatform.init(project=endpoint.project, location=endpoint.location,
                                **self._client_config)
            return super().create_client()

    return _Handler(endpoint_id=endpoint.endpoint_id, project=endpoint.project,
                    location=endpoint.location, network=endpoint.network,
                    private=endpoint.private, num_retries=endpoint.num_retries,
                    throttle_delay_secs=endpoint.throttle_delay_secs, **batching)


class PredictNextReturn(beam.PTransform):
    """``PCollection[(PredictionContext, window)]`` → ``InferenceResult``.

    Args:
        model_uri: path of the local SavedModel version directory (the champion, or with
            ``vertex`` the fallback; with hot-swap the version to start with).
        model_name: model name recorded on predictions.
        model_version: version of ``model_uri`` (for dead letters' origin; predictions take the
            version from the model that answered).
        min_batch_size, max_batch_size: RunInference batching bounds (elements per batch).
        max_batch_duration_secs: streaming: longest wait to fill a batch (None: Beam's default).
        model_dir: the model family's directory to watch for new versions.
        watch_interval_seconds: > 0 hot-swaps to each new complete version in ``model_dir``
            (streaming only); 0 keeps ``model_uri``.
        vertex: score on this Vertex AI endpoint instead of the local model.
        fallback_to_local: with ``vertex``: answer 429/5xx failures with the local model.
        challenger_uri: a second local version directory scoring a share of instruments.
        challenger_share: fraction of instruments (stable hash) the challenger scores, [0, 1].

    Raises:
        ValueError: for a share outside [0, 1], a challenger without a share or equal to the
            champion, or hot-swap without ``model_dir``.
    """

    def __init__(self, model_uri: str, model_name: str, model_version: str,
                 min_batch_size: int = 32, max_batch_size: int = 1024, *,
                 max_batch_duration_secs: int | None = None, model_dir: str | None = None,
                 watch_interval_seconds: float = 0.0, vertex: VertexEndpoint | None = None,
                 fallback_to_local: bool = True, challenger_uri: str | None = None,
                 challenger_share: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= challenger_share <= 1.0:
            raise ValueError(f"challenger_share must be in [0, 1], got {challenger_share}")
        if challenger_uri is not None and challenger_uri.rstrip("/") == model_uri.rstrip("/"):
            raise ValueError("the challenger is the champion's model version")
        if watch_interval_seconds > 0 and not model_dir:
            raise ValueError("hot-swap (watch_interval_seconds > 0) needs model_dir")
        self._uri = model_uri
        self._name = model_name
        self._version = model_version
        self._batching = {"min_batch_size": min_batch_size, "max_batch_size": max_batch_size}
        if max_batch_duration_secs is not None:
            self._batching["max_batch_duration_secs"] = max_batch_duration_secs
        self._model_dir = model_dir
        self._watch = watch_interval_seconds
        self._vertex = vertex
        self._fallback = fallback_to_local
        self._challenger = challenger_uri if challenger_share > 0 else None
        self._share = challenger_share

    def _local_handler(self, uri: str, hot_swap: bool):
        from apache_beam.ml.inference.tensorflow_inference import TFModelHandlerNumpy

        handler: ModelHandler = TFModelHandlerNumpy(model_uri=uri,
                                                    inference_fn=numpy_inference_fn,
                                                    **self._batching)
        if hot_swap and self._watch > 0:
            handler = HotSwapModelHandler(handler, str(self._model_dir), self._watch)
        return KeyedModelHandler(handler)

    def _score_local(self, windows, prefix: str, uri: str, hot_swap: bool, role: str, *,
                     fallback: bool = False) -> tuple[beam.PCollection, beam.PCollection]:
        main, other = windows | f"{prefix}RunInference" >> RunInference(
            self._local_handler(uri, hot_swap)).with_exception_handling()
        out = main | f"{prefix}ToPrediction" >> beam.ParDo(
            _ToPredictionFn(self._name, role, fallback)).with_outputs(
                _ToPredictionFn.DEAD_LETTER, main="predictions")
        failed = other.failed_inferences | f"{prefix}FailedBatchToDeadLetters" >> beam.FlatMap(
            _failed_batch_to_dead_letters, f"{self._name}/{posixpath.basename(uri)}")
        return out.predictions, (out[_ToPredictionFn.DEAD_LETTER], failed)

    def _score_vertex(self, windows) -> tuple[list, list]:
        v = self._vertex
        origin = f"vertex:{v.project}/{v.location}/{v.endpoint_id}"
        instances, invalid = windows | "ToVertexInstances" >> beam.Map(
            _to_vertex_instance, v.send_last_price).with_exception_handling(exc_class=ValueError)
        batching = dict(self._batching)
        batching["max_batch_size"] = min(batching["max_batch_size"], VERTEX_MAX_BATCH_SIZE)
        batching["min_batch_size"] = min(batching["min_batch_size"], batching["max_batch_size"])
        main, other = instances | "RunInference" >> RunInference(
            KeyedModelHandler(_vertex_handler(v, batching))).with_exception_handling()
        out = main | "ToPrediction" >> beam.ParDo(
            _ToPredictionFn(self._name, "champion")).with_outputs(
                _ToPredictionFn.DEAD_LETTER, main="predictions")
        routed = other.failed_inferences | "RouteFailedBatches" >> beam.ParDo(
            _RouteFailedVertexBatchFn(origin, self._fallback)).with_outputs(
                _RouteFailedVertexBatchFn.DEAD_LETTER, main="fallback")
        fb_preds, fb_dead = self._score_local(routed.fallback, "Fallback", self._uri, True,
                                              "champion", fallback=True)
        bad_windows = invalid | "InvalidWindowsToDeadLetters" >> beam.FlatMap(
            _invalid_window_to_dead_letter, origin)
        return ([out.predictions, fb_preds],
                [out[_ToPredictionFn.DEAD_LETTER], routed[_RouteFailedVertexBatchFn.DEAD_LETTER],
                 *fb_dead, bad_windows])

    def expand(self, windows):
        if self._vertex is None:
            preds, dead = self._score_local(windows, "", self._uri, True, "champion")
            predictions, dead_letters = [preds], list(dead)
        else:
            predictions, dead_letters = self._score_vertex(windows)
        if self._challenger is not None:
            share = self._share
            chosen = windows | "SelectChallengerShare" >> beam.Filter(
                lambda kv: in_challenger_share(kv[0].instrument_id, share))
            preds, dead = self._score_local(chosen, "Challenger", self._challenger, False,
                                            "challenger")
            predictions.append(preds)
            dead_letters.extend(dead)
        return InferenceResult(
            tuple(predictions) | "FlattenPredictions" >> beam.Flatten(),
            tuple(dead_letters) | "FlattenInferenceDeadLetters" >> beam.Flatten())
