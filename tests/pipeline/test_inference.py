"""RunInference in the pipeline: predictions carry the version of the model that answered, bad
inputs dead-letter, a challenger scores a stable share of instruments and both predictions are
stored (the champion's stays "the" prediction).

Windows are built from real S&P 500 bars by the stream's own sequencer
(``transforms.ordering.InstrumentSequencer``); the models are tiny untrained LSTMs saved as real
versioned SavedModels. Run: ``pytest tests/pipeline/test_inference.py -q``.
"""

from __future__ import annotations

import datetime as dt

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from collector.files import events_from_file
from miraikakaku.schema import PriceEvent
from models.lstm import build_lstm_model
from models.registry import save_version
from stores.sqlite import SqliteServingStore
from tests.conftest import SP500, read_rows, write_csv
from transforms.features import N_FEATURES
from transforms.inference import PredictNextReturn, in_challenger_share
from transforms.ordering import InstrumentSequencer, PredictionContext
from transforms.sinks import WriteToServingStore

pytestmark = pytest.mark.pipeline
WINDOW = 20


def real_windows(tmp_path, symbols: set[str], per_symbol: int
                 ) -> list[tuple[PredictionContext, np.ndarray]]:
    """The first ``per_symbol`` (context, window) pairs of each symbol, from real daily bars."""
    header, rows = read_rows(SP500, symbols)
    rows = [r for r in rows if r[1] <= "2013-06-30"]
    path = write_csv(tmp_path / "us_daily_sp500_5yr_2013_2018.csv", header, rows)
    out: list[tuple[PredictionContext, np.ndarray]] = []
    seqs: dict[str, InstrumentSequencer] = {}
    counts: dict[str, int] = {}
    for e in events_from_file(path, source="sp500_5yr"):
        if not isinstance(e, PriceEvent):
            continue
        seq = seqs.setdefault(e.instrument_id, InstrumentSequencer("XNYS", ["sp500_5yr"], WINDOW))
        bar = seq.step(e)
        if bar is None or bar.step.window is None:
            continue
        if counts.get(e.instrument_id, 0) < per_symbol:
            counts[e.instrument_id] = counts.get(e.instrument_id, 0) + 1
            out.append((seq.context(bar), bar.step.window))
    assert len(counts) == len(symbols) and set(counts.values()) == {per_symbol}
    return out


def _model(tmp_path, seed: int):
    import tensorflow as tf

    tf.keras.utils.set_random_seed(seed)
    model = build_lstm_model(WINDOW, N_FEATURES, units=4)
    return model, save_version(model, tmp_path / "models", {"model_name": "lstm_daily",
                                                             "window": WINDOW})


def test_broken_windows_are_dead_lettered_and_the_rest_predicted(tmp_path):
    model, mv = _model(tmp_path, 0)
    good = real_windows(tmp_path, {"AAPL"}, 5)
    last = good[-1][0]
    wrong_shape = (PredictionContext(last.instrument_id, last.source,
                                     last.as_of_date + dt.timedelta(days=10), last.as_of_time,
                                     last.target_date, last.base_price, "USD"),
                   np.zeros((5, 3), dtype=np.float32))
    not_finite = (PredictionContext(last.instrument_id, last.source,
                                    last.as_of_date + dt.timedelta(days=11), last.as_of_time,
                                    last.target_date, last.base_price, "USD"),
                  np.full((WINDOW, N_FEATURES), np.nan, dtype=np.float32))
    expected = model.predict(np.stack([w for _, w in good]), verbose=0).reshape(-1)
    with TestPipeline() as p:
        out = (p | beam.Create([*good, wrong_shape, not_finite])
               | PredictNextReturn(str(mv.path), "lstm_daily", mv.version, min_batch_size=1,
                                   max_batch_size=1))
        assert_that(out.predictions | beam.Map(lambda r: (r.as_of_date, r.model_name,
                                                          r.model_version, r.role,
                                                          round(r.predicted_log_return, 5))),
                    equal_to([(c.as_of_date, "lstm_daily", mv.version, "champion",
                               round(float(v), 5)) for (c, _), v in zip(good, expected)]),
                    label="Predictions")
        assert_that(out.dead_letters | beam.Map(lambda d: (d.step, d.reason,
                                                           d.payload.split(" ")[2],
                                                           d.detail.split(":")[0])),
                    equal_to([("RunInference", "inference_failed",
                               f"as_of={wrong_shape[0].as_of_date}", "ValueError"),
                              ("RunInference", "non_finite_prediction",
                               f"as_of={not_finite[0].as_of_date}", "model returned nan")]),
                    label="DeadLetters")


