"""The TFX training pipeline on real bars: examples parity, Transform, run_fn, gate, Vertex JSON.

One module-scoped run of the whole pipeline (LocalDagRunner) on three S&P 500 instruments feeds
the end-to-end, Transform and serving tests; the gate tests run a second pipeline twice on the
same real windows with a learnable target (see ``learnable_dir``). About 4-5 minutes on 2 cores.
"""

from __future__ import annotations

import collections
import datetime as dt
import glob
import json
import math
from pathlib import Path

import numpy as np
import pytest

from miraikakaku.settings import Settings
from tests.conftest import SP500, read_rows, write_csv

pytestmark = pytest.mark.tfx

SYMBOLS = {"AAPL", "MSFT", "XOM"}
PRIORITY = Settings().source_priority


def _records(pattern: str) -> list[bytes]:
    import tensorflow as tf

    out = []
    for f in sorted(glob.glob(pattern)):
        out.extend(r.numpy() for r in tf.data.TFRecordDataset(f, compression_type="GZIP"))
    return out


def _rows(examples_dir: Path, split: str):
    from tfx_pipelines.examples import example_to_row

    return [example_to_row(r) for r in _records(f"{examples_dir}/{split}/*")]


@pytest.fixture(scope="module")
def price_file(tmp_path_factory) -> Path:
    header, rows = read_rows(SP500, SYMBOLS)
    return write_csv(tmp_path_factory.mktemp("prices") / "sp500_3.csv", header, rows)


@pytest.fixture(scope="module")
def e2e(tmp_path_factory, price_file):
    """The local runner on the real slice (real next-day labels), few steps."""
    from tfx_pipelines import configs
    from tfx_pipelines.local_runner import run

    settings = Settings(data_dir=tmp_path_factory.mktemp("tfx_e2e") / "var")
    summary = run([price_file], settings=settings, instrument_fraction=1.0, progress=False,
                  trainer_config=configs.TrainerConfig(train_steps=30, batch_size=64,
                                                       eval_steps=3))
    return settings, summary


def _artifact_dir(settings: Settings, component: str, output: str) -> Path:
    root = Path(settings.data_dir) / "tfx" / "pipelines"
    dirs = sorted(root.glob(f"*/{component}/{output}/*"), key=lambda p: int(p.name))
    assert dirs, f"no {component}/{output} artifact under {root}"
    return dirs[-1]


def test_examples_match_the_streams_windows(price_file, tmp_path):
    """Training/serving parity: every TFRecord example is the window ComputeFeatures emits for
    the same real bar, with the stream's base price and the next window's price as label."""
    import apache_beam as beam
    from apache_beam.testing.test_pipeline import TestPipeline
    from apache_beam.testing.util import assert_that

    from tfx_pipelines.examples import write_examples
    from transforms.ordering import ComputeFeatures
    from transforms.parsing import ParseEvents, ReadPriceFiles, file_spec
    from transforms.validation import ValidateEvents

    res = write_examples([price_file], tmp_path / "ex", PRIORITY, instrument_fraction=1.0)
    rows = _rows(tmp_path / "ex", "train") + _rows(tmp_path / "ex", "eval")
    assert len(rows) == res.counts["train"] + res.counts["eval"] > 3000

    def check(stream):
        by_key = {(ctx.instrument_id, ctx.as_of_date): (np.asarray(w), ctx.base_price)
                  for ctx, w in stream}
        assert len(by_key) == len(stream) == res.counts["windows"]
        for r in rows:
            window, base = by_key[(r.instrument_id, r.as_of_date)]
            np.testing.assert_array_equal(r.window, window.astype(np.float32))
            assert r.last_price == np.float32(base)
            _, next_base = by_key[(r.instrument_id, r.target_date)]
            assert r.label == pytest.approx(math.log(next_base / base), abs=1e-7)
        # every stream window is an example, except those without a usable next bar
        missing = len(by_key) - len(rows) - res.counts.get("straddling_cutoff", 0)
        assert missing == (res.counts.get("windows_without_next_bar", 0)
                           + res.counts.get("broken_targets", 0))

    spec = file_spec(price_file)
    with TestPipeline() as p:
        events = (p | ReadPriceFiles([spec]) | ParseEvents({spec.origin: spec})).events
        valid = events | ValidateEvents()
        stamped = valid.events | beam.Map(
            lambda e: beam.window.TimestampedValue(e, e.event_time.timestamp()))
        out = stamped | ComputeFeatures(PRIORITY, bounded=True)
        assert_that(out.windows, check)


