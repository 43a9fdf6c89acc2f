"""Acknowledge Pub/Sub messages only after what they became is written (DirectRunner).

Why: Beam's DirectRunner reads Pub/Sub with ``_PubSubReadEvaluator`` (Beam 2.74,
``apache_beam/runners/direct/transform_evaluator.py``), which pulls up to 10 messages per bundle
and acknowledges them at once, before any step has processed them. A process killed between that
acknowledgement and the sink's write loses the messages for good (issue 13: 5 of 5,000 trades
after a SIGKILL and a restart). Dataflow is not affected: its Pub/Sub source acknowledges a
message only after the bundle that read it is durably committed, so ``ReadFromPubSub`` stays as
it is there (``pipelines.prices._read``).

What this module does, for streaming runs on the DirectRunner (at least once):

* ``install_direct_read()`` makes the DirectRunner read ``ReadFromPubSub`` with
  ``AckAfterWriteReadEvaluator``: it pulls with one long-lived ``SubscriberClient`` per
  subscription, does **not** acknowledge, and registers each message's ack id by message id in
  the subscription's ``Ledger``. The records of a message carry where they came from
  (``PriceEvent.provenance[:2] == (subscription, "message:<id>")``; ``DeadLetter.origin`` and
  ``.position``; a ``SupersededRevision``'s ``event``).
* ``settle(records)`` is called by the serving-store sinks after a successful write and by the
  streaming deduplication when it drops an exact repeat. It marks those messages done; the
  ledger's thread acknowledges settled ack ids at once, in chunks of ``ACK_CHUNK``.
* The same thread extends the ack deadline of every unsettled message (``modify_ack_deadline``
  to the subscription's own deadline, every third of it), so a slow write (a Bigtable outage
  the sink is retrying through) does not cause redeliveries; a message unsettled for
  ``MAX_LEASE_SECONDS`` is given up (Pub/Sub redelivers it).
* At most ``max_in_flight`` messages are unsettled: the reader pulls nothing while the bound is
  reached. This cannot deadlock the pipeline: the steps between the read and the sinks hold
  elements only until the end of a bundle, a processing-time timer or an event-time timer, and
  the DirectRunner's Pub/Sub watermark is the wall clock, so all of them fire without new input.
* When the pipeline ends or is cancelled, ``close_all()`` stops the threads and gives unsettled
  messages back (ack deadline 0): they are redelivered at once to the next reader. A process that
  dies without that (SIGKILL) gets them back after the subscription's ack deadline.

A message is redelivered, never lost, when the process dies before its write; a redelivered
message is written again (the sinks are idempotent: row keys and explicit cell timestamps) or
dropped by the deduplication as a repeat (and settled there). Ordered subscriptions (the
``prices-streaming`` subscription ``miraikakaku init-gcp`` creates) deliver an ordering key's
next batch only once the previous one is acknowledged, so acknowledging promptly after the write
is what keeps one instrument's stream moving.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
from collections.abc import Iterable
from typing import Any

__all__ = ["ACK_CHUNK", "DEFAULT_MAX_IN_FLIGHT", "MAX_LEASE_SECONDS", "PULL_MAX_MESSAGES",
           "AckAfterWriteReadEvaluator", "Ledger", "close_all", "install_direct_read",
           "ledger", "message_of", "settle", "uninstall_direct_read"]

log = logging.getLogger(__name__)

DEFAULT_MAX_IN_FLIGHT = 5000
"""Unsettled messages (pulled, not yet written or dropped) at which the reader stops pulling."""
PULL_MAX_MESSAGES = 500
"""Messages per pull (one DirectRunner bundle)."""
ACK_CHUNK = 1000
"""Ack ids per ``acknowledge`` / ``modify_ack_deadline`` request (the API takes 2,500 / 512 KB)."""
MAX_LEASE_SECONDS = 3600.0
"""Seconds a message may stay unsettled before its deadline is no longer extended."""
IDLE_PULL_SECONDS = 2.0
"""How long a pull waits for messages when nothing is in flight. The DirectRunner runs every
step on one worker thread, so the pull blocks timers too; with messages in flight the pull
returns at once instead."""
DEFAULT_ACK_DEADLINE_SECONDS = 60
"""Deadline extension used when the subscription's own deadline cannot be read."""

