"""Publish ``PriceEvent``s to a Pub/Sub topic with ordering keys, pacing and a written retry policy.

``publish_events(events, "projects/P/topics/prices")`` sends each event as one message: the data is
``event.to_json()``, the attributes are ``symbol``, ``instrument_id``, ``interval``, ``event_time``
(RFC 3339 UTC with milliseconds, what Beam's ``ReadFromPubSub(timestamp_attribute=...)`` reads),
``event_id``, ``source`` and ``schema_version``, and the ordering key is the instrument id, so a
subscription with message ordering delivers each instrument's events in publish order. Pacing
replays a file at a multiple of real time (``speed=60``: one market hour per minute) or as fast as
possible, optionally capped at ``max_rate`` messages per second. Failures follow ``RetryPolicy``:
transient errors are retried with exponential backoff and jitter, after ``resume_publish`` on the
ordering key; a message that still fails is counted in ``PublishReport.failed`` with its event
id, never dropped silently. Input ``DeadLetter``s (rows the parser rejected) are counted, not
published. Run it as ``python -m collector.cli publish --help`` (``miraikakaku publish`` in the
main CLI).
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import datetime as dt
import logging
import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import grpc
from google.api_core import exceptions as gexc
from google.api_core import retry as retry_lib

from miraikakaku.schema import DeadLetter, PriceEvent

__all__ = [
    "BATCH_SETTINGS",
    "PREFLIGHT_RETRY",
    "TRANSIENT_ERRORS",
    "OutboundMessage",
    "PublishReport",
    "RetryPolicy",
    "build_message",
    "ensure_topic",
    "format_event_time",
    "is_transient",
    "make_publisher",
    "publish_events",
    "topic_path",
]

_LOG = logging.getLogger(__name__)
_LOGGED_FAILURES = 10

TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    gexc.ServiceUnavailable,
    gexc.DeadlineExceeded,
    gexc.InternalServerError,
    gexc.Aborted,
    gexc.ResourceExhausted,
)
"""google.api_core errors worth retrying (plus raw gRPC errors with the matching status codes)."""

_TRANSIENT_GRPC_CODES = frozenset({
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.ABORTED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
})

try:  # the client's reason text for batches cancelled behind a failed one (same ordering key)
    from google.cloud.pubsub_v1.publisher._batch.base import BatchCancellationReason

    _CANCELLED_BEHIND_FAILURE = BatchCancellationReason.PRIOR_ORDERED_MESSAGE_FAILED.value
except ImportError:  # pragma: no cover - private module moved
    _CANCELLED_BEHIND_FAILURE = "prior ordered message for the same key has failed"

BATCH_SETTINGS = {"max_messages": 1000, "max_bytes": 1_000_000, "max_latency": 0.05}
"""Client batching: up to 1000 messages or 1 MB per Publish RPC, waiting at most 50 ms.

With message ordering the client sends one batch at a time per ordering key, so large batches are
what makes a single instrument fast; 50 ms adds little latency to a paced replay."""


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """When a failed publish is tried again.

    A message is published at most ``attempts`` times. Only transient errors (``is_transient``)
    are retried; any other error (``NotFound``, ``InvalidArgument``, ``PermissionDenied``, a
    message too large ...) fails the message at once. Messages of the same ordering key that the
    client cancelled because an earlier one failed are re-sent in order and do not use up their own
    attempts. Before retry ``n`` (1, 2, ...) the publisher sleeps
    ``min(max_delay, initial_delay * multiplier ** (n - 1))`` scaled by a random factor in
    ``[1 - jitter, 1]``, then calls ``resume_publish`` on the ordering key. The client library's
    own retry is switched off (``retry=None``): in ordered mode it would retry for 2**32 s, so a
    dead endpoint would hang the publisher without a report. Each Publish RPC gets
    ``rpc_timeout`` s.

    Attributes:
        attempts: total tries per message (first publish included), >= 1.
        initial_delay: seconds before the first retry.
        max_delay: cap on the delay between retries, seconds.
        multiplier: growth of the delay per retry.
        jitter: fraction of the delay that is randomized (0 = none, 1 = full jitter).
        rpc_timeout: deadline of one Publish RPC, seconds.
    """

    attempts: int = 5
    initial_delay: float = 0.25
    max_delay: float = 10.0
    multiplier: float = 2.0
    jitter: float = 0.5
    rpc_timeout: float = 60.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"attempts must be >= 1, got {self.attempts}")
        if not 0.0 <= self.jitter <= 1.0:
            raise ValueError(f"jitter must be within [0, 1], got {self.jitter}")

    def delay(self, retry_number: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before retry ``retry_number`` (1-based)."""
        base = min(self.max_delay, self.initial_delay * self.multiplier ** max(0, retry_number - 1))
        r = (rng or random).random()
        return base * (1.0 - self.jitter * r)


