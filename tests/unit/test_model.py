"""Unit tests for the LSTM builder, training examples (stream parity), training and Beam loading.

Run with ``TF_USE_LEGACY_KERAS=1 python -m pytest tests/unit/test_model.py -q``. The slice tests
use ~120 real rows each of AAPL (S&P 500 file) and 7203.T (chart0, Tokyo file) from
../shared/data/normalized.
"""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import collections  # noqa: E402
import gzip  # noqa: E402
import json  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from miraikakaku.instruments import load_master  # noqa: E402
from miraikakaku.schema import DeadLetter  # noqa: E402
from miraikakaku.settings import Settings  # noqa: E402
from models.lstm import build_lstm_model, keras  # noqa: E402
from models.registry import METADATA_FILE, latest_version, list_versions, save_version  # noqa: E402
from models.training import build_examples, train  # noqa: E402
from transforms.features import DEFAULT_WINDOW, FEATURE_NAMES, N_FEATURES  # noqa: E402
from transforms.ordering import InstrumentSequencer, event_sort_key  # noqa: E402
from transforms.parsing import file_spec, iter_file  # noqa: E402

pytestmark = pytest.mark.unit

PRIORITY = ["chart0", "sp500_5yr", "yfinance", "mlbot", "user"]
START, END = "2017-06-01", "2017-11-24"


def _rows(path, prefix: str, keep) -> list[str]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        header = f.readline().rstrip("\n")
        lines = (line.rstrip("\n") for line in f if line.startswith(prefix))
        return [header] + [line for line in lines if keep(line.split(","))]


@pytest.fixture(scope="module")
def slice_files(tmp_path_factory):
    """Two small real files: ~120 AAPL rows (no source column) and ~120 7203.T chart0 rows."""
    shared = Settings().shared_data_dir / "normalized"
    us = shared / "us_daily_sp500_5yr_2013_2018.normalized.csv.gz"
    jp = shared / "jp_daily.normalized.csv.gz"
    if not (us.exists() and jp.exists()):
        pytest.skip(f"real data not found in {shared}")
    d = tmp_path_factory.mktemp("slice")
    aapl = _rows(us, "AAPL,", lambda f: START <= f[1] <= END)
    toyota = _rows(jp, "7203.T,", lambda f: f[8] == "chart0" and START <= f[1] <= END)
    assert aapl[0] == "symbol,date,open,high,low,close,volume"
    assert toyota[0] == "symbol,date,open,high,low,close,volume,adj_close,source"
    assert 110 <= len(aapl) - 1 <= 130 and 110 <= len(toyota) - 1 <= 130
    paths = [d / "aapl.csv", d / "toyota.csv"]
    for p, rows in zip(paths, (aapl, toyota)):
        p.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return paths


@pytest.fixture(scope="module")
def examples(slice_files):
    return build_examples(slice_files, PRIORITY)


@pytest.fixture(scope="module")
def trained(slice_files, tmp_path_factory):
    """Two training runs (epochs=1) into the same fresh data dir."""
    settings = Settings(data_dir=tmp_path_factory.mktemp("data"))
    first = train(slice_files, settings=settings, epochs=1, batch_size=32, progress=False)
    second = train(slice_files, settings=settings, epochs=1, batch_size=32, progress=False)
    return settings, first, second


def test_builder_shapes_and_names():
    model = build_lstm_model(DEFAULT_WINDOW, N_FEATURES, units=8)
    assert model.input_shape == (None, DEFAULT_WINDOW, N_FEATURES)
    assert model.output_shape == (None, 1)
    assert model.input_names == ["windows"] and model.output_names == ["predicted_log_return"]
    out = model.predict(np.zeros((3, DEFAULT_WINDOW, N_FEATURES), np.float32), verbose=0)
    assert out.shape == (3, 1) and out.dtype == np.float32
    assert model.optimizer is not None and model.loss == "mse"


def test_builder_rejects_bad_statistics():
    with pytest.raises(ValueError):
        build_lstm_model(DEFAULT_WINDOW, N_FEATURES, mean=np.zeros(3), variance=np.ones(3))
    with pytest.raises(ValueError):
        build_lstm_model(0, N_FEATURES)


def test_normalization_is_inside_the_saved_model(tmp_path):
    rng = np.random.default_rng(1)
    mean = rng.normal(size=N_FEATURES).astype(np.float32)
    variance = rng.uniform(0.5, 4.0, size=N_FEATURES).astype(np.float32)
    model = build_lstm_model(DEFAULT_WINDOW, N_FEATURES, units=8, mean=mean, variance=variance)
    raw = rng.normal(loc=mean, scale=np.sqrt(variance) * 2,
                     size=(5, DEFAULT_WINDOW, N_FEATURES)).astype(np.float32)
    expected = model.predict(raw, verbose=0)

    # The same LSTM/Dense weights without scaling, fed pre-scaled windows, agree: scaling happens
    # inside the model, on raw input.
    plain = build_lstm_model(DEFAULT_WINDOW, N_FEATURES, units=8)
    for name in ("lstm", "predicted_log_return"):
        plain.get_layer(name).set_weights(model.get_layer(name).get_weights())
    scaled = (raw - mean) / np.sqrt(variance)
    np.testing.assert_allclose(plain.predict(scaled, verbose=0), expected, rtol=1e-5, atol=1e-6)

    version = save_version(model, tmp_path / "m", {"note": "test"})
    assert version.version == "1" and (version.path / "saved_model.pb").is_file()
    loaded = keras().models.load_model(str(version.path))
    np.testing.assert_allclose(loaded.predict(raw, verbose=0), expected, rtol=1e-6, atol=1e-7)
    norm = loaded.get_layer("normalize")
    np.testing.assert_allclose(np.asarray(norm.mean).reshape(-1), mean, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(norm.variance).reshape(-1), variance, rtol=1e-6)


