"""Unit tests of the collector: file filtering on real IBM trades, message building, the Alpha
Vantage provider on recorded answers, the publish retry policy and pacing (fake clients).

Run: ``pytest tests/unit/test_collector.py``. The Pub/Sub emulator tests are in
``tests/integration/test_collector.py``.
"""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import json
import random
from pathlib import Path

import grpc
import httpx
import pandas as pd
import pytest
from google.api_core import exceptions as gexc
from google.cloud.pubsub_v1.publisher.exceptions import PublishToPausedOrderingKeyException

from collector import cli
from collector.files import events_from_file, parse_utc
from collector.providers import (
    AlphaVantageProvider,
    PermanentProviderError,
    QuoteProvider,
    TransientProviderError,
    poll,
)
from collector.publisher import (
    RetryPolicy,
    build_message,
    format_event_time,
    is_transient,
    publish_events,
)
from miraikakaku.schema import DeadLetter, PriceEvent
from tests.conftest import SHARED, write_csv

pytestmark = pytest.mark.unit

TICK = SHARED / "normalized" / "us_tick_trades_lean.normalized.csv.gz"
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "provider"
UTC = dt.timezone.utc
HOUR_START = dt.datetime(2013, 10, 7, 13, 30, tzinfo=UTC)  # 09:30 New York (EDT)
HOUR_END = dt.datetime(2013, 10, 7, 14, 30, tzinfo=UTC)
TOPIC = "projects/test/topics/prices"
FAST = RetryPolicy(attempts=3, initial_delay=0.01, max_delay=0.05, jitter=0.0)


# --- files --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ibm_first_hour() -> list[PriceEvent | DeadLetter]:
    return list(events_from_file(TICK, symbols=["IBM"], start=HOUR_START, end=HOUR_END))


@pytest.fixture(scope="module")
def ibm_frame() -> pd.DataFrame:
    df = pd.read_csv(TICK, dtype={"symbol": str, "timestamp": str},
                     float_precision="round_trip")
    df = df[df["symbol"] == "IBM"].reset_index(drop=True)
    df["seq"] = range(len(df))  # position among the symbol's rows = iter_file's sequence
    df["t"] = pd.to_datetime(df["timestamp"], utc=True)
    return df


def test_first_session_hour_matches_an_independent_count(ibm_first_hour, ibm_frame):
    window = ibm_frame[(ibm_frame["t"] >= pd.Timestamp(HOUR_START))
                       & (ibm_frame["t"] < pd.Timestamp(HOUR_END))]
    events = [e for e in ibm_first_hour if isinstance(e, PriceEvent)]
    assert not [e for e in ibm_first_hour if isinstance(e, DeadLetter)]
    assert len(events) == len(window) > 1000
    assert all(e.symbol == "IBM" and e.instrument_id == "XNYS:IBM" and e.interval == "tick"
               for e in events)
    assert all(HOUR_START <= e.event_time < HOUR_END for e in events)
    assert events[0].event_time == window["t"].iloc[0].to_pydatetime()
    assert [e.sequence for e in events] == window["seq"].tolist()
    assert [e.close for e in events] == window["price"].tolist()


def test_trades_sharing_a_timestamp_get_distinct_sequences_and_ids(ibm_first_hour):
    events = [e for e in ibm_first_hour if isinstance(e, PriceEvent)]
    assert len({e.event_id for e in events}) == len(events)
    by_time: dict[dt.datetime, list[int]] = {}
    for e in events:
        by_time.setdefault(e.event_time, []).append(e.sequence)
    shared = {t: s for t, s in by_time.items() if len(s) > 1}
    assert len(shared) > 50  # real tick data: many trades share a millisecond
    assert all(len(set(s)) == len(s) for s in shared.values())


def test_sorted_input_stops_early_with_the_same_events(ibm_first_hour):
    fast = list(events_from_file(TICK, symbols=["xnys:ibm"], start=HOUR_START, end=HOUR_END,
                                 sorted_input=True))
    assert fast == ibm_first_hour


def test_limit_counts_events_and_keeps_file_ids(ibm_first_hour):
    first = list(events_from_file(TICK, symbols=["IBM"], start=HOUR_START, end=HOUR_END,
                                  limit=25, sorted_input=True))
    assert first == ibm_first_hour[:25]
    assert list(events_from_file(TICK, limit=0)) == []