_MESSAGE = "message:"


def message_of(record: object) -> tuple[str, str] | None:
    """``(subscription, message_id)`` a record came from, or None (not from a Pub/Sub message).

    Args:
        record: a ``PriceEvent`` (``provenance[0:2]``), a ``DeadLetter`` (``origin``,
            ``position``) or a ``SupersededRevision`` (its ``event``); anything else is None.
    """
    event = getattr(record, "event", None)  # SupersededRevision
    if event is not None and hasattr(event, "provenance"):
        record = event
    provenance = getattr(record, "provenance", None)
    if provenance is not None:
        origin, position = (tuple(provenance) + ("", ""))[:2]
    else:
        origin = getattr(record, "origin", None)
        position = getattr(record, "position", None)
    if not isinstance(position, str) or not position.startswith(_MESSAGE) or not origin:
        return None
    return str(origin), position[len(_MESSAGE):]


class Ledger:
    """The unsettled messages of one subscription, and the thread that acks and extends them.

    Thread-safe: the reader registers from the DirectRunner's worker thread, sinks settle from
    it too (or from any thread), the ledger's own thread sends the RPCs.

    Args:
        subscription: ``projects/P/subscriptions/S``.
        client: a ``google.cloud.pubsub_v1.SubscriberClient`` (default: a new one, closed by
            ``close``; ``PUBSUB_EMULATOR_HOST`` points it at the emulator).
        max_in_flight: unsettled messages at which ``room`` becomes 0 (>= 1).
        ack_deadline_seconds: the deadline each extension sets, in seconds (10-600). Default:
            the subscription's own ``ack_deadline_seconds``.

    Attributes (counters, for logs and tests): ``registered``, ``settled``, ``acked``,
    ``ack_failures`` (ack ids whose acknowledge request failed: they are redelivered),
    ``extensions`` (``modify_ack_deadline`` requests sent), ``expired`` (messages given up
    after ``MAX_LEASE_SECONDS``).

    Raises:
        ValueError: ``max_in_flight`` < 1.
    """

    def __init__(self, subscription: str, *, client: Any = None,
                 max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
                 ack_deadline_seconds: int | None = None) -> None:
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be >= 1, got {max_in_flight}")
        self.subscription = subscription
        self.max_in_flight = int(max_in_flight)
        self._own_client = client is None
        if client is None:
            from google.cloud import pubsub_v1

            client = pubsub_v1.SubscriberClient()
        self.client = client
        if ack_deadline_seconds is None:
            ack_deadline_seconds = self._subscription_deadline()
        self.ack_deadline_seconds = max(10, min(600, int(ack_deadline_seconds)))
        self._cond = threading.Condition()
        self._in_flight: dict[str, tuple[str, float]] = {}  # message id -> (ack id, pulled at)
        self._to_ack: list[str] = []
        self._closing = False
        self.registered = self.settled = self.acked = 0
        self.ack_failures = self.extensions = self.expired = 0
        self._thread = threading.Thread(target=self._run, name=f"pubsub-ack:{subscription}",
                                        daemon=True)
        self._thread.start()

    def _subscription_deadline(self) -> int:
        from google.api_core import exceptions

        try:
            sub = self.client.get_subscription(request={"subscription": self.subscription},
                                               timeout=30)
            return int(sub.ack_deadline_seconds) or DEFAULT_ACK_DEADLINE_SECONDS
        except exceptions.GoogleAPICallError as e:
            log.warning("cannot read the ack deadline of %s (%s); extending by %d s",
                        self.subscription, e, DEFAULT_ACK_DEADLINE_SECONDS)
            return DEFAULT_ACK_DEADLINE_SECONDS

    # -- reader side ---------------------------------------------------------------------------
    @property
    def in_flight(self) -> int:
        """Messages registered and not yet settled."""
        with self._cond:
            return len(self._in_flight)

    @property
    def room(self) -> int:
        """How many more messages the reader may pull now (0 at the bound)."""
        with self._cond:
            return max(0, self.max_in_flight - len(self._in_flight))

    def register(self, received: Iterable[Any]) -> None:
        """Record pulled messages (``ReceivedMessage``: ``ack_id``, ``message.message_id``).

        A message pulled again (redelivered while still in flight) keeps one entry with the
        newest ack id: only that one acknowledges it.
        """
        now = time.monotonic()
        with self._cond:
            for rm in received:
                mid = rm.message.message_id
                if mid not in self._in_flight:
                    self.registered += 1
                self._in_flight[mid] = (rm.ack_id, now)

    # -- sink side -----------------------------------------------------------------------------
    def settle_ids(self, message_ids: Iterable[str]) -> int:
        """Mark messages done and wake the thread to acknowledge them.

        Returns:
            How many were in flight (unknown or already settled ids are ignored).
        """
        n = 0
        with self._cond:
            for mid in message_ids:
                entry = self._in_flight.pop(mid, None)
                if entry is not None:
                    self._to_ack.append(entry[0])
                    n += 1
            if n:
                self.settled += n
                self._cond.notify_all()
        return n

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until every settled message is acknowledged (or the request failed).

        Returns:
            True when nothing is left to acknowledge within ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._to_ack or self._sending:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.1))
        return True

    # -- lifecycle -----------------------------------------------------------------------------
    def close(self, release: bool = True) -> int:
        """Acknowledge what is settled, stop the thread, give the unsettled messages back.

        Args:
            release: True sets their ack deadline to 0 (redelivered at once); False leaves
                them to expire after the current deadline.

        Returns:
            How many unsettled messages were given back.
        """
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join(timeout=60)
        with self._cond:
            left = [ack for ack, _ in self._in_flight.values()]
            self._in_flight.clear()
        if release and left:
            self._modify(left, 0)
        if self._own_client:
            try:
                self.client.close()
            except Exception:  # noqa: BLE001 - closing a broken channel must not raise
                log.debug("closing the subscriber client failed", exc_info=True)
        return len(left)

    # -- the thread ----------------------------------------------------------------------------
    _sending = False

    def _run(self) -> None:
        interval = self.ack_deadline_seconds / 3.0
        next_extension = time.monotonic() + interval
        while True:
            with self._cond:
                while not self._to_ack and not self._closing:
                    wait = next_extension - time.monotonic()
                    if wait <= 0:
                        break
                    self._cond.wait(wait)
                acks, self._to_ack = self._to_ack, []
                closing = self._closing
                self._sending = bool(acks)
            if acks:
                self._acknowledge(acks)
                with self._cond:
                    self._sending = False
                    self._cond.notify_all()
            if closing:
                return
            if time.monotonic() >= next_extension:
                self._extend()
                next_extension = time.monotonic() + interval

    def _acknowledge(self, ack_ids: list[str]) -> None:
        from google.api_core import exceptions

        for i in range(0, len(ack_ids), ACK_CHUNK):
            chunk = ack_ids[i:i + ACK_CHUNK]
            try:
                self.client.acknowledge(
                    request={"subscription": self.subscription, "ack_ids": chunk}, timeout=60)
                self.acked += len(chunk)
            except exceptions.GoogleAPICallError as e:
                # written already: the redelivery is a repeat the sinks and dedup absorb
                self.ack_failures += len(chunk)
                log.warning("acknowledge on %s failed (%d messages will be redelivered): %s",
                            self.subscription, len(chunk), e)

    def _extend(self) -> None:
        now = time.monotonic()
        with self._cond:
            old = [mid for mid, (_, at) in self._in_flight.items()
                   if now - at > MAX_LEASE_SECONDS]
            for mid in old:
                del self._in_flight[mid]
            self.expired += len(old)
            ack_ids = [ack for ack, _ in self._in_flight.values()]
        if old:
            log.warning("%d messages of %s unsettled for %.0f s: no longer extended (Pub/Sub "
                        "redelivers them)", len(old), self.subscription, MAX_LEASE_SECONDS)
        if ack_ids:
            self._modify(ack_ids, self.ack_deadline_seconds)

    def _modify(self, ack_ids: list[str], seconds: int) -> None:
        from google.api_core import exceptions

        for i in range(0, len(ack_ids), ACK_CHUNK):
            try:
                self.client.modify_ack_deadline(request={
                    "subscription": self.subscription, "ack_ids": ack_ids[i:i + ACK_CHUNK],
                    "ack_deadline_seconds": seconds}, timeout=60)
                self.extensions += 1
            except exceptions.GoogleAPICallError as e:
                # the messages may be redelivered after their deadline: repeats, not losses
                log.warning("modify_ack_deadline(%d s) on %s failed: %s", seconds,
                            self.subscription, e)


