"""Seams later work builds on: the store interface, the feature registry, the dead-letter schema
and the saved model's serving signature."""

from __future__ import annotations

import dataclasses
import datetime as dt

import numpy as np
import pytest

from miraikakaku.instruments import load_master
from miraikakaku.schema import AlertEvent, DeadLetter, Prediction
from stores.base import BarFlag, ServingStore
from stores.sqlite import SqliteServingStore
from tests.conftest import SP500, read_rows
from transforms.features import FEATURE_NAMES, N_FEATURES
from transforms.parsing import file_spec, parse_line

pytestmark = pytest.mark.unit
UTC = dt.timezone.utc


def test_feature_registry_is_locked():
    assert FEATURE_NAMES == ("log_return_1", "log_return_5", "sma_gap_10", "sma_gap_20",
                             "volatility_20", "rsi_14", "range_ratio", "volume_z_20")
    assert N_FEATURES == 8


def test_dead_letter_schema_is_locked():
    assert [f.name for f in dataclasses.fields(DeadLetter)] == [
        "step", "reason", "detail", "payload", "origin", "event_time", "position"]


def _aapl_events(n: int):
    header, rows = read_rows(SP500, {"AAPL"})
    cols = file_spec(SP500).columns
    m = load_master()
    return [parse_line(",".join(r), cols, default_source="sp500_5yr", master=m)
            for r in rows[-n:]]


def test_sqlite_store_implements_the_interface_idempotently(tmp_path):
    store = SqliteServingStore(tmp_path / "s.db", source_priority=["chart0", "sp500_5yr"])
    assert isinstance(store, ServingStore)
    events = _aapl_events(30)
    last = events[-1]
    pred = Prediction("XNAS:AAPL", "sp500_5yr", last.session_date, last.event_time,
                      dt.date(2018, 2, 8), last.close, 0.01, last.close * np.exp(0.01),
                      "lstm_daily", "3")
    alert = AlertEvent("r/XNAS:AAPL/20180207", "r", "pct_move", "XNAS:AAPL", last.event_time,
                       last.session_date, -0.025, 0.02, "AAPL moved -2.5%")
    dead = DeadLetter("ParseEvents", "bad_number", "x", "AAPL,2018-02-07,x", "f.csv")
    flag = BarFlag("XNAS:AAPL#1d#20180207", "sp500_5yr", "large_move")
    records = [load_master().lookup("AAPL"), *events, pred, alert, dead, flag]
    assert store.write_batch(records) == len(records)
    first = store.counts()
    store.write_batch(records)  # a replay
    assert store.counts() == first
    assert first["bars"] == 30 and first["outbox"] == 32
    bars = store.get_bars("XNAS:AAPL", start=events[10].session_date,
                          end=events[19].session_date)
    assert [b.session_date for b in bars] == [e.session_date for e in events[10:20]]
    assert store.get_bars("XNAS:AAPL", start=last.session_date)[0].flags == ("large_move",)
    q = store.get_quote("XNAS:AAPL")
    assert (q.session_date, q.close) == (last.session_date, last.close)
    assert store.get_predictions("XNAS:AAPL")[0].model_version == "3"
    assert store.get_alerts(instrument_id="XNAS:AAPL")[0] == alert
    assert store.get_dead_letters(reason="bad_number")[0] == dead
    assert store.get_instrument("aapl").instrument_id == "XNAS:AAPL"
    assert store.outbox()[0]["alert_id"] == alert.alert_id


def test_a_batch_with_an_unknown_record_type_writes_nothing(tmp_path):
    store = SqliteServingStore(tmp_path / "s.db")
    with pytest.raises(TypeError, match="cannot store"):
        store.write_batch([*_aapl_events(3), object()])
    assert store.counts()["bars"] == 0


def test_naive_datetimes_are_rejected(tmp_path):
    store = SqliteServingStore(tmp_path / "s.db")
    with pytest.raises(ValueError, match="naive"):
        store.get_alerts(since=dt.datetime(2018, 1, 1))


def test_saved_model_serving_signature(tmp_path):
    import tensorflow as tf

    from models.lstm import build_lstm_model
    from models.registry import save_version

    model = build_lstm_model(20, N_FEATURES, units=4)
    mv = save_version(model, tmp_path, {"model_name": "lstm_daily", "window": 20})
    loaded = tf.saved_model.load(str(mv.path))
    sig = loaded.signatures["serving_default"]
    (spec,) = sig.structured_input_signature[1].values()
    assert list(sig.structured_input_signature[1]) == ["windows"]
    assert spec.shape.as_list() == [None, 20, N_FEATURES] and spec.dtype == tf.float32
    assert list(sig.structured_outputs) == ["predicted_log_return"]
    out = sig(windows=tf.zeros([3, 20, N_FEATURES]))["predicted_log_return"]
    assert out.shape == (3, 1)