def test_bad_rows_come_out_as_dead_letters_unless_outside_the_filter(tmp_path):
    header = ["symbol", "timestamp", "price", "size", "exchange", "sale_condition", "suspicious"]
    rows = [
        ["IBM", "2013-10-07T09:30:00.100-04:00", "185.5", "100", "N", "0", "0"],
        ["IBM", "2013-10-07T09:30:01.000-04:00", "#VALUE!", "100", "N", "0", "0"],  # in window
        ["IBM", "2013-10-07T11:00:00.000-04:00", "", "100", "N", "0", "0"],  # after the window
        ["SPY", "2013-10-07T09:30:02.000-04:00", "168.1", "", "N", "0", "0"],  # other symbol
        ["IBM", "not a time", "185.0", "100", "N", "0", "0"],  # time unreadable: kept
        ["IBM", "2013-10-07T09:30:03.000-04:00", "185.6", "200", "N", "0", "0"],
    ]
    path = write_csv(tmp_path / "bad_tick_trades.csv", header, rows)
    out = list(events_from_file(path, symbols=["IBM"], start=HOUR_START, end=HOUR_END))
    assert [type(x).__name__ for x in out] == ["PriceEvent", "DeadLetter", "DeadLetter",
                                               "PriceEvent"]
    assert out[1].reason == "bad_number"
    assert out[1].event_time == dt.datetime(2013, 10, 7, 13, 30, 1, tzinfo=UTC)
    assert out[2].reason == "bad_timestamp" and out[2].event_time is None
    assert out[3].sequence == 4  # the file's numbering, not the filtered one


def test_naive_window_bounds_are_rejected():
    with pytest.raises(ValueError):
        list(events_from_file(TICK, start=dt.datetime(2013, 10, 7, 13, 30)))
    with pytest.raises(ValueError, match="offset"):
        parse_utc("2013-10-07T13:30:00")
    assert parse_utc("2013-10-07T09:30-04:00") == HOUR_START


# --- messages -----------------------------------------------------------------------------------

def test_build_message_attributes_and_ordering_key(ibm_first_hour):
    from apache_beam.utils.timestamp import Timestamp

    event = next(e for e in ibm_first_hour if isinstance(e, PriceEvent)
                 and e.event_time.microsecond)
    msg = build_message(event)
    assert msg.ordering_key == "XNYS:IBM" == event.instrument_id
    assert msg.event_id == event.event_id
    assert dict(msg.attributes) == {
        "symbol": "IBM",
        "instrument_id": "XNYS:IBM",
        "interval": "tick",
        "event_time": format_event_time(event.event_time),
        "event_id": event.event_id,
        "source": "lean",
        "schema_version": "1",
    }
    assert all(isinstance(v, str) for v in msg.attributes.values())
    assert PriceEvent.from_json(msg.data) == event
    # what Beam's ReadFromPubSub(timestamp_attribute="event_time") does with the attribute
    ts = Timestamp.from_rfc3339(msg.attributes["event_time"])
    assert ts.to_utc_datetime(has_tz=True) == event.event_time


def test_format_event_time_is_rfc3339_utc_milliseconds():
    t = dt.datetime(2013, 10, 7, 9, 30, 0, 270999, tzinfo=dt.timezone(dt.timedelta(hours=-4)))
    assert format_event_time(t) == "2013-10-07T13:30:00.270Z"
    assert format_event_time(dt.datetime(2021, 4, 21, 20, tzinfo=UTC)) == "2021-04-21T20:00:00.000Z"
    with pytest.raises(ValueError):
        format_event_time(dt.datetime(2021, 4, 21, 20))


# --- provider -----------------------------------------------------------------------------------

def _fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def _transport(answers: dict[str, bytes | int | Exception], seen: list[httpx.Request] | None = None
               ) -> httpx.MockTransport:
    """Serve a recorded answer per symbol (bytes = 200 JSON, int = that status, exception)."""

    def handler(request: httpx.Request) -> httpx.Response:
        if seen is not None:
            seen.append(request)
        answer = answers[request.url.params["symbol"]]
        if isinstance(answer, Exception):
            raise answer
        if isinstance(answer, int):
            return httpx.Response(answer, text="upstream trouble")
        return httpx.Response(200, content=answer, headers={"content-type": "application/json"})

    return httpx.MockTransport(handler)