_LEDGERS: dict[tuple[int, str], Ledger] = {}  # (owner: one pipeline run, subscription)
_LEDGERS_LOCK = threading.Lock()
_CONFIG: dict[str, int] = {"max_in_flight": DEFAULT_MAX_IN_FLIGHT}


def ledger(subscription: str, owner: int = 0) -> Ledger:
    """The ledger of ``subscription`` for one pipeline run (created on first use, with the
    ``max_in_flight`` of the last ``install_direct_read``).

    Args:
        subscription: ``projects/P/subscriptions/S``.
        owner: identifies the pipeline run (the reader passes ``id()`` of the DirectRunner's
            evaluation context), so that closing one run's ledgers leaves a newer run's alone.
    """
    with _LEDGERS_LOCK:
        led = _LEDGERS.get((owner, subscription))
        if led is None:
            led = _LEDGERS[(owner, subscription)] = Ledger(
                subscription, max_in_flight=_CONFIG["max_in_flight"])
        return led


def settle(records: Iterable[object]) -> int:
    """Mark the messages the given records came from as done; they are acknowledged shortly.

    Safe to call more than once and for any record: records not from a Pub/Sub message
    (``message_of`` is None), messages of a subscription this process does not read, and
    messages already settled are ignored.

    Args:
        records: ``PriceEvent`` (``provenance``), ``DeadLetter`` (``origin``, ``position``) or
            ``SupersededRevision`` (its ``event``) records; others are ignored.

    Returns:
        The number of messages settled by this call.
    """
    if not _LEDGERS:
        return 0
    by_sub: dict[str, list[str]] = {}
    for r in records:
        where = message_of(r)
        if where is not None:
            by_sub.setdefault(where[0], []).append(where[1])
    if not by_sub:
        return 0
    with _LEDGERS_LOCK:
        ledgers = list(_LEDGERS.items())
    n = 0
    for (_, sub), led in ledgers:
        ids = by_sub.get(sub)
        if ids:
            n += led.settle_ids(ids)
    return n


