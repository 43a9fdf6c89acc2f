"""At least once, counted in the store: a killed stream, a Bigtable outage, redeliveries (issue 13).

Real IBM trades (2013-10-07, the Lean tick file) are published with the collector to the Pub/Sub
emulator and read by ``miraikakaku run --subscription`` on the DirectRunner into the Bigtable
emulator. Every test reconciles in Bigtable, not in counters: each published event id is a
tick row, or its message is a dead letter (Bigtable ``dead_letters`` and the dead-letter topic),
or it is a repeat of an event id already stored; and the subscription is drained at the end
(every message was acknowledged: nothing is redelivered after the ack deadline).

The pipelines read ``prices-durability``, a subscription like ``prices-streaming`` (ordered) but
with a 10 s ack deadline, so a killed reader's unacknowledged messages come back after 10 s
rather than the 60 s ``init-gcp`` gives ``prices-streaming``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
from google.cloud import pubsub_v1
from google.cloud.bigtable import row_filters as rf

from collector.files import events_from_file
from collector.publisher import make_publisher, publish_events
from miraikakaku import rowkeys
from miraikakaku.resources import init_gcp
from miraikakaku.schema import PriceEvent
from miraikakaku.settings import Settings
from pipelines.prices import run
from stores.bigtable import BigtableServingStore
from tests.conftest import SHARED
from tests.emulators import drain, free_port

pytestmark = pytest.mark.integration
UTC = dt.timezone.utc
TICKS = SHARED / "normalized" / "us_tick_trades_lean.normalized.csv.gz"
SESSION_OPEN = dt.datetime(2013, 10, 7, 13, 30, tzinfo=UTC)
SUBSCRIPTION = "prices-durability"
ACK_DEADLINE = 10
BAD_MESSAGES = ((b"{not json", {"event_time": "2013-10-07T13:40:00.000Z"}, "bad_json"),
                (b"\xff\xfe", {"event_time": "2013-10-07T13:41:00.000Z"}, "bad_encoding"))


# -- set-up ------------------------------------------------------------------------------------
def _project(tag: str) -> tuple[str, str, str]:
    """A fresh project with the platform's resources, ``prices-durability`` and a subscription
    on the dead-letter topic; returns (project, subscription path, dead-letter check path)."""
    project = f"mk-{tag}-{uuid.uuid4().hex[:8]}"
    init_gcp(project, instance="miraikakaku", emulator=True)
    sub = pubsub_v1.SubscriberClient()
    path = f"projects/{project}/subscriptions/{SUBSCRIPTION}"
    sub.create_subscription(request={
        "name": path, "topic": f"projects/{project}/topics/prices",
        "ack_deadline_seconds": ACK_DEADLINE, "enable_message_ordering": True})
    dl_check = f"projects/{project}/subscriptions/dl-check"
    sub.create_subscription(name=dl_check,
                            topic=f"projects/{project}/topics/prices-dead-letter")
    sub.close()
    return project, path, dl_check


def _trades(n: int) -> list[PriceEvent]:
    out = [e for e in events_from_file(TICKS, symbols=["IBM"], start=SESSION_OPEN,
                                       end=SESSION_OPEN + dt.timedelta(hours=1), limit=n,
                                       source="lean", sorted_input=True)
           if isinstance(e, PriceEvent)]
    assert len(out) == n
    return out


def _publish(project: str, events: list[PriceEvent], bad: bool = False) -> int:
    """Publish the events (and the bad messages); returns how many messages were published."""
    topic = f"projects/{project}/topics/prices"
    report = publish_events(events, topic, publisher=make_publisher())
    assert report.published == len(events) and report.failed == 0
    n = report.published
    if bad:
        raw = pubsub_v1.PublisherClient()
        for data, attrs, _ in BAD_MESSAGES:
            raw.publish(topic, data, **attrs).result()
        n += len(BAD_MESSAGES)
    return n


def _argv(project: str, subscription: str) -> list[str]:
    return ["--subscription", subscription, "--sink", "bigtable", "--bigtable_project", project,
            "--skip_inference", "true", "--freshness_minutes", "0",
            "--dead_letter_topic", f"projects/{project}/topics/prices-dead-letter"]


# -- what Bigtable and Pub/Sub hold ------------------------------------------------------------
_KEYS_ONLY = rf.RowFilterChain(filters=[rf.CellsColumnLimitFilter(1),
                                        rf.StripValueTransformerFilter(True)])


def _tick_keys(store: BigtableServingStore) -> list[str]:
    """Row keys of the stored IBM trades of October 2013 (one row per event id)."""
    lo = rowkeys.trade_key("XNYS:IBM", dt.datetime(2013, 10, 1, tzinfo=UTC), 0)
    hi = rowkeys.trade_key("XNYS:IBM", dt.datetime(2013, 10, 31, tzinfo=UTC), 0)
    return [r.row_key.decode() for r in store.table("prices").read_rows(
        start_key=lo, end_key=hi, filter_=_KEYS_ONLY)]


def _assert_drained(subscription: str) -> None:
    """Nothing is redelivered after the ack deadline: every message was acknowledged."""
    left = drain(subscription, timeout=ACK_DEADLINE + 3)
    assert left == [], f"{len(left)} messages were never acknowledged"


def _reconcile(store: BigtableServingStore, dl_check: str, trades: list[PriceEvent],
               published: int, bad: bool) -> dict[str, int]:
    """published = stored + dead-lettered + repeats, counted in Bigtable and on the topic."""
    keys = _tick_keys(store)
    assert len(keys) == len(set(keys))
    expected = {rowkeys.event_key(t) for t in trades}
    missing = expected - set(keys)
    assert not missing, f"{len(missing)} published trades not in Bigtable: {sorted(missing)[:3]}"
    assert set(keys) == expected
    dead = store.get_dead_letters()
    want = sorted(r for _, _, r in BAD_MESSAGES) if bad else []
    assert sorted(d.reason for d in dead) == want
    topic = {json.loads(m.data)["dead_letter_id"]: json.loads(m.data)["reason"]
             for m in drain(dl_check, timeout=5.0)}  # a redelivered message may publish it twice
    assert sorted(topic.values()) == want
    repeats = len(trades) - len({t.event_id for t in trades})
    assert published == len(keys) + len(dead) + repeats
    return {"stored": len(keys), "dead_lettered": len(dead), "repeats": repeats}


def _wait(what, done, timeout: float, interval: float = 1.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = what()
        if done(value):
            return value
        time.sleep(interval)
    raise AssertionError(f"not done after {timeout:.0f} s: {what()}")


# -- (a) SIGKILL mid-stream, restart -----------------------------------------------------------
def _start_cli(project: str, subscription: str, data_dir: Path, log: Path) -> subprocess.Popen:
    cli = Path(sys.executable).parent / "miraikakaku"
    env = dict(os.environ, MIRAIKAKAKU_DATA_DIR=str(data_dir), TF_USE_LEGACY_KERAS="1",
               PYTHONUNBUFFERED="1")
    with open(log, "ab") as out:
        return subprocess.Popen([str(cli), "run", *_argv(project, subscription), "--no-progress"],
                                stdout=out, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)


def test_sigkill_mid_stream_then_restart_stores_every_message(pubsub_emulator,
                                                              bigtable_emulator, tmp_path):
    project, subscription, dl_check = _project("kill")
    trades = _trades(3000)
    published = _publish(project, trades, bad=True)
    store = BigtableServingStore(project, "miraikakaku")
    log = tmp_path / "run.log"

    first = _start_cli(project, subscription, tmp_path / "var", log)
    try:
        stored = _wait(lambda: len(_tick_keys(store)), lambda n: n >= 900, 300, interval=0.3)
    finally:
        first.send_signal(signal.SIGKILL)  # no clean-up: in-flight messages stay unacked
        first.wait(timeout=30)
    at_kill = len(_tick_keys(store))
    assert stored <= at_kill < len(trades), "killed too late: nothing was in flight"

    second = _start_cli(project, subscription, tmp_path / "var", log)
    try:
        _wait(lambda: (len(_tick_keys(store)), len(store.get_dead_letters())),
              lambda v: v == (len(trades), len(BAD_MESSAGES)), 400)
    finally:
        second.send_signal(signal.SIGINT)  # Ctrl-C: summary, release, exit 0
        code = second.wait(timeout=60)
    assert code == 0, log.read_text()[-3000:]
    counts = _reconcile(store, dl_check, trades, published, bad=True)
    _assert_drained(subscription)
    print(f"SIGKILL after {at_kill} of {len(trades)} trades stored; after the restart {counts}")


# -- (b) Bigtable unreachable for 30 s ---------------------------------------------------------
class _TcpProxy:
    """A byte-level TCP proxy to the Bigtable emulator that can cut the network.

    ``cut()`` closes the listening socket and every open connection, so the pipeline's gRPC
    channel sees its connection reset and then connection refused (UNAVAILABLE), as in an
    outage; the emulator keeps running and keeps its data, and the test reads it directly.
    ``restore()`` listens again on the same port.
    """

    def __init__(self, target: str) -> None:
        name, port = target.rsplit(":", 1)
        self._target = (name, int(port))
        self.port = free_port()
        self._lock = threading.Lock()
        self._conns: list[socket.socket] = []
        self._listener: socket.socket | None = None
        self.restore()

    @property
    def host(self) -> str:
        return f"localhost:{self.port}"

    def restore(self) -> None:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", self.port))
        s.listen(64)
        self._listener = s
        threading.Thread(target=self._accept, args=(s,), daemon=True).start()

    def cut(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
            conns, self._conns = self._conns, []
        if listener is not None:
            listener.close()
        for c in conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
            c.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # cut
            try:
                upstream = socket.create_connection(self._target)
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._listener is not listener:
                    client.close()
                    upstream.close()
                    return
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)


def test_bigtable_outage_of_30_s_loses_nothing_and_counters_trail_the_rows(
        pubsub_emulator, bigtable_emulator, tmp_path, monkeypatch):
    project, subscription, dl_check = _project("outage")
    trades = _trades(3000)
    published = _publish(project, trades)
    store = BigtableServingStore(project, "miraikakaku")  # reads the emulator directly
    _tick_keys(store)
    proxy = _TcpProxy(bigtable_emulator)
    monkeypatch.setenv("BIGTABLE_EMULATOR_HOST", proxy.host)  # the pipeline writes via the proxy
    handle = run(_argv(project, subscription), settings=Settings(data_dir=tmp_path / "var"))
    samples: list[tuple[float, int, int]] = []  # (seconds, counter, rows), counter read first

    def sample() -> int:
        counted = handle.summary().bars_stored
        rows = len(_tick_keys(store))
        samples.append((time.monotonic(), counted, rows))
        assert counted <= rows, f"counters said {counted} stored with {rows} rows in Bigtable"
        return rows

    try:
        _wait(sample, lambda n: n >= 600, 300, interval=0.3)
        proxy.cut()
        cut_at = time.monotonic()
        during = []
        while time.monotonic() - cut_at < 30:
            during.append(sample())
            assert handle.failure() is None, handle.failure()
            time.sleep(0.5)
        proxy.restore()
        assert max(during) < len(trades)  # the outage happened mid-stream
        _wait(sample, lambda n: n == len(trades), 600, interval=0.5)
        _wait(lambda: handle.summary(), lambda s: s.reconciled, 60)
        s = handle.summary()
        retried = handle.counter("WriteToBigtableStore", "retried_rows")
    finally:
        handle.cancel()
        proxy.cut()
    assert retried > 0  # the sink retried through the outage, the bundle did not fail
    # the deadline extension kept the held messages leased: no redelivery, no repeat
    assert (s.events_read, s.bars_stored, s.duplicates) == (len(trades), len(trades), 0)
    counts = _reconcile(store, dl_check, trades, published, bad=False)
    _assert_drained(subscription)
    stalled = [n for _, _, n in samples if n == during[0]]
    print(f"outage: {len(during)} samples in 30 s at {during[0]}..{during[-1]} rows; "
          f"{len(samples)} samples in all, counter <= rows in each; {len(stalled)} at the "
          f"stall; {retried} rows retried; {counts}")


# -- (c) redelivery of messages pulled but never settled ---------------------------------------
def test_messages_a_dead_reader_held_are_redelivered_and_stored_once(
        pubsub_emulator, bigtable_emulator, tmp_path):
    project, subscription, dl_check = _project("redeliver")
    trades = _trades(1200)
    repeats = trades[200:260]  # the collector's retry: the same events again
    published = _publish(project, trades + repeats, bad=True)
    # a reader that pulls and dies before it writes anything: nothing acknowledged
    dead = pubsub_v1.SubscriberClient()
    held = dead.pull(subscription=subscription, max_messages=100, timeout=10).received_messages
    dead.close()
    assert held
    store = BigtableServingStore(project, "miraikakaku")

    handle = run(_argv(project, subscription), settings=Settings(data_dir=tmp_path / "var"))
    try:
        s = _wait(handle.summary, lambda s: s.events_read >= published and s.reconciled, 300)
    finally:
        handle.cancel()
    # each message read exactly once by this run (the held ones after their deadline), the
    # repeats counted and dropped, each event one row
    assert s.events_read == published
    assert s.duplicates == len(repeats)
    assert s.bars_stored == len(trades)
    assert s.parse_dead_letters == len(BAD_MESSAGES)
    held_keys = {rowkeys.event_key(PriceEvent.from_json(m.message.data.decode()))
                 for m in held if m.message.data.startswith(b"{\"")}
    keys = set(_tick_keys(store))
    assert held_keys <= keys
    counts = _reconcile(store, dl_check, trades + repeats, published, bad=True)
    assert counts["repeats"] == len(repeats)
    _assert_drained(subscription)  # the dropped repeats were acknowledged too
