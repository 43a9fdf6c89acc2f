"""Model hot-swap in a running streaming pipeline (Pub/Sub and Bigtable emulators, DirectRunner).

Real IBM daily bars are published; the stream predicts with model version 1; version 2 is saved
into the model directory while the pipeline runs; bars published after that are predicted by
version 2, read from ``PredictionResult.model_id`` of the model that answered, without a restart.
Run: ``pytest tests/integration/test_hot_swap.py -q`` (about a minute and a half here).
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
from pipelines.prices import run
from stores.bigtable import BigtableServingStore
from tests.conftest import SP500, read_rows, write_csv
from tests.pipeline.test_inference import _model
from transforms.features import DEFAULT_WINDOW, MIN_HISTORY

pytestmark = pytest.mark.integration
WARMUP = MIN_HISTORY + DEFAULT_WINDOW - 2  # bars before the first window


def _wait(what: str, check, timeout: float):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(1)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def test_hot_swap_picks_up_a_new_version_without_restart(pubsub_emulator, bigtable_emulator,
                                                          tmp_path):
    header, rows = read_rows(SP500, {"IBM"})
    path = write_csv(tmp_path / "us_daily_sp500_5yr_2013_2018.csv", header, rows[:WARMUP + 30])
    events = [e for e in events_from_file(path, source="sp500_5yr") if isinstance(e, PriceEvent)]
    part_a, part_b = events[:WARMUP + 10], events[WARMUP + 10:]
    model_dir = tmp_path / "models"
    _, v1 = _model(tmp_path, 21)  # tests.pipeline.test_inference saves under tmp_path/models

    project = f"mk-swap-{uuid.uuid4().hex[:8]}"
    init_gcp(project, instance="miraikakaku", emulator=True)
    topic = f"projects/{project}/topics/prices"
    store = BigtableServingStore(project, "miraikakaku")
    publish_events(part_a, topic, publisher=make_publisher())
    t0 = time.monotonic()
    handle = run(["--subscription", f"projects/{project}/subscriptions/prices-streaming",
                  "--sink", "bigtable", "--bigtable_project", project,
                  "--model_dir", str(model_dir), "--model_watch_interval_seconds", "2",
                  "--inference_max_batch_duration_secs", "1"],
                 settings=Settings(data_dir=tmp_path / "var"))
    try:
        _wait("predictions by v1", lambda: handle.summary().predictions >= 10, 300)
        first = store.get_predictions("XNYS:IBM")
        assert len(first) == 10 and {p.model_version for p in first} == {v1.version}

        _, v2 = _model(tmp_path, 22)  # a new complete version appears while the job runs
        assert int(v2.version) == int(v1.version) + 1
        time.sleep(3)  # > --model_watch_interval_seconds: the next batch looks at the dir
        publish_events(part_b, topic, publisher=make_publisher())
        _wait("predictions of the bars published after v2",
              lambda: handle.summary().predictions >= len(events) - WARMUP, 300)
        summary = handle.summary()
        swaps = handle.counter("PredictNextReturn", "model_swaps")
    finally:
        handle.cancel()
    seconds = time.monotonic() - t0
    preds = {p.as_of_date: p for p in store.get_predictions("XNYS:IBM")}
    assert len(preds) == len(events) - WARMUP
    later = [preds[e.session_date] for e in part_b]
    assert {p.model_version for p in later} == {v2.version}
    assert {p.model_version for d, p in preds.items() if d <= part_a[-1].session_date} == \
        {v1.version}
    assert summary.inference_dead_letters == 0
    assert swaps >= 1
    print(f"hot-swap run: {seconds:.0f} s, {len(part_a) - WARMUP} predictions by v1, "
          f"{len(later)} by v2")
