"""Stop the streaming pipeline, start it again, republish: no duplicate rows, and predictions after
the restart equal an uninterrupted run's (per-instrument state is warmed from the serving store).
"""

from __future__ import annotations

import time
import uuid

import pytest

from collector.files import events_from_file
from collector.publisher import make_publisher, publish_events
from miraikakaku.resources import init_gcp
from miraikakaku.schema import PriceEvent
from miraikakaku.settings import Settings
from models.training import train
from pipelines.prices import run
from stores.bigtable import BigtableServingStore
from stores.sqlite import SqliteServingStore
from tests.conftest import SP500, read_rows, write_csv
from transforms.features import DEFAULT_WINDOW, MIN_HISTORY

pytestmark = pytest.mark.integration
WARMUP = MIN_HISTORY + DEFAULT_WINDOW - 2  # bars before the first window (index 39)


def _wait_predictions(handle, n: int, timeout: float = 600):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if handle.summary().predictions >= n:
            return
        time.sleep(2)
    raise AssertionError(f"only {handle.summary().predictions} of {n} predictions: "
                         f"{handle.summary()}")


def _wait_performance(store, version: str, n: int, timeout: float = 120):
    deadline = time.monotonic() + timeout
    rows = []
    while time.monotonic() < deadline:
        rows = store.get_model_performance("lstm_daily", version, instrument_id="XNYS:IBM")
        if len(rows) >= n:
            assert len(rows) == n, len(rows)
            return rows
        time.sleep(2)
    raise AssertionError(f"only {len(rows)} of {n} model_performance rows in the stream")


def test_restart_warm_starts_and_republishing_adds_no_rows(pubsub_emulator, bigtable_emulator,
                                                          tmp_path):
    header, rows = read_rows(SP500, {"IBM"})
    rows = [r for r in rows if r[1] <= "2015-03-31"]
    path = write_csv(tmp_path / "us_daily_sp500_5yr_2013_2018.csv", header, rows)
    settings = Settings(data_dir=tmp_path / "var")
    mv = train([path], settings=settings, epochs=1, max_train_examples=2000, progress=False)
    events = [e for e in events_from_file(path, source="sp500_5yr") if isinstance(e, PriceEvent)]
    part_a = [e for e in events if e.session_date.year <= 2014]
    part_b = [e for e in events if e.session_date.year == 2015]
    assert len(part_a) > WARMUP + 100 and len(part_b) > 40

    # reference: one uninterrupted bounded run over everything, same model
    ref = run(["--input", str(path), "--store_path", str(tmp_path / "ref.db")], settings=settings)
    assert ref.predictions == len(events) - WARMUP
    expected = {p.as_of_date: p.predicted_log_return
                for p in SqliteServingStore(tmp_path / "ref.db").get_predictions("XNYS:IBM")}

    project = f"mk-restart-{uuid.uuid4().hex[:8]}"
    init_gcp(project, instance="miraikakaku", emulator=True)
    topic = f"projects/{project}/topics/prices"
    argv = ["--subscription", f"projects/{project}/subscriptions/prices-streaming",
            "--sink", "bigtable", "--bigtable_project", project,
            "--model_dir", str(settings.model_dir)]
    store = BigtableServingStore(project, "miraikakaku")

    publish_events(part_a, topic, publisher=make_publisher())
    first = run(argv, settings=settings)
    try:
        _wait_predictions(first, len(part_a) - WARMUP)
        # in-stream tracking: every prediction but the last met its target session's bar
        performance = _wait_performance(store, mv.version, len(part_a) - WARMUP - 1)
    finally:
        first.cancel()
    preds = {p.target_date: p for p in store.get_predictions("XNYS:IBM")}
    closes = {b.session_date: (b.adj_close or b.close) for b in store.get_bars("XNYS:IBM")}
    for row in performance:
        assert row.n == 1 and row.target_date in preds
        realized = closes[row.target_date]
        assert row.mae == pytest.approx(abs(preds[row.target_date].predicted_price - realized))
        assert row.mape == pytest.approx(100 * row.mae / realized)
    before = {p.as_of_date: p.predicted_log_return for p in store.get_predictions("XNYS:IBM")}
    assert len(before) == len(part_a) - WARMUP
    bars_before = len(store.get_bars("XNYS:IBM"))

    # restart: a new pipeline; the last 10 bars come again (at-least-once), then new ones
    publish_events(part_a[-10:] + part_b, topic, publisher=make_publisher())
    second = run(argv, settings=settings)
    try:
        _wait_predictions(second, 10 + len(part_b))
        s = second.summary()
        warmed = second.counter("ComputeFeatures", "warm_start_bars")
    finally:
        second.cancel()
    assert s.reconciled and s.duplicates == 0  # a new pipeline: the sinks absorb the repeats
    assert warmed >= MIN_HISTORY  # state came from the store, not from the republished bars
    bars = store.get_bars("XNYS:IBM")
    assert len(bars) == bars_before + len(part_b) == len(events)  # republished: no new rows
    after = {p.as_of_date: p.predicted_log_return for p in store.get_predictions("XNYS:IBM")}
    assert len(after) == len(events) - WARMUP
    assert {p.model_version for p in store.get_predictions("XNYS:IBM")} == {mv.version}
    first_new = min(e.session_date for e in part_b)
    # the first prediction after the restart, and all later ones, equal the uninterrupted run's
    for day, value in after.items():
        assert value == pytest.approx(expected[day], abs=1e-6), day
    assert after[first_new] == pytest.approx(expected[first_new], abs=1e-6)
    assert all(after[d] == pytest.approx(v, abs=1e-6) for d, v in before.items())
