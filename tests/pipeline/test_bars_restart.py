"""Session bars across a restart: the aggregation warms from the trades already stored, so the
session bar after a restart equals an uninterrupted run's, with redelivered trades counted once.

Real IBM trades of 2013-10-07 (Lean ticks, from 15:00 New York time to after the close). The
aggregation DoFn runs as a plain object with in-memory state (a restart is a new DoFn with empty
state, as a new pipeline has); the warm store is a real SQLite serving store holding the trades
written before the "crash".
"""

from __future__ import annotations

import datetime as dt

import pytest

from miraikakaku.schema import PriceEvent
from stores.spec import StoreSpec
from stores.sqlite import SqliteServingStore
from tests.conftest import SHARED
from transforms import progress
from transforms.bars import _AggregateTradesFn
from transforms.parsing import file_spec, iter_file

pytestmark = pytest.mark.pipeline
UTC = dt.timezone.utc
TICKS = SHARED / "normalized" / "us_tick_trades_lean.normalized.csv.gz"


class _Cell:
    def __init__(self) -> None:
        self.value = None

    def read(self):
        return self.value

    def write(self, value) -> None:
        self.value = value

    def clear(self) -> None:
        self.value = None

    def set(self, _timestamp) -> None:  # the idle timer: not fired here
        pass


@pytest.fixture(scope="module")
def trades() -> list[PriceEvent]:
    start = dt.datetime(2013, 10, 7, 19, 0, tzinfo=UTC)  # 15:00 New York
    end = dt.datetime(2013, 10, 7, 20, 10, tzinfo=UTC)  # 10 minutes after the close
    out = []
    for e in iter_file(file_spec(TICKS, "lean")):
        if isinstance(e, PriceEvent) and e.symbol == "IBM" and start <= e.event_time < end:
            out.append(e)
        elif isinstance(e, PriceEvent) and e.event_time >= end:
            break
    assert len(out) > 5000
    return out


def _session_bars(fn: _AggregateTradesFn, events, state: _Cell) -> list[PriceEvent]:
    bars = []
    for e in events:
        for out in fn.process((f"{e.instrument_id}|{e.source}", e), state, _Cell()):
            value = getattr(out, "value", out)
            if getattr(out, "tag", None) == fn.SESSION:
                bars.append(value)
    return bars


def _fn(warm=None) -> _AggregateTradesFn:
    fn = _AggregateTradesFn(dt.timedelta(seconds=60), 5.0, "XNYS", warm)
    fn.setup()
    return fn


def test_a_restart_mid_session_rebuilds_the_whole_session_bar(trades, tmp_path):
    progress.reset()
    (reference,) = _session_bars(_fn(), trades, _Cell())
    cut = len(trades) // 2
    store_path = tmp_path / "serving.db"
    store = SqliteServingStore(store_path)
    store.write_batch(trades[:cut])  # the trades stored (and acknowledged) before the crash
    # the restart: a new DoFn, empty state; Pub/Sub redelivers the 300 trades before the cut
    # that were stored but not yet acknowledged, then the rest of the session
    redelivered = trades[cut - 300:cut]
    restarted = _fn(StoreSpec("sqlite", path=str(store_path)))
    (after,) = _session_bars(restarted, redelivered + trades[cut:], _Cell())
    fields = ("open", "high", "low", "close", "volume", "event_time", "session_date")
    assert [getattr(after, f) for f in fields] == [getattr(reference, f) for f in fields]
    assert progress.counters()[("AggregateTrades", "redelivered_trades")] == 300


def test_without_a_warm_store_the_restart_loses_the_first_half(trades, tmp_path):
    """What the warm start fixes: the same restart without it starts the session again."""
    (reference,) = _session_bars(_fn(), trades, _Cell())
    cut = len(trades) // 2
    (after,) = _session_bars(_fn(), trades[cut:], _Cell())
    assert after.volume < reference.volume and after.open != reference.open