AFTER_CLOSE = dt.datetime(2021, 4, 21, 22, 5, 0, tzinfo=UTC)


def test_good_quote_becomes_a_daily_bar_at_the_session_close(monkeypatch):
    monkeypatch.setenv("MIRAIKAKAKU_ALPHAVANTAGE_API_KEY", "k-123")
    seen: list[httpx.Request] = []
    provider = AlphaVantageProvider(
        transport=_transport({"IBM": _fixture("alphavantage_global_quote_IBM.json")}, seen),
        clock=lambda: AFTER_CLOSE)
    assert isinstance(provider, QuoteProvider)
    [event] = provider.fetch_quotes(["IBM"])
    params = seen[0].url.params
    assert (params["function"], params["symbol"], params["apikey"]) == ("GLOBAL_QUOTE", "IBM",
                                                                        "k-123")
    assert str(seen[0].url).startswith("https://www.alphavantage.co/query?")
    assert event.instrument_id == "XNYS:IBM" and event.symbol == "IBM"
    assert event.source == "alphavantage" and event.interval == "1d" and event.currency == "USD"
    assert event.session_date == dt.date(2021, 4, 21)
    assert event.event_time == dt.datetime(2021, 4, 21, 20, 0, tzinfo=UTC)  # 16:00 EDT close
    assert (event.open, event.high, event.low, event.close) == (138.06, 143.73, 137.71, 143.55)
    assert event.volume == 11909005 and event.adj_close is None
    assert event.sequence == 0 and event.flags == ()
    assert event.event_id == "alphavantage/XNYS:IBM/1d/20210421/0"
    assert PriceEvent.from_json(event.to_json()) == event


def test_intraday_quote_is_a_partial_bar_at_the_fetch_time():
    fetched = dt.datetime(2021, 4, 21, 15, 0, 1, 234567, tzinfo=UTC)
    provider = AlphaVantageProvider(
        "k", transport=_transport({"IBM": _fixture("alphavantage_global_quote_IBM.json")}),
        clock=lambda: fetched)
    event = provider.fetch_quote("IBM")
    assert event.event_time == dt.datetime(2021, 4, 21, 15, 0, 1, 234000, tzinfo=UTC)
    assert event.flags == ("partial_bar",)
    assert event.sequence == int(fetched.timestamp())
    assert event.event_id != "alphavantage/XNYS:IBM/1d/20210421/0"


@pytest.mark.parametrize("answer, error, text", [
    (_fixture("alphavantage_note.json"), TransientProviderError, "Note"),
    (_fixture("alphavantage_information.json"), TransientProviderError, "Information"),
    (503, TransientProviderError, "HTTP 503"),
    (429, TransientProviderError, "HTTP 429"),
    (httpx.ConnectError("connection refused"), TransientProviderError, "ConnectError"),
    (_fixture("alphavantage_error_message.json"), PermanentProviderError, "Error Message"),
    (_fixture("alphavantage_empty_quote.json"), PermanentProviderError, "unknown symbol"),
    (404, PermanentProviderError, "HTTP 404"),
    (b"<html>maintenance</html>", PermanentProviderError, "not JSON"),
])
def test_provider_errors_are_classified_and_never_show_the_key(answer, error, text):
    provider = AlphaVantageProvider("secret-key-42", transport=_transport({"IBM": answer}),
                                    clock=lambda: AFTER_CLOSE)
    with pytest.raises(error, match=text) as info:
        provider.fetch_quotes(["IBM"])
    assert "secret-key-42" not in str(info.value)
    assert "secret-key-42" not in repr(provider)


def test_malformed_quote_is_permanent():
    quote = json.loads(_fixture("alphavantage_global_quote_IBM.json"))
    quote["Global Quote"]["05. price"] = "n/a"
    provider = AlphaVantageProvider("k", transport=_transport({"IBM": json.dumps(quote).encode()}),
                                    clock=lambda: AFTER_CLOSE)
    with pytest.raises(PermanentProviderError, match="malformed"):
        provider.fetch_quote("IBM")