def test_challenger_scores_a_stable_share_and_both_predictions_are_stored(tmp_path):
    champion, v1 = _model(tmp_path, 1)
    challenger, v2 = _model(tmp_path, 2)
    symbols = {"AAPL", "MSFT", "IBM", "XOM", "JPM", "KO", "PFE", "GE"}
    windows = real_windows(tmp_path, symbols, 3)
    share = 0.5
    chosen = {c.instrument_id for c, _ in windows if in_challenger_share(c.instrument_id, share)}
    assert 0 < len(chosen) < len(symbols)  # the share splits this set (else the test is vacuous)
    stack = np.stack([w for _, w in windows])
    exp1 = champion.predict(stack, verbose=0).reshape(-1)
    exp2 = challenger.predict(stack, verbose=0).reshape(-1)
    expected = [(c.instrument_id, c.as_of_date, v1.version, "champion", round(float(a), 5))
                for (c, _), a in zip(windows, exp1)]
    expected += [(c.instrument_id, c.as_of_date, v2.version, "challenger", round(float(b), 5))
                 for (c, _), b in zip(windows, exp2) if c.instrument_id in chosen]
    db = tmp_path / "serving.db"
    with TestPipeline() as p:
        out = (p | beam.Create(windows)
               | PredictNextReturn(str(v1.path), "lstm_daily", v1.version, 4, 16,
                                   challenger_uri=str(v2.path), challenger_share=share))
        assert_that(out.predictions | beam.Map(
            lambda r: (r.instrument_id, r.as_of_date, r.model_version, r.role,
                       round(r.predicted_log_return, 5))), equal_to(expected))
        out.predictions | WriteToServingStore(str(db), ["sp500_5yr"])
    store = SqliteServingStore(db)
    for iid in {c.instrument_id for c, _ in windows}:
        champ = store.get_predictions(iid)
        both = store.get_predictions(iid, role=None)
        assert {p.role for p in champ} == {"champion"} and len(champ) == 3
        assert {p.model_version for p in champ} == {v1.version}
        assert len(both) == (6 if iid in chosen else 3)
        assert [p.role for p in store.get_predictions(iid, role="challenger")] == \
            (["challenger"] * 3 if iid in chosen else [])
    # idempotent: rewriting both roles leaves the same rows
    stored = [p for iid in {c.instrument_id for c, _ in windows}
              for p in store.get_predictions(iid, role=None)]
    assert store.write_batch(stored) == len(stored) == len(expected)
    assert store.counts()["predictions"] == len(expected)


def test_challenger_share_is_stable_and_roughly_proportional():
    ids = [f"XNYS:S{i:04d}" for i in range(2000)]
    first = [in_challenger_share(i, 0.2) for i in ids]
    assert first == [in_challenger_share(i, 0.2) for i in ids]
    assert 300 < sum(first) < 500  # 20 % of 2,000 within ~5 sigma
    assert not any(in_challenger_share(i, 0.0) for i in ids)
    assert all(in_challenger_share(i, 1.0) for i in ids)


def test_run_with_a_challenger_stores_both_and_keeps_the_champion_as_the_prediction(tmp_path):
    from miraikakaku.settings import Settings
    from pipelines.prices import run

    _, v1 = _model(tmp_path, 3)
    _, v2 = _model(tmp_path, 4)
    header, rows = read_rows(SP500, {"AAPL", "IBM"})
    path = write_csv(tmp_path / "us_daily_sp500_5yr_2013_2018.csv", header,
                     [r for r in rows if r[1] <= "2013-05-31"])
    db = tmp_path / "serving.db"
    argv = ["--input", str(path), "--store_path", str(db), "--model_dir",
            str(tmp_path / "models"), "--model_version", v1.version,
            "--challenger_model_version", v2.version, "--challenger_share", "1"]
    summary = run(argv, settings=Settings(data_dir=tmp_path / "var"))
    store = SqliteServingStore(db)
    for iid in ("XNAS:AAPL", "XNYS:IBM"):
        champ = store.get_predictions(iid)
        chall = store.get_predictions(iid, role="challenger")
        assert champ and {p.model_version for p in champ} == {v1.version}
        assert {p.model_version for p in chall} == {v2.version}
        assert [p.as_of_date for p in champ] == [p.as_of_date for p in chall]
    assert summary.predictions == 2 * sum(len(store.get_predictions(i))
                                          for i in ("XNAS:AAPL", "XNYS:IBM"))
    with pytest.raises(ValueError, match="challenger is the champion"):
        run([*argv[:-4], "--challenger_model_version", v1.version, "--challenger_share", "0.5"],
            settings=Settings(data_dir=tmp_path / "var"))
    with pytest.raises(ValueError, match="vertex_endpoint_id"):
        run([*argv[:6], "--model_handler", "vertex"], settings=Settings(data_dir=tmp_path / "v"))