def close_all(release: bool = True, owner: int | None = None) -> int:
    """Close the ledgers of one pipeline run, or of all (the run ended or was cancelled).

    Args:
        release: give unsettled messages back at once (``Ledger.close``).
        owner: the run (``ledger``'s ``owner``); None closes every ledger of the process.

    Returns:
        How many unsettled messages were given back.
    """
    with _LEDGERS_LOCK:
        keys = [k for k in _LEDGERS if owner is None or k[0] == owner]
        ledgers = [_LEDGERS.pop(k) for k in keys]
    return sum(led.close(release=release) for led in ledgers)


atexit.register(close_all)


def _stock_evaluator():
    from apache_beam.runners.direct.transform_evaluator import _PubSubReadEvaluator

    return _PubSubReadEvaluator


class AckAfterWriteReadEvaluator(_stock_evaluator()):  # type: ignore[misc]
    """The DirectRunner's Pub/Sub read without the early acknowledgement (module docstring).

    One evaluator is made per bundle; the client and the ledger outlive it (``ledger``). A pull
    takes at most ``min(PULL_MAX_MESSAGES, ledger.room)`` messages; with messages in flight it
    returns at once (``return_immediately``), otherwise it waits up to ``IDLE_PULL_SECONDS``.
    A failed pull (the service unavailable) yields an empty bundle and is tried again.
    """

    def _read_from_pubsub(self, timestamp_attribute):
        from apache_beam.io.gcp.pubsub import PubsubMessage
        from apache_beam.utils.timestamp import Timestamp
        from google.api_core import exceptions

        led = ledger(self._sub_name, owner=id(self._evaluation_context))
        room = led.room
        if room <= 0:
            time.sleep(0.05)  # the bound: let the pipeline write what is in flight
            return []
        busy = led.in_flight > 0
        request = {"subscription": self._sub_name, "max_messages": min(PULL_MAX_MESSAGES, room)}
        if busy:
            request["return_immediately"] = True
        try:
            response = led.client.pull(request=request, retry=None,
                                       timeout=30 if busy else IDLE_PULL_SECONDS)
        except exceptions.DeadlineExceeded:
            return []
        except (exceptions.ServiceUnavailable, exceptions.InternalServerError,
                exceptions.Aborted, exceptions.Unknown, exceptions.ResourceExhausted) as e:
            log.warning("pull on %s failed (%s); trying again", self._sub_name, e)
            time.sleep(1.0)
            return []
        received = list(response.received_messages)
        if not received:
            if busy:
                time.sleep(0.05)
            return []
        out = []
        for rm in received:
            message = PubsubMessage._from_message(rm.message)
            value = message.attributes.get(timestamp_attribute) if timestamp_attribute else None
            if value is not None:
                try:
                    ts = Timestamp(micros=int(value) * 1000)
                except ValueError:
                    ts = Timestamp.from_rfc3339(value)
            else:
                ts = Timestamp.from_utc_datetime(rm.message.publish_time)
            out.append((ts, message))
        led.register(received)  # after conversion: a message that failed it is redelivered
        return out