def test_missing_api_key_is_an_error(monkeypatch):
    monkeypatch.delenv("MIRAIKAKAKU_ALPHAVANTAGE_API_KEY", raising=False)
    with pytest.raises(ValueError, match="MIRAIKAKAKU_ALPHAVANTAGE_API_KEY"):
        AlphaVantageProvider()


def test_poll_publishes_quotes_and_reports_failed_symbols():
    provider = AlphaVantageProvider("k", transport=_transport({
        "IBM": _fixture("alphavantage_global_quote_IBM.json"),
        "BADX": _fixture("alphavantage_error_message.json"),
        "SPY": _fixture("alphavantage_note.json"),
    }), clock=lambda: AFTER_CLOSE)
    fake = FakePublisher()
    sleeps: list[float] = []
    report = poll(provider, ["IBM", "BADX", "SPY"], TOPIC, interval_s=60, iterations=2,
                  publisher=fake, sleep=sleeps.append)
    assert report.iterations == 2 and report.quotes == 2
    assert report.transient_errors == 2 and report.permanent_errors == 2
    assert report.publish.published == 2 and report.publish.failed == 0
    assert report.publish.dead_lettered_input == 2
    assert report.publish.dead_letter_reasons == {"provider_error": 2}
    assert [m["attributes"]["event_id"] for m in fake.delivered] == [
        "alphavantage/XNYS:IBM/1d/20210421/0"] * 2
    assert len(sleeps) == 1 and 59 < sleeps[0] <= 60


# --- publisher: retry policy and pacing -----------------------------------------------------------

class FakePublisher:
    """A stand-in for ``PublisherClient`` with the ordered client's failure semantics.

    ``script[event_id]`` lists the outcome of each publish attempt of that message (an exception
    or None = success; missing = success). Messages wait in a batch of ``batch_size``; a batch is
    committed when full or when a future is waited on. As in the real ordered client, a failed
    message pauses its ordering key: the rest of that key's batch is cancelled and later publishes
    fail with ``PublishToPausedOrderingKeyException`` until ``resume_publish``.
    """

    def __init__(self, script=None, batch_size: int = 1, raise_sync: frozenset[str] = frozenset()):
        self.script = {k: list(v) for k, v in (script or {}).items()}
        self.batch_size = batch_size
        self.raise_sync = set(raise_sync)
        self.pending: list[tuple[dict, concurrent.futures.Future]] = []
        self.paused: set[str] = set()
        self.delivered: list[dict] = []
        self.resumed: list[tuple[str, str]] = []
        self.calls: list[dict] = []

    def publish(self, topic, data, ordering_key="", retry=None, timeout=None, **attributes):
        msg = {"topic": topic, "data": data, "ordering_key": ordering_key,
               "attributes": attributes, "retry": retry, "timeout": timeout}
        self.calls.append(msg)
        event_id = attributes["event_id"]
        if event_id in self.raise_sync:  # raised before the client takes the message
            self.raise_sync.discard(event_id)
            raise gexc.ServiceUnavailable("injected before publish")
        future = _LazyFuture(self)
        if ordering_key in self.paused:
            future.set_exception(PublishToPausedOrderingKeyException(ordering_key))
            return future
        self.pending.append((msg, future))
        if len(self.pending) >= self.batch_size:
            self.flush()
        return future

    def flush(self):
        pending, self.pending = self.pending, []
        for msg, future in pending:
            key = msg["ordering_key"]
            if key in self.paused:
                future.set_exception(RuntimeError(
                    "Batch cancelled because prior ordered message for the same key has failed. "
                    "This batch has been cancelled to avoid out-of-order publish."))
                continue
            outcomes = self.script.get(msg["attributes"]["event_id"])
            outcome = outcomes.pop(0) if outcomes else None
            if outcome is None:
                self.delivered.append(msg)
                future.set_result(f"id-{len(self.delivered)}")
            else:
                self.paused.add(key)
                future.set_exception(outcome)

    def resume_publish(self, topic, ordering_key):
        self.resumed.append((topic, ordering_key))
        if ordering_key not in self.paused:
            raise RuntimeError("Ordering key is not paused.")
        self.paused.discard(ordering_key)

    def stop(self):
        self.flush()