def _by_hand(paths):
    """Feed the slice's events through InstrumentSequencer directly: {(iid, date): window}."""
    master = load_master()
    groups = collections.defaultdict(list)
    for path in paths:
        for e in iter_file(file_spec(path)):
            assert not isinstance(e, DeadLetter), e
            groups[e.instrument_id].append(e)
    windows, flags = {}, []
    for iid, events in groups.items():
        seq = InstrumentSequencer(master.resolve(events[0].symbol).calendar, PRIORITY)
        for e in sorted(events, key=event_sort_key({s: i for i, s in enumerate(PRIORITY)})):
            bar = seq.step(e)
            flags.extend(bar.flags)
            if bar.step.window is not None:
                windows[(iid, np.datetime64(e.session_date, "D"))] = bar.step.window
    return windows, flags


def test_build_examples_windows_match_the_sequencer(slice_files, examples):
    windows, flags = _by_hand(slice_files)
    assert not {"gap", "history_reset", "source_switch"} & set(flags)  # a continuous slice
    assert examples.x.shape == (len(examples), DEFAULT_WINDOW, N_FEATURES)
    assert examples.x.dtype == np.float32 and examples.y.dtype == np.float32
    assert examples.as_of_date.dtype == np.dtype("datetime64[D]")
    assert examples.instrument_id.dtype == object
    assert set(examples.instrument_id) == {"XNAS:AAPL", "XTKS:7203"}
    # every window but each instrument's last one (no next bar) is an example
    assert len(examples) == len(windows) - 2
    for x, iid, day in zip(examples.x, examples.instrument_id, examples.as_of_date):
        np.testing.assert_array_equal(x, windows[(iid, day)])


def test_build_examples_targets_are_next_log_returns(slice_files, examples):
    frames = []
    for path in slice_files:
        df = pd.read_csv(path)
        price = df["adj_close"].fillna(df["close"]) if "adj_close" in df else df["close"]
        df = df.assign(price=price).sort_values("date")
        df["target"] = np.log(df["price"].shift(-1) / df["price"])
        df["next_date"] = df["date"].shift(-1)
        frames.append(df)
    expected = pd.concat(frames).set_index(["symbol", "date"])
    symbol = {"XNAS:AAPL": "AAPL", "XTKS:7203": "7203.T"}
    for y, iid, day, target_day in zip(examples.y, examples.instrument_id, examples.as_of_date,
                                       examples.target_date):
        row = expected.loc[(symbol[iid], str(day))]
        assert row["next_date"] == str(target_day)
        assert y == pytest.approx(row["target"], rel=1e-6, abs=1e-8)


def test_train_saves_versions_with_metadata(trained, examples):
    settings, first, second = trained
    assert (first.version, second.version) == ("1", "2")
    assert [v.version for v in list_versions(settings.model_dir)] == ["1", "2"]
    assert latest_version(settings.model_dir).path == second.path
    meta = json.loads((first.path / METADATA_FILE).read_text())
    for key in ("model_name", "version", "created_at", "feature_names", "window", "n_features",
                "units", "epochs", "train_date_range", "validation_date_range", "n_train", "n_val",
                "validation_metrics", "input_files", "source_priority", "cutoff_date"):
        assert key in meta, key
    assert meta["model_name"] == settings.model_name and meta["version"] == "1"
    assert meta["feature_names"] == list(FEATURE_NAMES) and meta["window"] == DEFAULT_WINDOW
    assert meta["train_date_range"][1] < meta["cutoff_date"] < meta["validation_date_range"][0]
    for key in ("rmse", "mae", "zero_baseline_rmse", "zero_baseline_mae",
                "directional_accuracy"):
        assert np.isfinite(meta["validation_metrics"][key]), key
    # the split drops the examples dated on the cutoff: fewer than all, none twice
    assert 0 < meta["n_val"] and meta["n_train"] + meta["n_val"] < len(examples)


def test_beam_handler_loads_the_version(trained, examples):
    from apache_beam.ml.inference.tensorflow_inference import TFModelHandlerNumpy

    _, first, _ = trained
    batch = list(examples.x[:7])
    handler = TFModelHandlerNumpy(model_uri=str(first.path))
    model = handler.load_model()
    results = list(handler.run_inference(batch, model))
    got = np.array([np.asarray(r.inference).reshape(-1)[0] for r in results])
    want = first.load().predict(np.stack(batch), verbose=0).reshape(-1)
    assert len(results) == 7
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