def test_time_split_has_no_look_ahead_and_matches_split_by_date(price_file, e2e):
    from models.training import build_examples, split_by_date

    settings, summary = e2e
    ex_dir = Path(settings.data_dir) / "tfx" / "examples"
    train, evaluation = _rows(ex_dir, "train"), _rows(ex_dir, "eval")
    cutoff = dt.date.fromisoformat(summary.examples["cutoff"])
    assert max(r.target_date for r in train) <= cutoff < min(r.as_of_date for r in evaluation)
    ref_train, ref_eval, ref_cut = split_by_date(build_examples([price_file], PRIORITY))
    assert ref_cut == cutoff
    assert (len(train), len(evaluation)) == (len(ref_train), len(ref_eval))


def test_preprocessing_fn_scales_real_rows_exactly(e2e):
    """Transform's output on the real train split equals numpy's per-feature z-score."""
    import tensorflow as tf

    from tfx_pipelines import features as fk

    settings, _ = e2e
    raw = _rows(Path(settings.data_dir) / "tfx" / "examples", "train")
    x = np.stack([r.window for r in raw]).astype(np.float64).reshape(-1, fk.N_FEATURES)
    mean, var = x.mean(axis=0), x.var(axis=0)
    expected = {(r.instrument_id, r.as_of_date): ((r.window - mean) / np.sqrt(var))
                for r in raw}
    xf_dir = _artifact_dir(settings, "Transform", "transformed_examples")
    files = glob.glob(str(xf_dir / "Split-train" / "*"))
    got = [tf.train.Example.FromString(r.numpy()) for f in files
           for r in tf.data.TFRecordDataset(f, compression_type="GZIP")]
    assert len(got) == len(raw)
    # Transform keeps only its outputs, so match rows by label and last price (a handful of
    # pairs repeat on these bars: any of the candidates must match)
    candidates: dict = collections.defaultdict(list)
    for r in raw:
        candidates[(np.float32(r.label), np.float32(r.last_price))].append(
            expected[(r.instrument_id, r.as_of_date)])
    for ex in got:
        f = ex.features.feature
        key = (np.float32(f[fk.LABEL_KEY].float_list.value[0]),
               np.float32(f[fk.LAST_PRICE_KEY].float_list.value[0]))
        z = np.asarray(f[fk.WINDOWS_XF_KEY].float_list.value).reshape(-1, fk.N_FEATURES)
        assert any(np.allclose(z, want, rtol=2e-4, atol=2e-5) for want in candidates[key]), key


