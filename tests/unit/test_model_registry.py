"""Unit tests for the model registry's versioning and training's date split and metrics.

Pure Python and numpy (no TensorFlow): run with
``python -m pytest tests/unit/test_model_registry.py -q``.
"""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import json  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from models.registry import (  # noqa: E402
    METADATA_FILE,
    latest_version,
    list_versions,
    next_version,
    save_version,
)
from models.training import Examples, evaluate_forecasts, split_by_date  # noqa: E402

pytestmark = pytest.mark.unit


def _complete(root, version, **meta):
    d = root / str(version)
    d.mkdir(parents=True)
    (d / METADATA_FILE).write_text(json.dumps({"model_name": "lstm_daily", **meta}))


def test_empty_registry(tmp_path):
    assert list_versions(tmp_path / "missing") == []
    assert next_version(tmp_path / "missing") == 1
    with pytest.raises(FileNotFoundError, match="miraikakaku train"):
        latest_version(tmp_path)


def test_versions_are_integers_and_only_complete_ones_count(tmp_path):
    _complete(tmp_path, 2, n_train=5)
    _complete(tmp_path, 10)
    (tmp_path / "11").mkdir()  # half-written by someone else: not a version, but taken
    (tmp_path / ".incoming-x").mkdir()
    (tmp_path / "notes").mkdir()
    versions = list_versions(tmp_path)
    assert [v.version for v in versions] == ["2", "10"]  # numeric, not text, order
    assert versions[0].metadata["n_train"] == 5 and versions[0].name == "lstm_daily"
    assert latest_version(tmp_path).path == tmp_path / "10"
    assert next_version(tmp_path) == 12


class _FakeModel:
    """Stands in for a Keras model: ``save`` writes a file, or fails."""

    def __init__(self, fail=False):
        self.fail = fail

    def save(self, path, **kwargs):
        if self.fail:
            raise OSError("disk full")
        with open(os.path.join(path, "saved_model.pb"), "w") as f:
            f.write("x")


def test_save_version_is_atomic(tmp_path, monkeypatch):
    monkeypatch.setattr("models.registry._serving_signature", lambda model: None)
    v = save_version(_FakeModel(), tmp_path / "lstm_daily", {"epochs": 1})
    assert (v.version, v.name) == ("1", "lstm_daily")
    assert v.metadata["epochs"] == 1 and v.metadata["created_at"].endswith("+00:00")
    with pytest.raises(OSError):
        save_version(_FakeModel(fail=True), tmp_path / "lstm_daily", {})
    assert sorted(p.name for p in (tmp_path / "lstm_daily").iterdir()) == ["1"]  # no leftovers
    with pytest.raises(TypeError):
        save_version(_FakeModel(), tmp_path / "lstm_daily", {"bad": object()})
    assert [x.version for x in list_versions(tmp_path / "lstm_daily")] == ["1"]


def _examples(days, targets):
    n = len(days)
    return Examples(np.zeros((n, 2, 1), np.float32), np.arange(n, dtype=np.float32),
                    np.array(days, "datetime64[D]"), np.array(targets, "datetime64[D]"),
                    np.array(["X:A"] * n, dtype=object))


def test_split_has_no_look_ahead():
    days = ["2020-01-01", "2020-01-02", "2020-01-03", "2020-01-06", "2020-01-07"]
    targets = ["2020-01-02", "2020-01-03", "2020-01-06", "2020-01-07", "2020-01-08"]
    ex = _examples(days, targets)
    train_set, val_set, cut = split_by_date(ex, "2020-01-03")
    assert str(cut) == "2020-01-03"
    assert list(train_set.y) == [0, 1] and list(val_set.y) == [3, 4]  # the cutoff day dropped
    assert train_set.target_date.max() <= np.datetime64(cut) < val_set.as_of_date.min()
    # a training example whose target lies after the cutoff is dropped too
    ex2 = _examples(["2020-01-02", "2020-01-03", "2020-01-10"],
                    ["2020-01-09", "2020-01-06", "2020-01-13"])
    train2, _, _ = split_by_date(ex2, "2020-01-06")
    assert list(train2.y) == [1]
    default_train, default_val, default_cut = split_by_date(ex)
    assert str(default_cut) == "2020-01-06"  # 85th percentile, an existing date
    assert len(default_val) == 1
    with pytest.raises(ValueError):
        split_by_date(ex, "2030-01-01")


def test_evaluate_forecasts_against_the_zero_baseline():
    y = np.array([0.01, -0.02, 0.0, 0.03])
    pred = np.array([0.02, 0.01, 0.01, 0.01])
    m = evaluate_forecasts(y, pred)
    assert m["rmse"] == pytest.approx(np.sqrt(np.mean((pred - y) ** 2)))
    assert m["mae"] == pytest.approx(np.mean(np.abs(pred - y)))
    assert m["zero_baseline_rmse"] == pytest.approx(np.sqrt(np.mean(y ** 2)))
    assert m["zero_baseline_mae"] == pytest.approx(0.015)
    assert m["directional_accuracy"] == pytest.approx(2 / 3)  # the zero return is not scored
    assert m["up_fraction"] == pytest.approx(2 / 3) and m["n_nonzero"] == 3
    with pytest.raises(ValueError):
        evaluate_forecasts(y, pred[:2])
