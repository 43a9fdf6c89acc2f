"""The notifier's Google Cloud event source on the real Pub/Sub emulator: ``init_gcp`` creates the
notify topics and subscriptions, encoded events come back through ``PubSubSource`` with
at-least-once semantics (acknowledged only on commit; a read that is not committed is
delivered again), and the price pipeline publishes its validated price events, predictions and
alerts to the topics the notifier reads.

Run: ``.venv/bin/python -m pytest -q tests/integration/test_notifier_pubsub.py`` (the fixtures
start the Pub/Sub and Bigtable emulators unless ``PUBSUB_EMULATOR_HOST`` and
``BIGTABLE_EMULATOR_HOST`` are set).
"""

from __future__ import annotations

import datetime as dt
import statistics
import time
import uuid

import pytest
import yaml
from google.cloud import pubsub_v1

from miraikakaku.resources import NOTIFY_SUBSCRIPTIONS, init_gcp
from miraikakaku.schema import AlertEvent, Prediction, PriceEvent
from notifier.events import decode_event, encode_event
from notifier.pubsub_source import PubSubSource
from notifier.sources import EventSource
from tests.conftest import SP500, read_rows, write_csv

pytestmark = pytest.mark.integration

T0 = dt.datetime(2018, 2, 7, 21, 0, tzinfo=dt.timezone.utc)
D0 = dt.date(2018, 2, 7)


@pytest.fixture
def project(pubsub_emulator, bigtable_emulator):
    """A fresh emulator project with the platform's resources (``miraikakaku init-gcp``)."""
    name = f"mk-notify-{uuid.uuid4().hex[:8]}"
    lines = init_gcp(name, instance="miraikakaku", emulator=True)
    for sub in NOTIFY_SUBSCRIPTIONS:
        assert f"created subscription projects/{name}/subscriptions/{sub}" in lines
    return name


@pytest.fixture
def publisher():
    client = pubsub_v1.PublisherClient()
    yield client
    client.transport.close()


def _price(i: int, close: float = 160.0) -> PriceEvent:
    day = D0 + dt.timedelta(days=i)
    return PriceEvent(1, f"sp500_5yr/XNAS:AAPL/1d/{day:%Y%m%d}/0", "XNAS:AAPL", "AAPL",
                      "sp500_5yr", 0, "1d", day, T0 + dt.timedelta(days=i), close, close + 1,
                      close - 1, close + 0.5, 1_000_000.0 + i, None, "USD")


def _prediction(i: int) -> Prediction:
    day = D0 + dt.timedelta(days=i)
    return Prediction("XNAS:AAPL", "sp500_5yr", day, T0 + dt.timedelta(days=i),
                      day + dt.timedelta(days=1), 160.5, 0.04, 167.05, "lstm_daily", "3")


def _alert(i: int) -> AlertEvent:
    day = D0 + dt.timedelta(days=i)
    return AlertEvent(f"drop/XNAS:AAPL/{day:%Y%m%d}", "drop", "pct_move", "XNAS:AAPL",
                      T0 + dt.timedelta(days=i), day, -0.025, 0.02, "AAPL moved -2.5%")


_TOPIC_OF = {"prices": "prices-validated", "predictions": "predictions", "alerts": "alerts"}


def _publish(publisher, project: str, records, *, with_attribute: bool = True) -> None:
    futures = []
    for r in records:
        topic, payload = encode_event(r)
        attrs = {"event_topic": topic} if with_attribute else {}
        futures.append(publisher.publish(
            publisher.topic_path(project, _TOPIC_OF[topic]), payload.encode(), **attrs))
    for f in futures:
        f.result(timeout=30)


def _read_until(source: PubSubSource, n: int, timeout: float = 30.0, batch: int = 100):
    got = []
    deadline = time.monotonic() + timeout
    while len(got) < n and time.monotonic() < deadline:
        got.extend(source.read(batch))
    return got


def _read_for(source: PubSubSource, seconds: float):
    got = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        got.extend(source.read(100))
    return got


def test_events_round_trip_and_are_acknowledged_only_on_commit(project, publisher):
    records = [_price(0), _price(1, 171.0), _prediction(0), _prediction(1), _alert(0), _alert(1)]
    _publish(publisher, project, records[:4])
    _publish(publisher, project, records[4:], with_attribute=False)  # as PublishAlerts sends
    expected = {encode_event(r)[0] + "/" + decode_event(*encode_event(r)).event_id:
                decode_event(*encode_event(r)) for r in records}

    source = PubSubSource.for_project(project)
    assert isinstance(source, EventSource)
    assert source.name == f"pubsub:{project}/prices-notify,predictions-notify,alerts-notify"
    source.seek(41)  # the offset the service stored: positions continue after it
    got = _read_until(source, len(records))
    assert len(got) == len(records)
    positions = [p for p, _ in got]
    assert positions == sorted(positions) and positions[0] == 42 and len(set(positions)) == 6
    assert {f"{e.topic}/{e.event_id}": e for _, e in got} == expected
    assert {e.type for _, e in got} == {"price", "prediction", "alert"}
    assert source.uncommitted == 6

    # the service commits the first three; the rest is read but not committed when it "dies"
    committed, uncommitted = got[:3], got[3:]
    source.commit(committed[-1][0])
    assert source.uncommitted == 3
    assert source.release() == 3  # a clean shutdown gives them back at once
    source.close()

    restarted = PubSubSource.for_project(project)
    again = _read_until(restarted, 3)
    assert sorted(e.event_id for _, e in again) == sorted(e.event_id for _, e in uncommitted)
    restarted.commit(again[-1][0])
    assert restarted.uncommitted == 0
    # everything is acknowledged now: nothing comes back, even after a release
    restarted.release()
    assert _read_for(restarted, 3.0) == []
    restarted.close()


