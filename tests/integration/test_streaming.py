"""The streaming pipeline on the real Pub/Sub and Bigtable emulators (DirectRunner).

Real IBM trades (2013-10-07, Lean tick file) are published with the collector, read by
``miraikakaku run --subscription``, and checked in Bigtable, on the dead-letter topic and in the
reconciliation: published = stored + dead-lettered + duplicates.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import time
import uuid

import pytest
from google.cloud import pubsub_v1

from collector.files import events_from_file
from collector.publisher import build_message, make_publisher, publish_events
from miraikakaku import rowkeys
from miraikakaku.resources import init_gcp
from miraikakaku.schema import PriceEvent
from pipelines.prices import run
from stores.bigtable import BigtableServingStore
from tests.conftest import SHARED
from tests.emulators import drain

pytestmark = pytest.mark.integration
UTC = dt.timezone.utc
TICKS = SHARED / "normalized" / "us_tick_trades_lean.normalized.csv.gz"
SESSION_OPEN = dt.datetime(2013, 10, 7, 13, 30, tzinfo=UTC)


@pytest.fixture
def gcp(pubsub_emulator, bigtable_emulator):
    """A fresh project on both emulators with the platform's resources."""
    project = f"mk-test-{uuid.uuid4().hex[:8]}"
    init_gcp(project, instance="miraikakaku", emulator=True)
    sub = pubsub_v1.SubscriberClient()
    dl_sub = f"projects/{project}/subscriptions/dl-check"
    sub.create_subscription(name=dl_sub, topic=f"projects/{project}/topics/prices-dead-letter")
    alerts_sub = f"projects/{project}/subscriptions/alerts-check"
    sub.create_subscription(name=alerts_sub, topic=f"projects/{project}/topics/alerts")
    sub.close()
    return project, dl_sub, alerts_sub


def _trades(start: dt.datetime, end: dt.datetime, limit: int | None = None) -> list[PriceEvent]:
    return [e for e in events_from_file(TICKS, symbols=["IBM"], start=start, end=end,
                                        limit=limit, source="lean", sorted_input=True)
            if isinstance(e, PriceEvent)]


def _start(project: str, tmp_path, *extra: str):
    from miraikakaku.settings import Settings

    argv = ["--subscription", f"projects/{project}/subscriptions/prices-streaming",
            "--sink", "bigtable", "--bigtable_project", project, "--skip_inference", "true",
            "--dead_letter_topic", f"projects/{project}/topics/prices-dead-letter",
            "--alerts_topic", f"projects/{project}/topics/alerts", *extra]
    return run(argv, settings=Settings(data_dir=tmp_path / "var"))


def _wait(handle, done, timeout: float):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        s = handle.summary()
        if done(s):
            return s
        time.sleep(2)
    raise AssertionError(f"stream did not finish in {timeout:.0f} s: {handle.summary()}")


def _ticks_in_bigtable(store: BigtableServingStore) -> list[str]:
    table = store.table("prices")
    lo = rowkeys.trade_key("XNYS:IBM", dt.datetime(2013, 10, 1, tzinfo=UTC), 0)
    hi = rowkeys.trade_key("XNYS:IBM", dt.datetime(2013, 10, 31, tzinfo=UTC), 0)
    return [r.row_key.decode() for r in table.read_rows(start_key=lo, end_key=hi)]