class _LazyFuture(concurrent.futures.Future):
    def __init__(self, owner: FakePublisher) -> None:
        super().__init__()
        self._owner = owner

    def exception(self, timeout=None):
        if not self.done():
            self._owner.flush()
        return super().exception(timeout)


def _event(i: int, symbol: str = "IBM", second: float = 0.0) -> PriceEvent:
    t = dt.datetime(2013, 10, 7, 13, 30, tzinfo=UTC) + dt.timedelta(seconds=second)
    return PriceEvent(1, f"lean/XNYS:{symbol}/tick/{t:%Y%m%dT%H%M%S}.000/{i}", f"XNYS:{symbol}",
                      symbol, "lean", i, "tick", t.date(), t, 185.0, 185.0, 185.0, 185.0, 100.0,
                      None, "USD")


def _ids(messages) -> list[str]:
    return [m["attributes"]["event_id"] for m in messages]


def test_two_transient_failures_then_success_is_published_once_in_order():
    events = [_event(i) for i in range(6)]
    fake = FakePublisher({events[2].event_id: [gexc.ServiceUnavailable("x"),
                                               gexc.ServiceUnavailable("y"), None]})
    sleeps: list[float] = []
    report = publish_events(events, TOPIC, publisher=fake, sleep=sleeps.append,
                            policy=RetryPolicy(attempts=3, initial_delay=0.1, jitter=0.0))
    assert (report.published, report.failed, report.retries) == (6, 0, 2)
    assert _ids(fake.delivered) == [e.event_id for e in events]
    assert fake.resumed and set(fake.resumed) == {(TOPIC, "XNYS:IBM")}
    assert sleeps == [0.1, 0.2]  # exponential backoff, no jitter
    assert all(c["retry"] is None and c["timeout"] == 60.0 for c in fake.calls)


def test_permanent_failure_is_counted_with_its_event_id_and_the_rest_published():
    events = [_event(i) for i in range(5)]
    fake = FakePublisher({events[1].event_id: [gexc.InvalidArgument("bad message")]})
    report = publish_events(events, TOPIC, publisher=fake, sleep=lambda s: None, policy=FAST)
    assert (report.published, report.failed, report.retries) == (4, 1, 0)
    assert report.failed_event_ids == [events[1].event_id]
    assert _ids(fake.delivered) == [e.event_id for i, e in enumerate(events) if i != 1]


def test_transient_failure_that_persists_fails_after_the_policy_attempts():
    events = [_event(i) for i in range(3)]
    fake = FakePublisher({events[0].event_id: [gexc.DeadlineExceeded("slow")] * 10})
    sleeps: list[float] = []
    policy = RetryPolicy(attempts=4, initial_delay=0.5, max_delay=1.5, jitter=0.5)
    report = publish_events(events, TOPIC, publisher=fake, sleep=sleeps.append, policy=policy,
                            rng=random.Random(7))
    assert report.failed == 1 and report.failed_event_ids == [events[0].event_id]
    assert report.published == 2 and report.retries == 3
    assert len(fake.script[events[0].event_id]) == 10 - 4  # exactly `attempts` tries
    for n, s in enumerate(sleeps, start=1):  # jittered within [base/2, base], capped
        base = min(1.5, 0.5 * 2 ** (n - 1))
        assert base / 2 <= s <= base


def test_messages_cancelled_behind_a_failure_are_resent_in_order_without_using_attempts():
    ibm = [_event(i) for i in range(8)]
    spy = [_event(i, "SPY") for i in range(4)]
    events = [x for pair in zip(ibm[:4], spy) for x in pair] + ibm[4:]
    fake = FakePublisher({ibm[1].event_id: [gexc.Aborted("a"), gexc.Aborted("b")]},
                         batch_size=5)
    report = publish_events(events, TOPIC, publisher=fake, sleep=lambda s: None,
                            policy=RetryPolicy(attempts=3, initial_delay=0.01, jitter=0.0))
    assert (report.published, report.failed) == (12, 0)
    delivered = _ids(fake.delivered)
    assert [d for d in delivered if "XNYS:IBM" in d] == [e.event_id for e in ibm]
    assert [d for d in delivered if "XNYS:SPY" in d] == [e.event_id for e in spy]