def install_direct_read(max_in_flight: int = DEFAULT_MAX_IN_FLIGHT) -> None:
    """Make DirectRunner pipelines started from now on read Pub/Sub with
    ``AckAfterWriteReadEvaluator`` (Beam's registry hook ``_test_evaluators_overrides``; the
    registry copies it when a pipeline starts).

    Args:
        max_in_flight: unsettled messages per subscription at which pulling pauses (>= 1).

    Raises:
        ValueError: ``max_in_flight`` < 1.
    """
    from apache_beam.runners.direct.direct_runner import _DirectReadFromPubSub
    from apache_beam.runners.direct.transform_evaluator import TransformEvaluatorRegistry

    if max_in_flight < 1:
        raise ValueError(f"max_in_flight must be >= 1, got {max_in_flight}")
    _CONFIG["max_in_flight"] = int(max_in_flight)
    with _LEDGERS_LOCK:
        for led in _LEDGERS.values():
            led.max_in_flight = int(max_in_flight)
    TransformEvaluatorRegistry._test_evaluators_overrides[_DirectReadFromPubSub] = \
        AckAfterWriteReadEvaluator


def uninstall_direct_read() -> None:
    """Give Beam's own Pub/Sub read evaluator back (if ``install_direct_read`` replaced it)."""
    from apache_beam.runners.direct.direct_runner import _DirectReadFromPubSub
    from apache_beam.runners.direct.transform_evaluator import TransformEvaluatorRegistry

    overrides = TransformEvaluatorRegistry._test_evaluators_overrides
    if overrides.get(_DirectReadFromPubSub) is AckAfterWriteReadEvaluator:
        del overrides[_DirectReadFromPubSub]