def test_first_hour_of_ibm_reconciles_with_dead_letters_and_redrive(gcp, tmp_path):
    project, dl_sub, alerts_sub = gcp
    topic = f"projects/{project}/topics/prices"
    trades = _trades(SESSION_OPEN, SESSION_OPEN + dt.timedelta(hours=1))
    assert len(trades) > 5000
    rules = tmp_path / "rules.yaml"
    lo_price = min(t.close for t in trades)
    rules.write_text("rules:\n  - {id: ibm-dips, kind: price_cross, symbols: [IBM], "
                     f"level: {lo_price + 0.005}, direction: below}}\n")
    publisher = make_publisher()
    report = publish_events(trades + trades[100:150], topic, publisher=publisher)
    assert report.published == len(trades) + 50 and report.failed == 0
    # the malformed message is a real trade after the hour whose data got mangled; its
    # attributes are the collector's, so the fixed data redriven with them agrees
    redo, zero = _trades(SESSION_OPEN + dt.timedelta(hours=1),
                         SESSION_OPEN + dt.timedelta(hours=1, minutes=5), limit=2)
    bad = [(b"{not json", dict(build_message(redo).attributes)),
           (trades[0].to_json().encode(), {"event_time": "2013-10-07T13:30:00.000Z",
                                           "symbol": "MSFT"}),  # attribute mismatch
           (b"\xff\xfe", {"event_time": "2013-10-07T13:41:00.000Z"})]
    blocked = dataclasses.replace(zero, close=0.0)  # another real trade, its price zeroed
    raw = pubsub_v1.PublisherClient()
    for data, attrs in bad:
        raw.publish(topic, data, **attrs).result()
    publish_events([blocked], topic, publisher=publisher)
    published = len(trades) + 50 + len(bad) + 1

    handle = _start(project, tmp_path, "--alert_rules", str(rules))
    try:
        s = _wait(handle, lambda s: s.events_read >= published and s.reconciled, 600)
        assert s.events_read == published
        assert s.duplicates == 50
        assert s.bars_stored == len(trades)
        assert s.dead_letters_by_reason == {"ParseMessages:bad_json": 1,
                                            "ParseMessages:attribute_mismatch": 1,
                                            "ParseMessages:bad_encoding": 1,
                                            "ValidateEvents:non_positive_price": 1}
        # Bigtable: every trade under its row key, values as published
        store = BigtableServingStore(project, "miraikakaku")
        keys = _ticks_in_bigtable(store)
        assert sorted(keys) == sorted(rowkeys.event_key(t) for t in trades)
        # the dead-letter topic carries each with its reason
        dls = [json.loads(m.data) for m in drain(dl_sub)]
        assert sorted(d["reason"] for d in dls) == sorted(
            ["bad_json", "attribute_mismatch", "bad_encoding", "non_positive_price"])
        # the per-event alert fired on the trades that crossed; the price flapped around the
        # level, and every firing carries the same alert id (per rule, instrument and day), so
        # consumers and the store keep one alert
        alerts = [json.loads(m.data) for m in drain(alerts_sub)]
        fired = [a for a in alerts if a["rule_id"] == "ibm-dips"]
        assert fired and {a["alert_id"] for a in fired} == {"ibm-dips/XNYS:IBM/20131007"}
        assert len(store.get_alerts(instrument_id="XNYS:IBM")) == 1
        # redrive: fix the malformed JSON message and publish it again
        from miraikakaku.deadletters import replay_records

        record = next(d for d in dls if d["reason"] == "bad_json")
        envelope = json.loads(record["payload"])
        envelope["data"] = redo.to_json()
        record["payload"] = json.dumps(envelope)
        n, failed = replay_records([record], topic)
        assert (n, failed) == (1, [])
        _wait(handle, lambda s: s.bars_stored == len(trades) + 1, 120)
    finally:
        handle.cancel()


def test_burst_of_20000_messages_is_stored_completely(gcp, tmp_path):
    project, _, _ = gcp
    trades = _trades(SESSION_OPEN, SESSION_OPEN + dt.timedelta(days=2), limit=20_000)
    assert len(trades) == 20_000
    report = publish_events(trades, f"projects/{project}/topics/prices",
                            publisher=make_publisher())
    assert report.published == 20_000
    handle = _start(project, tmp_path)
    try:
        t0 = time.monotonic()
        s = _wait(handle, lambda s: s.bars_stored >= 20_000, 1500)
        seconds = time.monotonic() - t0
    finally:
        handle.cancel()
    assert s.reconciled and s.bars_stored == 20_000
    keys = _ticks_in_bigtable(BigtableServingStore(project, "miraikakaku"))
    assert len(keys) == 20_000
    print(f"20,000-message burst stored in {seconds:.0f} s ({20_000 / seconds:.0f} msg/s)")
