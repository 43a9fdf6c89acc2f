"""Contract tests of the Vertex AI model handler against a local server speaking the Vertex REST
format, and of the local fallback when that server answers 503 or 429.

The server (``http.server`` in a thread, 127.0.0.1 only) implements the two calls the unchanged
``VertexAIModelHandlerJSON`` → ``aiplatform.Endpoint`` path makes, as measured here:
``GET /v1/projects/{p}/locations/{l}/endpoints/{id}`` (the endpoint resource with its
``deployedModels``; fetched on construction and again when a worker creates its client) and
``POST /v1/projects/{p}/locations/{l}/endpoints/{id}:predict`` with ``{"instances": [...]}``,
answering ``{"predictions": [...], "deployedModelId": ...}``. Like TF Serving behind a Vertex
endpoint, it answers with the ``serving_default`` signature of a real SavedModel in the row
format: each instance must have exactly the signature's inputs (else 400 INVALID_ARGUMENT); a
signature with one output gives one value per instance, several outputs an object per instance.
Two exports are served: the TFX Trainer's (``windows`` + ``last_price`` →
``predicted_log_return``, ``predicted_price``) and ``models.registry``'s (``windows`` →
``predicted_log_return``).
The client is pointed at it with ``aiplatform.init(api_endpoint="http://127.0.0.1:PORT",
api_transport="rest", credentials=AnonymousCredentials())`` through ``VertexEndpoint``.

What only a real endpoint can show: authentication (ADC / service account), TLS, the real
prebuilt TF serving container's answer shape for this SavedModel, request size limits (1.5 MB),
quota 429s and latency. Run: ``pytest tests/integration/test_vertex_contract.py -q``.
"""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to
from google.auth.credentials import AnonymousCredentials

from models.lstm import build_lstm_model
from models.registry import ModelVersion
from tests.pipeline.test_inference import WINDOW, _model, real_windows
from transforms.features import N_FEATURES
from transforms.inference import PredictNextReturn, VertexEndpoint

pytestmark = pytest.mark.integration
PROJECT, LOCATION, ENDPOINT_ID, DEPLOYED_ID = "mk-contract", "us-central1", "1234567890", "777"
RESOURCE = f"projects/{PROJECT}/locations/{LOCATION}/endpoints/{ENDPOINT_ID}"


