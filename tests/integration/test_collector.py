"""The collector against the real Pub/Sub emulator: ordering keys, attributes, counts, retries.

Publishes the first five minutes of IBM's real 2013-10-07 regular session (tick trades) plus two
malformed rows, pulls everything back through an ordered subscription and checks count, attributes,
per-key order and payloads; then injects transient errors (raised by ``publish`` itself, and failing
the Publish RPC inside the real ordered client) and checks each message still arrives exactly once
and in order. Run: ``pytest tests/integration/test_collector.py`` (starts the emulator unless
``PUBSUB_EMULATOR_HOST`` is set).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import uuid
from collections.abc import Iterator

import pytest
from google.api_core import exceptions as gexc

from collector import cli
from collector.files import events_from_file
from collector.publisher import (
    format_event_time,
    make_publisher,
    publish_events,
)
from miraikakaku.schema import DeadLetter, PriceEvent
from tests.conftest import SHARED, write_csv

pytestmark = pytest.mark.integration

TICK = SHARED / "normalized" / "us_tick_trades_lean.normalized.csv.gz"
UTC = dt.timezone.utc
OPEN = dt.datetime(2013, 10, 7, 13, 30, tzinfo=UTC)  # 09:30 New York (EDT)
PROJECT = "miraikakaku-it"


@pytest.fixture
def ordered_topic(pubsub_emulator) -> Iterator[tuple[str, str]]:
    """A uuid-named topic and an ordered subscription on it; both deleted afterwards."""
    from google.cloud import pubsub_v1

    suffix = uuid.uuid4().hex[:10]
    topic = f"projects/{PROJECT}/topics/prices-it-{suffix}"
    sub = f"projects/{PROJECT}/subscriptions/prices-it-{suffix}"
    publisher = pubsub_v1.PublisherClient()
    subscriber = pubsub_v1.SubscriberClient()
    publisher.create_topic(request={"name": topic})
    subscriber.create_subscription(request={"name": sub, "topic": topic,
                                            "enable_message_ordering": True,
                                            "ack_deadline_seconds": 60})
    try:
        yield topic, sub
    finally:
        with contextlib.suppress(gexc.NotFound):
            subscriber.delete_subscription(request={"subscription": sub})
        with contextlib.suppress(gexc.NotFound):
            publisher.delete_topic(request={"topic": topic})
        subscriber.close()


def pull_all(sub: str, expected: int, timeout: float = 60.0) -> list:
    """Pull and acknowledge until ``expected`` messages arrived, then once more to catch extras."""
    import time

    from google.cloud import pubsub_v1

    received = []
    with pubsub_v1.SubscriberClient() as subscriber:
        deadline = time.monotonic() + timeout
        quiet_after_done = False
        while time.monotonic() < deadline:
            try:
                response = subscriber.pull(request={"subscription": sub, "max_messages": 1000},
                                           timeout=5 if len(received) < expected else 3)
            except gexc.DeadlineExceeded:
                response = None
            batch = list(response.received_messages) if response else []
            if batch:
                received.extend(batch)
                subscriber.acknowledge(request={"subscription": sub,
                                                "ack_ids": [m.ack_id for m in batch]})
            elif len(received) >= expected:
                if quiet_after_done:
                    break
                quiet_after_done = True
    return received


def first_minutes(minutes: int) -> list[PriceEvent]:
    events = events_from_file(TICK, symbols=["IBM"], start=OPEN,
                              end=OPEN + dt.timedelta(minutes=minutes), sorted_input=True)
    out = [e for e in events if isinstance(e, PriceEvent)]
    assert out, "no IBM trades in the window"
    return out


def malformed_rows(tmp_path) -> list[DeadLetter]:
    header = ["symbol", "timestamp", "price", "size", "exchange", "sale_condition", "suspicious"]
    path = write_csv(tmp_path / "bad_tick_trades.csv", header, [
        ["IBM", "2013-10-07T09:31:00.000-04:00", "#VALUE!", "100", "N", "0", "0"],
        ["IBM", "2013-10-07T09:32:00.000-04:00", "185.1", "", "N", "0", "0"],
    ])
    bad = list(events_from_file(path))
    assert all(isinstance(b, DeadLetter) for b in bad) and len(bad) == 2
    return bad  # type: ignore[return-value]


def assert_ordered_per_key(received, published: list[PriceEvent]) -> None:
    """Each ordering key's messages arrive in publish order (so event time never goes back)."""
    got: dict[str, list[str]] = {}
    for m in received:
        got.setdefault(m.message.ordering_key, []).append(m.message.attributes["event_id"])
    want: dict[str, list[str]] = {}
    for e in published:
        want.setdefault(e.instrument_id, []).append(e.event_id)
    assert got == want
    times = [m.message.attributes["event_time"] for m in received]
    assert times == sorted(times)  # one key here; RFC 3339 UTC strings sort in time order