def test_exported_model_normalizes_like_transform_and_serves_prices(e2e):
    import tensorflow as tf
    import tensorflow_transform as tft

    from models.lstm import keras
    from tfx_pipelines import features as fk

    settings, summary = e2e
    ex_dir = Path(settings.data_dir) / "tfx" / "examples"
    rows = _rows(ex_dir, "eval")[:200]
    windows = np.stack([r.window for r in rows]).astype(np.float32)
    tft_out = tft.TFTransformOutput(str(_artifact_dir(settings, "Transform", "transform_graph")))
    spec = tft_out.raw_feature_spec()
    raw = {fk.WINDOWS_KEY: tf.constant(windows.reshape(len(rows), -1)),
           fk.LABEL_KEY: tf.constant([r.label for r in rows], tf.float32),
           fk.LAST_PRICE_KEY: tf.constant([r.last_price for r in rows], tf.float32)}
    feed = {}
    for name, s in spec.items():  # shapes as SchemaGen inferred them ([1] for scalars)
        shape = [len(rows), *s.shape]
        if name in raw:
            feed[name] = tf.reshape(raw[name], shape)
        else:
            feed[name] = tf.fill(shape, b"") if s.dtype == tf.string else tf.zeros(shape,
                                                                                  s.dtype)
    want = tft_out.transform_raw_features(feed)[fk.WINDOWS_XF_KEY].numpy()
    model = keras().models.load_model(str(Path(summary.model_uri) / "Format-Serving"))
    norm = keras().Model(model.inputs, model.get_layer("normalize").output)
    got = norm(windows).numpy().reshape(len(rows), -1)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    # serving_default: raw windows + last price -> price units
    loaded = tf.saved_model.load(str(Path(summary.model_uri) / "Format-Serving"))
    out = loaded.signatures["serving_default"](
        windows=tf.constant(windows), last_price=raw[fk.LAST_PRICE_KEY])
    r = model(windows).numpy()
    np.testing.assert_allclose(out[fk.PREDICTION_KEY].numpy(), r, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(out[fk.PRICE_PREDICTION_KEY].numpy().reshape(-1),
                               raw[fk.LAST_PRICE_KEY].numpy() * np.exp(r.reshape(-1)),
                               rtol=1e-5)


def test_pipeline_end_to_end_gate_follows_the_evaluators_numbers(e2e):
    """TFMA's RMSE equals numpy's on the exported model's eval predictions; the model is blessed
    (and pushed as a registry version) exactly when it beats the last-value baseline."""
    from models.lstm import keras
    from models.registry import list_versions

    settings, s = e2e
    rows = _rows(Path(settings.data_dir) / "tfx" / "examples", "eval")
    model = keras().models.load_model(str(Path(s.model_uri) / "Format-Serving"))
    pred = model.predict(np.stack([r.window for r in rows]), verbose=0).reshape(-1)
    y = np.asarray([r.label for r in rows], dtype=np.float64)
    m = s.evaluator_metrics
    assert m["example_count"] == len(rows)
    rmse = float(np.sqrt(np.mean((pred - y) ** 2)))
    base = float(np.sqrt(np.mean(y ** 2)))
    assert m["root_mean_squared_error"] == pytest.approx(rmse, rel=1e-4)
    assert m["last_value_rmse"] == pytest.approx(base, rel=1e-5)
    assert m["rmse_skill"] == pytest.approx(1 - rmse / base, abs=1e-4)
    nz = y != 0
    assert m["directional_accuracy"] == pytest.approx(
        float(np.mean(np.sign(pred[nz]) == np.sign(y[nz]))), abs=1e-9)
    assert not s.had_champion
    assert s.blessed == (m["rmse_skill"] >= 1e-6)
    assert s.gate_failures == ([] if s.blessed else ["rmse_skill: value_threshold"])
    versions = list_versions(settings.model_dir)
    assert s.pushed == s.blessed == (len(versions) == 1)


def test_run_fn_on_a_tiny_slice(e2e, tmp_path):
    """run_fn alone on the e2e run's Transform output: 3 steps, exports a loadable model whose
    normalization is Transform's affine map and writes the registry metadata."""
    import tensorflow_transform as tft
    from tfx.components.trainer.fn_args_utils import DataAccessor
    from tfx.components.util import tfxio_utils
    from tfx.types import standard_artifacts

    from models.lstm import keras
    from tfx_pipelines import configs
    from tfx_pipelines.trainer import run_fn, transform_affine

    settings, _ = e2e
    xf = _artifact_dir(settings, "Transform", "transformed_examples")
    graph = str(_artifact_dir(settings, "Transform", "transform_graph"))
    examples = standard_artifacts.Examples()
    examples.uri = str(xf)
    examples.split_names = '["train", "eval"]'

    class Args:
        train_files = [str(xf / "Split-train" / "*")]
        eval_files = [str(xf / "Split-eval" / "*")]
        transform_output = graph
        serving_model_dir = str(tmp_path / "serving")
        train_steps = 3
        eval_steps = 1
        custom_config = configs.TrainerConfig(batch_size=32).custom_config()
        data_accessor = DataAccessor(
            tf_dataset_factory=tfxio_utils.get_tf_dataset_factory_from_artifact(
                [examples], []),
            record_batch_factory=None, data_view_decode_fn=None)

    run_fn(Args)
    model = keras().models.load_model(Args.serving_model_dir)
    assert model.input_shape == (None, 20, 8) and model.output_shape == (None, 1)
    meta = json.loads((tmp_path / "serving" / "miraikakaku_model.json").read_text())
    mean, var = transform_affine(tft.TFTransformOutput(graph), 20)
    np.testing.assert_allclose(model.get_layer("normalize").mean.numpy().reshape(-1), mean,
                               rtol=1e-6)
    np.testing.assert_allclose(meta["normalization"]["variance"], var, rtol=1e-9)
    assert meta["train_steps"] == 3 and meta["validation_metrics"]["n"] > 0


@pytest.fixture(scope="module")
def learnable_dir(tmp_path_factory, price_file) -> Path:
    """The real slice's windows, time split, with a learnable target: label := the window's own
    last one-bar log return (feature ``log_return_1`` at t). Real next-day returns are close to
    unpredictable, so this is what lets a short training run honestly beat both baselines."""
    import tensorflow as tf

    from tfx_pipelines.examples import row_to_example, write_examples

    src = tmp_path_factory.mktemp("learnable_src")
    write_examples([price_file], src, PRIORITY, instrument_fraction=1.0)
    out = tmp_path_factory.mktemp("learnable")
    for split in ("train", "eval"):
        (out / split).mkdir()
        with tf.io.TFRecordWriter(str(out / split / "part-0.tfrecord.gz"),
                                  options="GZIP") as w:
            for r in _rows(src, split):
                w.write(row_to_example(r._replace(label=float(r.window[-1, 0]))))
    return out


def test_gate_blesses_a_better_candidate_and_refuses_a_worse_one(learnable_dir, tmp_path):
    from models.registry import latest_version, list_versions
    from tfx_pipelines import configs
    from tfx_pipelines.local_runner import metadata_config, read_run_summary, run_pipeline
    from tfx_pipelines.pipeline import create_pipeline

    model_dir = tmp_path / "models" / "lstm_daily"
    meta = tmp_path / "metadata.sqlite"

    def run_once(label_scale: float):
        started = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=1)
        tc = configs.TrainerConfig(train_steps=150, batch_size=64, eval_steps=3,
                                   learning_rate=1e-2, label_scale=label_scale)
        p = create_pipeline(
            pipeline_name="gate-test", pipeline_root=str(tmp_path / "root"),
            examples_dir=str(learnable_dir), trainer_config=tc, model_dir=str(model_dir),
            metadata_connection_config=metadata_config(meta),
            beam_pipeline_args=configs.BEAM_PIPELINE_ARGS)
        run_pipeline(p)
        return read_run_summary(meta, since=started)

    good = run_once(1.0)
    m = good.evaluator_metrics
    print("better candidate:", json.dumps(m, sort_keys=True))
    assert good.blessed and good.pushed, m
    assert good.gate_failures == []
    assert m["rmse_skill"] > 1e-6 and m["root_mean_squared_error"] < m["last_value_rmse"]
    champion = latest_version(model_dir)
    assert champion.version == good.pushed_version == "1"
    assert champion.metadata["evaluator_metrics"]["rmse_skill"] == pytest.approx(m["rmse_skill"])
    assert champion.load().input_shape == (None, 20, 8)

    # Deliberately worse: the same model trained on the negated target.
    bad = run_once(-1.0)
    mb = bad.evaluator_metrics
    print("worse candidate:", json.dumps(mb, sort_keys=True))
    assert bad.had_champion
    assert mb["root_mean_squared_error"] > mb["champion_root_mean_squared_error"]
    assert not bad.blessed and not bad.pushed
    assert bad.gate_failures == ["rmse_skill: value_threshold",
                                 "root_mean_squared_error: change_threshold vs champion"]
    assert [v.version for v in list_versions(model_dir)] == ["1"]