class FakeVertex:
    """A Vertex AI prediction endpoint on 127.0.0.1 serving a SavedModel's ``serving_default``.

    Attributes:
        fail_with: HTTP status to answer every predict call with (None: answer normally).
        requests: ``(method, path, body)`` of every request received.
    """

    def __init__(self, saved_model_dir: str) -> None:
        import tensorflow as tf

        self.signature = tf.saved_model.load(saved_model_dir).signatures["serving_default"]
        self.inputs = self.signature.structured_input_signature[1]
        self.fail_with: int | None = None
        self.requests: list[tuple[str, str, object]] = []
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def _answer(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                path = self.path.split("?")[0]
                outer._log("GET", path, None)
                if path != f"/v1/{RESOURCE}":
                    self._answer(404, {"error": {"code": 404, "message": "not found",
                                                 "status": "NOT_FOUND"}})
                    return
                self._answer(200, {"name": RESOURCE, "displayName": "lstm-daily",
                                   "deployedModels": [{
                                       "id": DEPLOYED_ID, "displayName": "lstm_daily",
                                       "model": f"projects/{PROJECT}/locations/{LOCATION}"
                                                f"/models/42"}],
                                   "trafficSplit": {DEPLOYED_ID: 100}})

            def do_POST(self) -> None:  # noqa: N802
                path = self.path.split("?")[0]
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer._log("POST", path, body)
                if path != f"/v1/{RESOURCE}:predict":
                    self._answer(404, {"error": {"code": 404, "message": "not found",
                                                 "status": "NOT_FOUND"}})
                    return
                if outer.fail_with is not None:
                    status = {503: "UNAVAILABLE", 429: "RESOURCE_EXHAUSTED",
                              400: "INVALID_ARGUMENT"}[outer.fail_with]
                    self._answer(outer.fail_with, {"error": {
                        "code": outer.fail_with, "message": "injected failure",
                        "status": status}})
                    return
                try:
                    preds = outer.predict(body["instances"])
                except ValueError as exc:
                    self._answer(400, {"error": {"code": 400, "message": str(exc),
                                                 "status": "INVALID_ARGUMENT"}})
                    return
                self._answer(200, {"predictions": preds,
                                   "deployedModelId": DEPLOYED_ID,
                                   "model": f"projects/{PROJECT}/locations/{LOCATION}/models/42"})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def predict(self, instances: list[dict]) -> list:
        """TF Serving's row format: inputs by name per instance, outputs per instance.

        Raises:
            ValueError: an instance whose keys are not the signature's inputs.
        """
        import tensorflow as tf

        names = set(self.inputs)
        for i, inst in enumerate(instances):
            if set(inst) != names:
                raise ValueError(f"instance {i} has inputs {sorted(inst)}, the signature takes "
                                 f"{sorted(names)}")
        out = self.signature(**{n: tf.constant([inst[n] for inst in instances],
                                               dtype=self.inputs[n].dtype) for n in names})
        if len(out) == 1:
            return next(iter(out.values())).numpy().tolist()
        arrays = {k: v.numpy() for k, v in out.items()}
        return [{k: a[j].tolist() for k, a in arrays.items()} for j in range(len(instances))]

    def _log(self, method: str, path: str, body: object) -> None:
        with self._lock:
            self.requests.append((method, path, body))

    def posts(self) -> list[dict]:
        """Bodies of the predict calls so far."""
        with self._lock:
            return [b for m, _, b in self.requests if m == "POST"]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}"

    def __enter__(self) -> FakeVertex:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def _tfx_export(tmp_path, seed: int):
    """A SavedModel exported with the TFX Trainer's signatures: (path, keras model)."""
    import tensorflow as tf

    from tfx_pipelines.trainer import export_signatures

    tf.keras.utils.set_random_seed(seed)
    model = build_lstm_model(WINDOW, N_FEATURES, units=4)
    path = tmp_path / "tfx_export"
    model.save(str(path), save_format="tf", save_traces=False,
               signatures=export_signatures(model, WINDOW))
    return str(path), model


@pytest.fixture
def models(tmp_path):
    """(remote TFX export path, its keras model, local registry version): different weights."""
    path, model = _tfx_export(tmp_path / "remote", 11)
    _, local = _model(tmp_path / "local", 12)
    return path, model, local


def _endpoint(server: FakeVertex, retries: int, send_last_price: bool = True) -> VertexEndpoint:
    return VertexEndpoint(ENDPOINT_ID, PROJECT, LOCATION, api_endpoint=server.url,
                          api_transport="rest", credentials=AnonymousCredentials(),
                          num_retries=retries, throttle_delay_secs=1,
                          send_last_price=send_last_price)


def _run(windows, local: ModelVersion, endpoint: VertexEndpoint, fallback: bool = True):
    """A pipeline scoring ``windows`` on ``endpoint`` (one batch), not yet run: (pipeline, out)."""
    p = TestPipeline()
    out = (p | beam.Create(windows)
           | PredictNextReturn(str(local.path), "lstm_daily", local.version, len(windows),
                               len(windows), vertex=endpoint, fallback_to_local=fallback))
    return p, out


def _counter(result, name: str) -> int:
    found = result.metrics().query(MetricsFilter().with_name(name))["counters"]
    return sum(int(c.committed or c.attempted or 0) for c in found)


