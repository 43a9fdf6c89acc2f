"""The hostile message corpus (``tests/hostile_stream.py``: 134 messages, about 100 kinds of bad or
tricky payloads and attributes) published to the Pub/Sub emulator and run through the streaming
pipeline into the Bigtable emulator: every message's fate is checked in Bigtable (the trade under
its row key with the expected price, nothing else stored) and on the dead-letter topic (its
reason), and published = stored + dead-lettered + duplicates reconciles, counted in the stores.
"""

from __future__ import annotations

import collections
import datetime as dt
import json
import time
import uuid

import pytest
from google.cloud import pubsub_v1

from collector.files import events_from_file
from miraikakaku import rowkeys
from miraikakaku.resources import init_gcp
from miraikakaku.schema import PriceEvent
from miraikakaku.settings import Settings
from pipelines.prices import run
from stores.bigtable import BigtableServingStore
from tests.conftest import SHARED
from tests.emulators import drain
from tests.hostile_stream import build

pytestmark = pytest.mark.integration
UTC = dt.timezone.utc
TICKS = SHARED / "normalized" / "us_tick_trades_lean.normalized.csv.gz"
START = dt.datetime(2013, 10, 7, 14, 0, tzinfo=UTC)


def test_every_hostile_message_meets_its_fate_in_bigtable_and_the_dead_letter_topic(
        pubsub_emulator, bigtable_emulator, tmp_path):
    trades = [e for e in events_from_file(TICKS, symbols=["IBM"], start=START,
                                          end=START + dt.timedelta(minutes=30), limit=400,
                                          source="lean", sorted_input=True)
              if isinstance(e, PriceEvent)]
    cases = build(trades)
    fates = collections.Counter(c.fate for c in cases)
    assert len(cases) == 134 and fates == {"dead": 101, "stored": 30, "duplicate": 3}

    project = f"mk-hostile-{uuid.uuid4().hex[:8]}"
    init_gcp(project, instance="miraikakaku", emulator=True)
    sub = pubsub_v1.SubscriberClient()
    dl_sub = f"projects/{project}/subscriptions/dl-check"
    sub.create_subscription(name=dl_sub, topic=f"projects/{project}/topics/prices-dead-letter")
    sub.close()
    publisher = pubsub_v1.PublisherClient()
    topic = f"projects/{project}/topics/prices"
    case_of: dict[str, str] = {}  # message id → case
    for c in cases:  # one at a time: a correction is published after what it corrects
        case_of[publisher.publish(topic, c.data, **c.attributes).result()] = c.case

    handle = run(["--subscription", f"projects/{project}/subscriptions/prices-streaming",
                  "--sink", "bigtable", "--bigtable_project", project,
                  "--skip_inference", "true", "--freshness_minutes", "0",
                  "--dead_letter_topic", f"projects/{project}/topics/prices-dead-letter"],
                 settings=Settings(data_dir=tmp_path / "var"))
    try:
        deadline = time.monotonic() + 300
        s = handle.summary()
        while time.monotonic() < deadline and not (s.events_read >= len(cases) and s.reconciled):
            time.sleep(2)
            s = handle.summary()
        assert s.events_read == len(cases) and s.reconciled, s
        assert s.duplicates == fates["duplicate"]
    finally:
        handle.cancel()

    # the dead-letter topic: each dead message once, with its reason
    letters = [json.loads(m.data) for m in drain(dl_sub)]
    by_case = collections.defaultdict(list)
    for d in letters:
        kind, _, message_id = d["position"].partition(":")
        assert kind == "message", d
        by_case[case_of[message_id]].append(f"{d['step']}:{d['reason']}")
    want_dead = {c.case: [c.reason] for c in cases if c.fate == "dead"}
    assert dict(by_case) == want_dead

    # Bigtable: exactly the stored trades, each with its expected price; the dead letters table
    # holds one row per dead message
    store = BigtableServingStore(project, "miraikakaku")
    rows = store.get_bars("XNYS:IBM", interval="tick", start=START.date() - dt.timedelta(days=1),
                          end=START.date() + dt.timedelta(days=1), source="lean", limit=10_000)
    stored = {r.row_key: r.close for r in rows}
    events = {t.event_id: t for t in [*trades, *_big_sequences(cases, trades)]}
    expected = {rowkeys.event_key(events[c.event_id]): c.close
                for c in cases if c.fate == "stored"}
    assert all(rowkeys.event_key(events[c.event_id]) in expected
               for c in cases if c.fate == "duplicate")
    assert stored == expected
    counts = store.counts()
    assert counts["dead_letters"] == fates["dead"]
    assert len(stored) + counts["dead_letters"] + s.duplicates == len(cases)
    assert counts["bar_revisions"] == 1  # the corrected trade's first print, kept as history


def _big_sequences(cases, trades) -> list[PriceEvent]:
    """The stored cases whose event is not one of ``trades`` (a changed sequence)."""
    known = {t.event_id for t in trades}
    out = []
    for c in cases:
        if c.fate == "stored" and c.event_id not in known:
            out.append(PriceEvent.from_json(c.data))
    return out