def test_vertex_pipeline_compiles_to_json(tmp_path):
    from tfx_pipelines import configs
    from tfx_pipelines.vertex_runner import compile_pipeline

    vc = configs.VertexConfig(project="p-test", region="europe-west4", bucket="b-test",
                              image="europe-docker.pkg.dev/p-test/r/tfx:1",
                              endpoint_name="ep-test")
    path = compile_pipeline(str(tmp_path / "pipeline.json"), vc)
    spec = json.loads(Path(path).read_text())["pipelineSpec"]
    tasks = set(spec["root"]["dag"]["tasks"])
    for c in ("ImportExampleGen", "StatisticsGen", "SchemaGen", "ExampleValidator",
              "Transform", "Trainer", "Evaluator", "Pusher"):
        assert c in tasks
    assert any(t.startswith("latest_blessed_model_resolver") for t in tasks)
    execs = spec["deploymentSpec"]["executors"]
    images = {e["container"]["image"] for e in execs.values() if "container" in e}
    assert images == {vc.image}
    assert "google_cloud_ai_platform.pusher" in json.dumps(execs["Pusher_executor"])
    assert "google_cloud_ai_platform.trainer" in json.dumps(execs["Trainer_executor"])
    text = json.dumps(spec)
    for value in ("ep-test", "europe-west4", "gs://b-test/examples", "p-test",
                  "tfx_pipelines.preprocessing.preprocessing_fn",
                  "tfx_pipelines.trainer.run_fn", "RmseSkill"):
        assert value in text, value