def is_transient(exc: BaseException) -> bool:
    """True for errors worth retrying: ``TRANSIENT_ERRORS`` or a gRPC error with the same codes."""
    if isinstance(exc, TRANSIENT_ERRORS):
        return True
    if isinstance(exc, grpc.RpcError):
        code = getattr(exc, "code", None)
        return callable(code) and code() in _TRANSIENT_GRPC_CODES
    return False


def _is_consequential(exc: BaseException) -> bool:
    """True when the client failed a message only because an earlier one of its key failed."""
    from google.cloud.pubsub_v1.publisher.exceptions import PublishToPausedOrderingKeyException

    if isinstance(exc, PublishToPausedOrderingKeyException):
        return True
    return isinstance(exc, RuntimeError) and _CANCELLED_BEHIND_FAILURE in str(exc)


def format_event_time(value: dt.datetime) -> str:
    """RFC 3339 UTC with milliseconds (``2013-10-07T13:30:00.270Z``); sub-millisecond is cut.

    Raises:
        ValueError: for a naive datetime.
    """
    if value.tzinfo is None:
        raise ValueError(f"naive datetime {value!r}: event times must be aware")
    t = value.astimezone(dt.timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


@dataclasses.dataclass(frozen=True)
class OutboundMessage:
    """One Pub/Sub message as it will be published.

    Attributes:
        data: the payload, ``PriceEvent.to_json()`` as UTF-8.
        attributes: string attributes (see ``build_message``).
        ordering_key: the instrument id.
        event_id: the event's id, for reports.
    """

    data: bytes
    attributes: Mapping[str, str]
    ordering_key: str
    event_id: str


def build_message(event: PriceEvent) -> OutboundMessage:
    """Build the Pub/Sub message for one event (a pure function).

    Args:
        event: the event; its ``event_time`` is UTC.

    Returns:
        The message: attributes ``symbol``, ``instrument_id``, ``interval``, ``event_time``
        (``format_event_time``), ``event_id``, ``source`` and ``schema_version``; ordering key
        ``instrument_id``.
    """
    attributes = {
        "symbol": event.symbol,
        "instrument_id": event.instrument_id,
        "interval": event.interval,
        "event_time": format_event_time(event.event_time),
        "event_id": event.event_id,
        "source": event.source,
        "schema_version": str(event.schema_version),
    }
    return OutboundMessage(event.to_json().encode("utf-8"), attributes, event.instrument_id,
                           event.event_id)


@dataclasses.dataclass
class PublishReport:
    """What ``publish_events`` did; ``published + failed`` equals the events offered.

    Attributes:
        published: messages the server acknowledged.
        failed: messages that still failed after the retry policy (or failed permanently).
        failed_event_ids: their event ids, in the order they were given up.
        dead_lettered_input: input ``DeadLetter``s (bad rows), counted and not published.
        seconds: wall time of the whole call (reading the input included).
        retries: re-publishes made by the retry policy.
        dead_letter_reasons: input dead letters by reason.
    """

    published: int = 0
    failed: int = 0
    failed_event_ids: list[str] = dataclasses.field(default_factory=list)
    dead_lettered_input: int = 0
    seconds: float = 0.0
    retries: int = 0
    dead_letter_reasons: dict[str, int] = dataclasses.field(default_factory=dict)

    @property
    def messages_per_second(self) -> float:
        """Acknowledged messages per wall-clock second."""
        return self.published / self.seconds if self.seconds > 0 else 0.0

    def merge(self, other: PublishReport) -> None:
        """Add ``other``'s counts to this report (used by ``poll``)."""
        self.published += other.published
        self.failed += other.failed
        self.failed_event_ids.extend(other.failed_event_ids)
        self.dead_lettered_input += other.dead_lettered_input
        self.seconds += other.seconds
        self.retries += other.retries
        for reason, n in other.dead_letter_reasons.items():
            self.dead_letter_reasons[reason] = self.dead_letter_reasons.get(reason, 0) + n


def topic_path(project: str, topic: str) -> str:
    """``projects/{project}/topics/{topic}``."""
    return f"projects/{project}/topics/{topic}"


def make_publisher(batch_settings: Mapping[str, Any] | None = None):
    """A ``PublisherClient`` with message ordering and ``BATCH_SETTINGS``.

    It talks to the emulator when ``PUBSUB_EMULATOR_HOST`` is set, else to Google Cloud with
    Application Default Credentials.
    """
    from google.cloud import pubsub_v1

    settings = {**BATCH_SETTINGS, **(batch_settings or {})}
    return pubsub_v1.PublisherClient(
        batch_settings=pubsub_v1.types.BatchSettings(**settings),
        publisher_options=pubsub_v1.types.PublisherOptions(enable_message_ordering=True),
    )


PREFLIGHT_RETRY = retry_lib.Retry(initial=0.5, maximum=5.0, timeout=30.0)
"""Retry of admin calls (topic checks): transient errors for 30 s at most (the client: 600 s)."""


def ensure_topic(topic: str, publisher=None) -> bool:
    """Create ``topic`` unless it exists.

    Returns:
        True when it was created, False when it already existed.

    Raises:
        google.api_core.exceptions.GoogleAPIError: Pub/Sub unreachable for 30 s, or no permission.
    """
    client = publisher or make_publisher()
    try:
        client.create_topic(request={"name": topic}, retry=PREFLIGHT_RETRY, timeout=10.0)
        return True
    except gexc.AlreadyExists:
        return False


class _Pacer:
    """Sleeps so events go out at ``speed`` × their event-time spacing and at most ``max_rate``/s.

    The replay clock starts at the first event; an event whose time is earlier than the clock
    (e.g. a second symbol's block in a file grouped by symbol) goes out without waiting.
    """

    def __init__(self, speed: float | None, max_rate: float | None,
                 clock: Callable[[], float], sleep: Callable[[float], None]) -> None:
        if speed is not None and speed <= 0:
            raise ValueError(f"speed must be > 0, got {speed}")
        if max_rate is not None and max_rate <= 0:
            raise ValueError(f"max_rate must be > 0, got {max_rate}")
        self._speed, self._max_rate = speed, max_rate
        self._clock, self._sleep = clock, sleep
        self._t0: float | None = None
        self._e0: dt.datetime | None = None
        self._n = 0

    @property
    def active(self) -> bool:
        return self._speed is not None or self._max_rate is not None

    def wait(self, event_time: dt.datetime) -> None:
        now = self._clock()
        if self._t0 is None or self._e0 is None:
            self._t0, self._e0 = now, event_time
        target = self._t0
        if self._speed is not None:
            target = max(target, self._t0 + (event_time - self._e0).total_seconds() / self._speed)
        if self._max_rate is not None:
            target = max(target, self._t0 + self._n / self._max_rate)
        self._n += 1
        if target - now > 0.0005:
            self._sleep(target - now)


@dataclasses.dataclass(eq=False)
class _Entry:
    message: OutboundMessage
    future: Any = None
    attempts: int = 0


def _failed_future(exc: BaseException) -> concurrent.futures.Future:
    f: concurrent.futures.Future = concurrent.futures.Future()
    f.set_exception(exc)
    return f


class _OrderedSender:
    """Publishes entries, tracks their futures and recovers failed ordering keys in order."""

    def __init__(self, client, topic: str, policy: RetryPolicy, report: PublishReport,
                 sleep: Callable[[float], None], rng: random.Random, max_in_flight: int) -> None:
        self._client, self._topic, self._policy = client, topic, policy
        self._report, self._sleep, self._rng = report, sleep, rng
        self._max_in_flight = max_in_flight
        self._in_flight: collections.deque[_Entry] = collections.deque()
        self._lock = threading.Lock()
        self._failed_keys: set[str] = set()

    def _send(self, entry: _Entry) -> None:
        entry.attempts += 1
        m = entry.message
        try:
            future = self._client.publish(self._topic, m.data, ordering_key=m.ordering_key,
                                          retry=None, timeout=self._policy.rpc_timeout,
                                          **m.attributes)
        except Exception as e:  # raised before the client took the message: same path as async
            future = _failed_future(e)
        entry.future = future
        future.add_done_callback(lambda f, key=m.ordering_key: self._on_done(f, key))

    def _on_done(self, future, key: str) -> None:
        try:
            failed = future.exception() is not None
        except concurrent.futures.CancelledError:
            failed = True
        if failed:
            with self._lock:
                self._failed_keys.add(key)

    def submit(self, message: OutboundMessage) -> None:
        """Publish one message; recover failed keys first so a key's order holds."""
        entry = _Entry(message)
        self._send(entry)
        self._in_flight.append(entry)
        self._recover_failed_keys()
        self._reap(block=len(self._in_flight) > self._max_in_flight)

    def finish(self) -> None:
        """Wait for every message in flight (with recovery)."""
        while self._in_flight:
            self._recover_failed_keys()
            self._reap(block=True)
        self._recover_failed_keys()

    def _recover_failed_keys(self) -> None:
        while self._failed_keys:
            with self._lock:
                keys = sorted(self._failed_keys)
                self._failed_keys.clear()
            for key in keys:
                self._recover(key)

    def _reap(self, *, block: bool) -> None:
        while self._in_flight and (block or self._in_flight[0].future.done()):
            head = self._in_flight[0]
            exc = self._wait(head)
            if exc is None:
                self._in_flight.popleft()
                self._report.published += 1
            else:
                self._recover(head.message.ordering_key)
            block = False

    def _wait(self, entry: _Entry) -> BaseException | None:
        try:
            return entry.future.exception(timeout=self._policy.rpc_timeout + 30.0)
        except (concurrent.futures.TimeoutError, concurrent.futures.CancelledError) as e:
            return e

    def _resume(self, key: str) -> None:
        try:
            self._client.resume_publish(self._topic, key)
        except (RuntimeError, ValueError):
            pass  # not paused (the error happened before the client's sequencer saw it)

    def _give_up(self, entry: _Entry, exc: BaseException) -> None:
        self._report.failed += 1
        self._report.failed_event_ids.append(entry.message.event_id)
        if self._report.failed <= _LOGGED_FAILURES:  # the report has them all
            _LOG.error("publish of %s failed after %d attempt(s): %r%s", entry.message.event_id,
                       entry.attempts, exc,
                       " (further failures are only counted)"
                       if self._report.failed == _LOGGED_FAILURES else "")

    def _recover(self, key: str) -> None:
        """Settle every in-flight message of ``key``; re-send the retryable ones, in order."""
        pending = [e for e in self._in_flight if e.message.ordering_key == key]
        if not pending:
            return
        self._in_flight = collections.deque(
            e for e in self._in_flight if e.message.ordering_key != key)
        retry_number = 0
        while pending:
            outcomes = [(e, self._wait(e)) for e in pending]
            real_failure = any(x is not None and not _is_consequential(x) for _, x in outcomes)
            retry: list[_Entry] = []
            failed_any = False
            for entry, exc in outcomes:
                if exc is None:
                    self._report.published += 1
                    continue
                failed_any = True
                if _is_consequential(exc):
                    if real_failure:
                        entry.attempts -= 1  # cancelled behind another failure: not its fault
                    if entry.attempts < self._policy.attempts:
                        retry.append(entry)
                    else:
                        self._give_up(entry, exc)
                elif is_transient(exc) and entry.attempts < self._policy.attempts:
                    retry.append(entry)
                else:
                    self._give_up(entry, exc)
            if failed_any:
                self._resume(key)
            if not retry:
                return
            retry_number += 1
            delay = self._policy.delay(retry_number, self._rng)
            _LOG.warning("retrying %d message(s) of ordering key %s in %.2f s", len(retry), key,
                         delay)
            self._sleep(delay)
            self._resume(key)
            for entry in retry:
                self._report.retries += 1
                self._send(entry)
            pending = retry
        with self._lock:  # these were settled here; their callbacks may have flagged the key
            self._failed_keys.discard(key)


def publish_events(
    events: Iterable[PriceEvent | DeadLetter],
    topic_path: str,
    *,
    speed: float | None = None,
    max_rate: float | None = None,
    publisher=None,
    progress: Callable[[int], None] | None = None,
    policy: RetryPolicy | None = None,
    max_in_flight: int = 20_000,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    rng: random.Random | None = None,
) -> PublishReport:
    """Publish events to ``topic_path`` and report what happened to each.

    Args:
        events: ``PriceEvent``s to publish; ``DeadLetter``s mixed in (rows the parser rejected)
            are counted in ``dead_lettered_input`` and not published.
        topic_path: ``projects/{project}/topics/{topic}``.
        speed: replay speed as a multiple of real time (``60``: one hour of event time per
            minute), pacing by the event-time gaps; None sends as fast as possible.
        max_rate: cap in messages per second (None: no cap).
        publisher: a ``PublisherClient`` created with message ordering (``make_publisher``), or
            anything with its ``publish``/``resume_publish`` methods; None creates one and stops it
            at the end.
        progress: called with the number of events handed to the client so far.
        policy: the retry policy (default ``RetryPolicy()``).
        max_in_flight: at most this many unacknowledged messages before the loop waits.
        clock: monotonic clock in seconds (tests inject one).
        sleep: sleep function in seconds (tests inject one).
        rng: random source for the retry jitter.

    Returns:
        The report; ``published + failed`` is the number of ``PriceEvent``s given.

    Raises:
        ValueError: for a non-positive ``speed`` or ``max_rate``, or a ``PublisherClient`` created
            without message ordering (it would reject every message's ordering key).
    """
    started = time.monotonic()
    policy = policy or RetryPolicy()
    pacer = _Pacer(speed, max_rate, clock, sleep)
    options = getattr(publisher, "publisher_options", None)
    if options is not None and not options.enable_message_ordering:
        raise ValueError("the publisher client needs PublisherOptions(enable_message_ordering="
                         "True); use collector.publisher.make_publisher()")
    own_client = publisher is None
    client = publisher or make_publisher()
    report = PublishReport()
    sender = _OrderedSender(client, topic_path, policy, report, sleep, rng or random.Random(),
                            max_in_flight)
    submitted = 0
    try:
        for item in events:
            if isinstance(item, DeadLetter):
                report.dead_lettered_input += 1
                report.dead_letter_reasons[item.reason] = (
                    report.dead_letter_reasons.get(item.reason, 0) + 1)
                continue
            if pacer.active:
                pacer.wait(item.event_time)
            sender.submit(build_message(item))
            submitted += 1
            if progress is not None:
                progress(submitted)
        sender.finish()
    finally:
        if own_client:
            client.stop()
    report.seconds = time.monotonic() - started
    return report