def test_error_raised_by_publish_itself_is_retried_and_keeps_the_key_order():
    events = [_event(i) for i in range(5)]
    fake = FakePublisher(batch_size=3, raise_sync=frozenset({events[2].event_id}))
    report = publish_events(events, TOPIC, publisher=fake, sleep=lambda s: None, policy=FAST)
    assert (report.published, report.failed, report.retries) == (5, 0, 1)
    assert _ids(fake.delivered) == [e.event_id for e in events]


def test_input_dead_letters_are_counted_not_published():
    dl = DeadLetter("ParseEvents", "bad_number", "price", "IBM,x", "f.csv")
    fake = FakePublisher()
    report = publish_events([_event(0), dl, _event(1), dl], TOPIC, publisher=fake)
    assert report.published == 2 and report.dead_lettered_input == 2
    assert report.dead_letter_reasons == {"bad_number": 2}
    assert len(fake.delivered) == 2


def test_transient_classification():
    class _Rpc(grpc.RpcError):
        def __init__(self, code):
            self._code = code

        def code(self):
            return self._code

    for exc in (gexc.ServiceUnavailable("x"), gexc.DeadlineExceeded("x"),
                gexc.InternalServerError("x"), gexc.Aborted("x"), gexc.ResourceExhausted("x"),
                _Rpc(grpc.StatusCode.UNAVAILABLE)):
        assert is_transient(exc), exc
    for exc in (gexc.NotFound("x"), gexc.InvalidArgument("x"), gexc.PermissionDenied("x"),
                _Rpc(grpc.StatusCode.INVALID_ARGUMENT), ValueError("x")):
        assert not is_transient(exc), exc
    with pytest.raises(ValueError):
        RetryPolicy(attempts=0)


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_speed_paces_by_event_time_gaps():
    clock = _Clock()
    events = [_event(i, second=s) for i, s in enumerate([0, 60, 60, 180, 120])]
    report = publish_events(events, TOPIC, speed=60, publisher=FakePublisher(), clock=clock,
                            sleep=clock.sleep)
    assert report.published == 5
    assert clock.sleeps == pytest.approx([1.0, 2.0])  # the earlier last event goes at once
    assert clock.now == pytest.approx(1003.0)


def test_max_rate_caps_messages_per_second():
    clock = _Clock()
    events = [_event(i) for i in range(11)]
    publish_events(events, TOPIC, max_rate=5, publisher=FakePublisher(), clock=clock,
                   sleep=clock.sleep)
    assert clock.now == pytest.approx(1002.0)  # 11 messages at 5/s: the last at t0 + 2 s
    with pytest.raises(ValueError):
        publish_events(events, TOPIC, speed=0, publisher=FakePublisher())


# --- command line ---------------------------------------------------------------------------------

def _parse(argv):
    import argparse

    parser = argparse.ArgumentParser()
    cli.add_publish_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["publish", *argv])


def test_publish_arguments_and_defaults(monkeypatch):
    monkeypatch.setenv("MIRAIKAKAKU_GCP_PROJECT", "my-proj")
    assert cli.default_topic() == "projects/my-proj/topics/prices"
    monkeypatch.delenv("MIRAIKAKAKU_GCP_PROJECT")
    assert cli.default_topic() == "projects/miraikakaku-local/topics/prices"
    args = _parse(["--symbols", "IBM,SPY", "--symbols", "XNYS:AAPL", "--start",
                   "2013-10-07T09:30-04:00", "--speed", "60", "--max-rate", "500"])
    assert args.symbols == ["IBM", "SPY", "XNYS:AAPL"]
    assert args.start == HOUR_START and args.speed == 60 and args.max_rate == 500
    assert args.func is cli.run_publish and args.topic is None and args.input is None
    for bad in (["--topic", "prices"], ["--start", "2013-10-07T13:30"], ["--speed", "0"],
                ["--input", "x.csv", "--provider", "alphavantage"]):
        with pytest.raises(SystemExit):
            _parse(bad)


def test_a_client_without_message_ordering_is_rejected_before_publishing():
    from google.cloud import pubsub_v1

    class _Unordered(FakePublisher):
        publisher_options = pubsub_v1.types.PublisherOptions(enable_message_ordering=False)

    fake = _Unordered()
    with pytest.raises(ValueError, match="enable_message_ordering"):
        publish_events([_event(0)], TOPIC, publisher=fake)
    assert fake.calls == []