def _check_contract(tmp_path, saved_model_dir: str, expected_model, local: ModelVersion,
                    send_last_price: bool) -> None:
    windows = real_windows(tmp_path, {"AAPL", "IBM"}, 4)
    stack = np.stack([w for _, w in windows])
    expected = expected_model.predict(stack, verbose=0).reshape(-1)
    with FakeVertex(saved_model_dir) as server:
        p, out = _run(windows, local, _endpoint(server, 0, send_last_price))
        assert_that(out.predictions | beam.Map(
            lambda r: (r.instrument_id, r.as_of_date, r.model_version, r.role,
                       round(r.predicted_log_return, 5))),
            equal_to([(c.instrument_id, c.as_of_date, f"vertex-{DEPLOYED_ID}", "champion",
                       round(float(v), 5)) for (c, _), v in zip(windows, expected)]),
            label="Predictions")
        assert_that(out.dead_letters, equal_to([]), label="NoDeadLetters")
        result = p.run()
        result.wait_until_finish()
    assert _counter(result, "fallback_predictions") == 0
    posts = server.posts()
    assert len(posts) == 1 and set(posts[0]) == {"instances"}
    instances = posts[0]["instances"]
    keys = {"windows", "last_price"} if send_last_price else {"windows"}
    assert all(set(i) == keys for i in instances)
    sent = np.asarray([i["windows"] for i in instances], dtype=np.float32)
    assert sorted(map(bytes, sent)) == sorted(map(bytes, stack.astype(np.float32)))
    if send_last_price:
        assert sorted(i["last_price"] for i in instances) == \
            sorted(float(c.base_price) for c, _ in windows)
    gets = [path for m, path, _ in server.requests if m == "GET"]
    assert gets and all(re.fullmatch(f"/v1/{RESOURCE}", g) for g in gets)


def test_contract_vertex_handler_with_the_tfx_export(tmp_path, models):
    path, model, local = models
    _check_contract(tmp_path, path, model, local, send_last_price=True)


def test_contract_vertex_handler_with_a_registry_export(tmp_path, models):
    _, _, local = models
    _, remote = _model(tmp_path / "registry_remote", 13)
    _check_contract(tmp_path, str(remote.path), remote.load(), local, send_last_price=False)


@pytest.mark.parametrize(("status", "retries"), [(503, 1), (429, 0)])
def test_contract_endpoint_errors_past_the_retries_fall_back_to_the_local_model(
        tmp_path, models, status, retries):
    remote, _, local = models
    windows = real_windows(tmp_path, {"MSFT"}, 5)
    expected_local = local.load().predict(np.stack([w for _, w in windows]),
                                          verbose=0).reshape(-1)
    with FakeVertex(remote) as server:
        server.fail_with = status
        p, out = _run(windows, local, _endpoint(server, retries=retries))
        assert_that(out.predictions | beam.Map(
            lambda r: (r.as_of_date, r.model_version, round(r.predicted_log_return, 5))),
            equal_to([(c.as_of_date, local.version, round(float(v), 5))
                      for (c, _), v in zip(windows, expected_local)]), label="Predictions")
        assert_that(out.dead_letters, equal_to([]), label="NoDeadLetters")
        result = p.run()
        result.wait_until_finish()
    assert len(server.posts()) == 1 + retries  # the handler retried before giving up
    assert _counter(result, "fallback_predictions") == len(windows)


def test_contract_client_errors_are_dead_lettered_not_retried_or_fallen_back(tmp_path, models):
    remote, _, local = models
    windows = real_windows(tmp_path, {"KO"}, 3)
    with FakeVertex(remote) as server:
        server.fail_with = 400
        p, out = _run(windows, local, _endpoint(server, retries=2))
        assert_that(out.predictions, equal_to([]), label="NoPredictions")
        assert_that(out.dead_letters | beam.Map(
            lambda d: (d.step, d.reason, d.payload.split(" ")[2], d.detail.split(":")[0])),
            equal_to([("RunInference", "inference_failed", f"as_of={c.as_of_date}",
                       "BadRequest") for c, _ in windows]), label="DeadLetters")
        result = p.run()
        result.wait_until_finish()
    assert len(server.posts()) == 1
    assert _counter(result, "fallback_predictions") == 0


def test_contract_fallback_disabled_dead_letters_the_batch(tmp_path, models):
    remote, _, local = models
    windows = real_windows(tmp_path, {"KO"}, 2)
    with FakeVertex(remote) as server:
        server.fail_with = 503
        p, out = _run(windows, local, _endpoint(server, retries=0), fallback=False)
        assert_that(out.predictions, equal_to([]), label="NoPredictions")
        assert_that(out.dead_letters | beam.Map(lambda d: (d.reason, d.detail.split(":")[0])),
                    equal_to([("inference_failed", "ServiceUnavailable")] * 2),
                    label="DeadLetters")
        p.run().wait_until_finish()