def test_publish_first_minutes_of_a_real_session_through_an_ordered_subscription(
        ordered_topic, tmp_path):
    topic, sub = ordered_topic
    events = first_minutes(5)
    bad = malformed_rows(tmp_path)
    mixed: list[PriceEvent | DeadLetter] = [*events[:10], bad[0], *events[10:], bad[1]]

    report = publish_events(mixed, topic)

    assert (report.published, report.failed, report.failed_event_ids) == (len(events), 0, [])
    assert report.dead_lettered_input == 2
    assert report.dead_letter_reasons == {"bad_number": 1, "missing_field": 1}
    received = pull_all(sub, len(events))
    assert len(received) == len(events)
    by_id = {e.event_id: e for e in events}
    assert {m.message.attributes["event_id"] for m in received} == set(by_id)
    for m in received:
        attrs = dict(m.message.attributes)
        event = by_id[attrs["event_id"]]
        assert attrs["symbol"] == "IBM" and attrs["instrument_id"] == "XNYS:IBM"
        assert attrs["event_time"] == format_event_time(event.event_time)
        assert attrs["source"] == "lean" and attrs["schema_version"] == "1"
        assert m.message.ordering_key == "XNYS:IBM"
        assert PriceEvent.from_json(m.message.data) == event
    assert_ordered_per_key(received, events)


class _FailFirstPublish:
    """Wraps the real client: the first ``publish`` of one message raises ServiceUnavailable."""

    def __init__(self, client, event_id: str) -> None:
        self._client = client
        self._event_id = event_id
        self.injected = 0
        self.resumed: list[str] = []

    def publish(self, topic, data, ordering_key="", **kwargs):
        if kwargs.get("event_id") == self._event_id and not self.injected:
            self.injected += 1
            raise gexc.ServiceUnavailable("injected: the service is unavailable")
        return self._client.publish(topic, data, ordering_key=ordering_key, **kwargs)

    def resume_publish(self, topic, ordering_key):
        self.resumed.append(ordering_key)
        return self._client.resume_publish(topic, ordering_key)


def test_transient_error_from_publish_is_retried_and_arrives_once(ordered_topic):
    topic, sub = ordered_topic
    events = first_minutes(1)[:60]
    target = events[17].event_id
    client = make_publisher()
    try:
        wrapped = _FailFirstPublish(client, target)
        report = publish_events(events, topic, publisher=wrapped)
    finally:
        client.stop()
    assert wrapped.injected == 1 and wrapped.resumed == ["XNYS:IBM"] * len(wrapped.resumed)
    assert (report.published, report.failed, report.retries) == (len(events), 0, 1)
    received = pull_all(sub, len(events))
    ids = [m.message.attributes["event_id"] for m in received]
    assert ids.count(target) == 1 and len(ids) == len(set(ids)) == len(events)
    assert_ordered_per_key(received, events)


def test_failed_publish_rpc_pauses_the_key_and_is_resumed_in_order(ordered_topic):
    """The error happens inside the real ordered client (its Publish RPC), which pauses the key and
    cancels the batches behind it; the policy resumes the key and re-sends them in order."""
    topic, sub = ordered_topic
    events = first_minutes(2)[:300]
    target = events[150].event_id
    client = make_publisher({"max_messages": 50})
    real_rpc = client._gapic_publish
    failures = []

    def flaky_rpc(*args, **kwargs):
        messages = kwargs["messages"]
        if not failures and any(m.attributes["event_id"] == target for m in messages):
            failures.append(len(messages))
            raise gexc.ServiceUnavailable("injected: Publish RPC unavailable")
        return real_rpc(*args, **kwargs)

    client._gapic_publish = flaky_rpc
    try:
        report = publish_events(events, topic, publisher=client)
    finally:
        client.stop()
    assert failures, "the injected failure did not happen"
    assert (report.published, report.failed) == (len(events), 0)
    assert report.retries >= failures[0]
    received = pull_all(sub, len(events))
    ids = [m.message.attributes["event_id"] for m in received]
    assert len(ids) == len(set(ids)) == len(events)
    assert_ordered_per_key(received, events)


def test_cli_publishes_a_file_and_reports_bad_rows(pubsub_emulator, ordered_topic, tmp_path,
                                                   capsys):
    topic, sub = ordered_topic
    header = ["symbol", "timestamp", "price", "size", "exchange", "sale_condition", "suspicious"]
    path = write_csv(tmp_path / "ibm_tick_trades.csv", header, [
        ["IBM", "2013-10-07T09:30:00.100-04:00", "185.5", "100", "N", "0", "0"],
        ["IBM", "2013-10-07T09:30:00.100-04:00", "185.6", "200", "N", "0", "0"],
        ["IBM", "2013-10-07T09:30:01.000-04:00", "#VALUE!", "100", "N", "0", "0"],
        ["IBM", "2013-10-07T09:30:02.500-04:00", "185.4", "300", "N", "0", "0"],
    ])
    rc = cli.main(["publish", "--input", str(path), "--topic", topic, "--source", "lean",
                   "--no-progress"])
    assert rc == 0
    err = capsys.readouterr().err
    assert "published" in err and "bad_number" in err
    received = pull_all(sub, 3)
    assert [m.message.attributes["event_id"] for m in received] == [
        "lean/XNYS:IBM/tick/20131007T133000.100/0", "lean/XNYS:IBM/tick/20131007T133000.100/1",
        "lean/XNYS:IBM/tick/20131007T133002.500/3"]

    missing = f"projects/{PROJECT}/topics/missing-{uuid.uuid4().hex[:8]}"
    assert cli.main(["publish", "--input", str(path), "--topic", missing, "--no-progress"]) == 2
    assert "--create-topic" in capsys.readouterr().err
