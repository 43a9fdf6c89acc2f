"""``transforms.pubsub_ack``: which records settle which message, and the ledger on the real
Pub/Sub emulator (acknowledge only what is settled, extend the rest, give it back on close)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
import uuid

import pytest
from google.cloud import pubsub_v1

from collector.files import events_from_file
from miraikakaku.schema import DeadLetter, PriceEvent, SupersededRevision
from tests.conftest import SHARED
from transforms import pubsub_ack

UTC = dt.timezone.utc
TICKS = SHARED / "normalized" / "us_tick_trades_lean.normalized.csv.gz"
SUB = "projects/p/subscriptions/prices"


def _events(n: int) -> list[PriceEvent]:
    start = dt.datetime(2013, 10, 7, 13, 30, tzinfo=UTC)
    return [e for e in events_from_file(TICKS, symbols=["IBM"], start=start,
                                        end=start + dt.timedelta(minutes=5), limit=n,
                                        source="lean", sorted_input=True)
            if isinstance(e, PriceEvent)]


def _from(event: PriceEvent, origin: str, position: str, *rest: str) -> PriceEvent:
    return dataclasses.replace(event, provenance=(origin, position, *rest))


@pytest.mark.unit
def test_message_of_reads_events_dead_letters_and_revisions():
    e = _events(1)[0]
    assert pubsub_ack.message_of(_from(e, SUB, "message:17")) == (SUB, "17")
    assert pubsub_ack.message_of(_from(e, SUB, "message:17", "rev")) == (SUB, "17")  # 3-tuple
    assert pubsub_ack.message_of(SupersededRevision(_from(e, SUB, "message:18"), "x")) == \
        (SUB, "18")
    dl = DeadLetter("ParseMessages", "bad_json", "", "{}", SUB, position="message:19")
    assert pubsub_ack.message_of(dl) == (SUB, "19")
    # not from a message: file lines, no provenance, other records
    assert pubsub_ack.message_of(_from(e, "prices.csv", "line:12")) is None
    assert pubsub_ack.message_of(e) is None
    assert pubsub_ack.message_of(DeadLetter("RunInference", "x", "", "", "model")) is None
    assert pubsub_ack.message_of(object()) is None


@pytest.fixture
def subscription(pubsub_emulator):
    """A fresh topic and an unordered subscription with a 10 s ack deadline."""
    project = f"mk-ack-{uuid.uuid4().hex[:8]}"
    pub, sub = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
    topic = pub.create_topic(name=f"projects/{project}/topics/prices").name
    path = sub.create_subscription(request={
        "name": f"projects/{project}/subscriptions/prices", "topic": topic,
        "ack_deadline_seconds": 10}).name
    sub.close()

    def publish(n: int) -> list[str]:
        return [pub.publish(topic, f"m{i}".encode()).result() for i in range(n)]

    yield path, publish
    pubsub_ack.close_all(owner=-1)


def _pull(path: str, n: int, timeout: float = 5.0) -> list:
    client = pubsub_v1.SubscriberClient()
    out: list = []
    try:
        deadline = time.monotonic() + timeout
        while len(out) < n and time.monotonic() < deadline:
            try:
                resp = client.pull(subscription=path, max_messages=n - len(out), timeout=2,
                                   retry=None)
            except Exception:  # noqa: BLE001 - DeadlineExceeded: nothing waiting yet
                continue
            out += list(resp.received_messages)
    finally:
        client.close()
    return out


@pytest.mark.integration
def test_only_settled_messages_are_acknowledged_and_settle_is_idempotent(subscription):
    path, publish = subscription
    ids = publish(12)
    led = pubsub_ack.ledger(path, owner=-1)
    assert led.ack_deadline_seconds == 10  # read from the subscription
    received = _pull(path, 12)
    assert sorted(m.message.message_id for m in received) == sorted(ids)
    led.register(received)
    assert led.in_flight == 12

    e = _events(1)[0]
    records = [_from(e, path, f"message:{ids[0]}"), _from(e, path, f"message:{ids[1]}", "r"),
               DeadLetter("ParseMessages", "bad_json", "", "{}", path,
                          position=f"message:{ids[2]}"),
               SupersededRevision(_from(e, path, f"message:{ids[3]}"), "later")]
    assert pubsub_ack.settle(records) == 4
    assert pubsub_ack.settle(records) == 0  # twice: harmless
    assert pubsub_ack.settle([_from(e, path, "message:no-such-id"),  # unknown id
                              _from(e, "projects/p/subscriptions/other", f"message:{ids[4]}"),
                              _from(e, path, "line:4"), e, object()]) == 0
    assert led.in_flight == 8 and led.settled == 4
    assert led.flush(30) and led.acked == 4 and led.ack_failures == 0

    # closing gives the 8 unsettled back at once (ack deadline 0); the 4 settled never return
    assert pubsub_ack.close_all(owner=-1) == 8
    again = _pull(path, 12, timeout=8)
    assert sorted(m.message.message_id for m in again) == sorted(ids[4:])


@pytest.mark.integration
def test_unsettled_messages_stay_leased_past_the_deadline(subscription):
    path, publish = subscription
    publish(10)
    received = _pull(path, 10)
    assert len(received) == 10
    led = pubsub_ack.ledger(path, owner=-1)
    led.register(received[:5])  # the other 5 are held by nobody: they expire after 10 s
    time.sleep(16)
    assert led.extensions >= 2  # every 10/3 s
    back = _pull(path, 10, timeout=6)
    assert sorted(m.message.message_id for m in back) == \
        sorted(m.message.message_id for m in received[5:])
    assert led.in_flight == 5
    assert pubsub_ack.close_all(owner=-1) == 5


@pytest.mark.integration
def test_the_bound_stops_the_reader_until_messages_settle(subscription):
    path, publish = subscription
    ids = publish(3)
    led = pubsub_ack.ledger(path, owner=-1)
    led.max_in_flight = 3
    led.register(_pull(path, 3))
    assert (led.in_flight, led.room) == (3, 0)
    e = _events(1)[0]
    assert pubsub_ack.settle([_from(e, path, f"message:{ids[0]}")]) == 1
    assert (led.in_flight, led.room) == (2, 1)
    with pytest.raises(ValueError):
        pubsub_ack.Ledger(path, client=object(), max_in_flight=0)