def test_a_read_that_is_never_committed_is_redelivered_after_the_ack_deadline(
        project, publisher):
    subscriber = pubsub_v1.SubscriberClient()
    path = f"projects/{project}/subscriptions/predictions-short-deadline"
    subscriber.create_subscription(request={
        "name": path, "topic": f"projects/{project}/topics/predictions",
        "ack_deadline_seconds": 10})
    try:
        _publish(publisher, project, [_prediction(5)])
        crashed = PubSubSource([path], subscriber=subscriber)
        first = _read_until(crashed, 1)
        assert [e.event_id for _, e in first] == [decode_event(*encode_event(
            _prediction(5))).event_id]
        # the process dies: no commit, no release. Nothing comes back before the deadline ...
        t_read = time.monotonic()
        other = PubSubSource([path], subscriber=subscriber)
        assert _read_for(other, 4.0) == []
        # ... and the same event after it (10 s)
        again = _read_until(other, 1, timeout=30)
        assert time.monotonic() - t_read >= 8.0  # the deadline is 10 s from delivery
        assert [e.event_id for _, e in again] == [e.event_id for _, e in first]
        other.commit(again[0][0])
        other.release()
        assert _read_for(other, 12.0) == []  # acknowledged: not even after another deadline
    finally:
        subscriber.delete_subscription(request={"subscription": path})
        subscriber.close()


def test_undecodable_messages_are_counted_acknowledged_and_skipped(project, publisher):
    topic = publisher.topic_path(project, "predictions")
    publisher.publish(topic, b"{not json", event_topic="predictions").result(timeout=30)
    _publish(publisher, project, [_prediction(7)])
    source = PubSubSource.for_project(project, ["predictions-notify"])
    got = _read_until(source, 1)
    deadline = time.monotonic() + 10
    while source.skipped == 0 and time.monotonic() < deadline:
        got.extend(source.read(10))
    assert [e.type for _, e in got] == ["prediction"] and source.skipped == 1
    source.commit(got[-1][0])
    source.release()
    assert _read_for(source, 3.0) == []  # the bad message does not come back either
    source.close()


def test_bad_subscription_paths_are_refused():
    with pytest.raises(ValueError, match="subscription path"):
        PubSubSource(["prices-notify"], subscriber=object())
    with pytest.raises(ValueError, match="event topic"):
        PubSubSource(["projects/p/subscriptions/ticks"], subscriber=object())
    src = PubSubSource(["projects/p/subscriptions/ticks"], topics={
        "projects/p/subscriptions/ticks": "prices"}, subscriber=object())
    assert src.name == "pubsub:p/ticks"


def test_the_pipeline_publishes_what_the_notifier_reads(project, tmp_path):
    """A bounded run on real AAPL/MSFT bars with a tiny model: every stored bar, prediction and
    alert reaches the notify subscriptions in the notifier's wire format."""
    import tensorflow as tf

    from miraikakaku.settings import Settings
    from models.lstm import build_lstm_model
    from models.registry import save_version
    from pipelines.prices import run
    from transforms.features import N_FEATURES

    header, rows = read_rows(SP500, {"AAPL", "MSFT"})
    rows = [r for r in rows if "2013-02-08" <= r[1] <= "2013-04-30"]
    csv = write_csv(tmp_path / "us_daily_sp500_5yr_2013_2018.csv", header, rows)
    closes = [float(r[header.index("close")]) for r in rows if r[0] == "AAPL"]
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump({"rules": [
        {"id": "aapl-median", "kind": "price_cross", "symbols": ["AAPL"],
         "level": round(statistics.median(closes), 2), "direction": "both"}]}))
    tf.keras.utils.set_random_seed(0)
    mv = save_version(build_lstm_model(20, N_FEATURES, units=4), tmp_path / "models",
                      {"model_name": "lstm_daily", "window": 20})
    topic = f"projects/{project}/topics"
    summary = run(["--input", str(csv), "--model_dir", str(tmp_path / "models"),
                   "--alert_rules", str(rules), "--store_path", str(tmp_path / "serving.db"),
                   "--prices_topic", f"{topic}/prices-validated",
                   "--predictions_topic", f"{topic}/predictions",
                   "--alerts_topic", f"{topic}/alerts"],
                  settings=Settings(data_dir=tmp_path / "var"))
    assert mv.version and summary.bars_stored == len(rows) and summary.predictions > 0
    assert summary.alerts > 0
    expected = {"price": summary.bars_stored, "prediction": summary.predictions,
                "alert": summary.alerts}

    source = PubSubSource.for_project(project)
    got = _read_until(source, sum(expected.values()), timeout=60, batch=500)
    assert _read_for(source, 2.0) == []  # and nothing more
    counts = {k: sum(1 for _, e in got if e.type == k) for k in expected}
    assert counts == expected
    assert len({(e.type, e.event_id) for _, e in got}) == len(got)
    prices = [e for _, e in got if e.type == "price"]
    assert {e.instrument_id for e in prices} == {"XNAS:AAPL", "XNAS:MSFT"}
    assert all(e.currency == "USD" and e.interval == "1d" and e.close > 0 for e in prices)
    preds = [e for _, e in got if e.type == "prediction"]
    assert all(e.model_version == mv.version and e.target_date > e.session_date for e in preds)
    alerts = [e for _, e in got if e.type == "alert"]
    assert {e.alert_kind for e in alerts} == {"price_cross"}
    source.commit(got[-1][0])
    source.close()
