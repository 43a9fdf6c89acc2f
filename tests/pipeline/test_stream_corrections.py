"""The correction policy in the stream: of two messages with one event id and other content, the
later published revision is stored whatever order they arrive in; the other is kept as history
and counted; an exact repeat is dropped and counted.

Real IBM trades of the Lean tick file; a "correction" is a trade sent again with the price of a
later real trade and a later publish time (``PriceEvent.provenance[2]``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import sqlite3

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.transforms.window import TimestampedValue

from miraikakaku.schema import PriceEvent
from tests.conftest import SHARED
from transforms import progress
from transforms.dedup import DeduplicateEvents
from transforms.parsing import file_spec, iter_file
from transforms.sinks import WriteToServingStore

pytestmark = pytest.mark.pipeline
UTC = dt.timezone.utc
TICKS = SHARED / "normalized" / "us_tick_trades_lean.normalized.csv.gz"
SUB = "projects/miraikakaku-local/subscriptions/prices-pipeline"


@pytest.fixture(scope="module")
def trades() -> list[PriceEvent]:
    start = dt.datetime(2013, 10, 7, 14, 30, tzinfo=UTC)
    out = []
    for e in iter_file(file_spec(TICKS, "lean")):
        if isinstance(e, PriceEvent) and e.symbol == "IBM" and e.event_time >= start:
            out.append(e)
            if len(out) == 40:
                break
    assert len({t.close for t in out}) > 3, "need trades at several prices"
    return out


def _message(e: PriceEvent, n: int, published: str) -> PriceEvent:
    return dataclasses.replace(e, provenance=(SUB, f"message:{n}", published))


def _run(events: list[PriceEvent], path) -> dict[str, int]:
    progress.reset()
    stream = TestStream()
    for e in events:  # one element per bundle: arrival order is the list's order
        stream = stream.add_elements([TimestampedValue(e, e.event_time.timestamp())])
    stream = stream.advance_watermark_to_infinity()
    opts = PipelineOptions()
    opts.view_as(StandardOptions).streaming = True
    with TestPipeline(options=opts) as p:
        out = p | stream | DeduplicateEvents(bounded=False)
        ((out.events, out.revisions) | beam.Flatten()
         | WriteToServingStore(str(path), ["lean"], min_batch_size=1, max_batch_size=1))
    return {name: n for (ns, name), n in progress.counters().items()
            if ns == "DeduplicateEvents"}


def _stored(path, event_id: str):
    conn = sqlite3.connect(path)
    bar = conn.execute("SELECT close FROM bars WHERE event_id = ?", (event_id,)).fetchall()
    history = conn.execute("SELECT payload FROM bar_revisions WHERE event_id = ?",
                           (event_id,)).fetchall()
    n = conn.execute("SELECT count(*) FROM bars").fetchone()[0]
    return [c for (c,) in bar], [p for (p,) in history], n


@pytest.mark.parametrize("order", ["first_print_first", "correction_first"])
def test_the_later_published_revision_wins_in_either_arrival_order(trades, tmp_path, order):
    base = [_message(e, i + 1, f"2013-10-07T14:30:{i:02d}.000000Z")
            for i, e in enumerate(trades[:30])]
    target = base[10]
    other_price = next(t.close for t in trades[30:] if t.close != target.close)
    correction = _message(dataclasses.replace(target, close=other_price, high=max(
        target.high, other_price), low=min(target.low, other_price)), 99,
        "2013-10-07T15:00:00.000000Z")
    events = (base + [correction]) if order == "first_print_first" else \
        ([correction] + base)
    path = tmp_path / "s.db"
    counts = _run(events, path)
    closes, history, n = _stored(path, target.event_id)
    # the correction arriving second rewrites the stored trade: a rewrite, not a second trade
    rewrites = {"rewrites": 1} if order == "first_print_first" else {}
    assert counts == {"duplicates": 1, "conflicting_duplicates": 1, **rewrites}
    assert closes == [other_price]  # the later publish time wins, whatever arrived first
    assert n == 30  # 31 messages = 30 stored + 1 conflicting duplicate
    assert history and all(str(target.close) in h or f"{target.close:g}" in h for h in history)


def test_an_exact_repeat_is_dropped_and_a_later_published_older_text_still_wins(trades,
                                                                                tmp_path):
    base = [_message(e, i + 1, f"2013-10-07T14:31:{i:02d}.000000Z")
            for i, e in enumerate(trades[:20])]
    repeat = dataclasses.replace(base[5], provenance=(SUB, "message:500",
                                                      "2013-10-07T14:40:00.000000Z"))
    # message ids compare by value: message:100 is later than message:99 at one publish time;
    # b repeats base[7]'s content, a later than base[7] but earlier than b: b's content wins
    t = base[7]
    price = next(x.close for x in trades[20:] if x.close != t.close)
    a = _message(dataclasses.replace(t, close=price, high=max(t.high, price),
                                     low=min(t.low, price)), 99, "2013-10-07T14:50:00.000000Z")
    b = _message(t, 100, "2013-10-07T14:50:00.000000Z")
    path = tmp_path / "s.db"
    counts = _run(base + [repeat, b, a], path)
    closes, history, n = _stored(path, t.event_id)
    assert counts == {"duplicates": 3, "conflicting_duplicates": 1}  # a loses: no rewrite
    assert n == 20
    assert closes == [t.close]  # message:100 (the original price) is the later revision
    assert len(history) >= 1
    closes5, history5, _ = _stored(path, base[5].event_id)
    assert closes5 == [base[5].close] and history5 == []  # a repeat leaves no history
