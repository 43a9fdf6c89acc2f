"""The notifier's event source in Google Cloud mode: Pub/Sub subscriptions, synchronous pull.

``PubSubSource(subscriptions)`` implements ``notifier.sources.EventSource`` over the
subscriptions ``miraikakaku init-gcp`` creates for the notifier (``prices-notify`` on
``prices-validated``, ``predictions-notify`` on ``predictions``, ``alerts-notify`` on ``alerts``;
the pipeline publishes to those topics with ``--prices_topic``, ``--predictions_topic`` and
``--alerts_topic``). Messages carry ``notifier.events`` payloads; the event topic comes from the
``event_topic`` attribute (``transforms.sinks.PublishEvents``) or, for messages without it
(``PublishAlerts``), from the subscription id (``alerts-notify`` → ``alerts``).

Semantics (at least once):

* ``read(n)`` pulls up to ``n`` messages (``SubscriberClient.pull``, a short timeout per
  subscription, round-robin so a busy subscription cannot starve the others) and numbers them
  with increasing local positions. Nothing is acknowledged yet.
* ``commit(position)`` acknowledges every message read up to ``position``: the service calls it
  after the notifications of those events are committed to the application database.
* A message that is read but never committed (the process died, or ``release()``/``close()``
  gave it back) is delivered again by Pub/Sub after its ack deadline (at once after
  ``release``). The notification ``dedup_key`` (``{rule_id}/{event_id}``) makes a redelivery
  harmless, as it makes Pub/Sub's own occasional duplicates harmless.
* Pub/Sub has no offsets: ``seek(position)`` only keeps the local positions increasing past
  the offset the service stored, so its ``ConsumerOffset`` row stays monotonic.
* A message that does not decode can never succeed: it is logged with its id, counted in
  ``skipped`` and acknowledged at once (not retried forever).
* Order: Pub/Sub does not order messages across or (without ordering keys) within a topic;
  an event can arrive after a later one of the same instrument.

Try it against the emulator (``python -m tests.emulators``, then ``miraikakaku init-gcp``)::

    python -m notifier.pubsub_source miraikakaku-local   # pulls, prints, does not acknowledge
"""

from __future__ import annotations

import hashlib
import logging
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from notifier.events import TOPICS, MarketEvent, decode_event

__all__ = ["PubSubSource", "DEFAULT_NOTIFY_SUBSCRIPTIONS"]

log = logging.getLogger(__name__)

DEFAULT_NOTIFY_SUBSCRIPTIONS = ("prices-notify", "predictions-notify", "alerts-notify")
"""Subscription ids the notifier reads (``miraikakaku.resources.NOTIFY_SUBSCRIPTIONS``)."""

_ACK_CHUNK = 1000  # ack ids per acknowledge request (the API takes at most 2,500 / 512 KB)


def _topic_from_subscription_id(sub_id: str) -> str | None:
    for topic in sorted(TOPICS, key=len, reverse=True):
        if sub_id == topic or sub_id.startswith(f"{topic}-"):
            return topic
    return None


class PubSubSource:
    """Reads notifier events from Pub/Sub subscriptions (see the module docstring).

    Args:
        subscriptions: full subscription paths ``projects/P/subscriptions/S``.
        topics: event topic (``prices``, ``predictions``, ``alerts``) per subscription path,
            for messages without an ``event_topic`` attribute. Default: from the subscription
            id (``prices-notify`` → ``prices``).
        subscriber: a ``google.cloud.pubsub_v1.SubscriberClient`` (default: a new one, closed
            by ``close``). ``PUBSUB_EMULATOR_HOST`` points it at the emulator.
        pull_timeout: seconds one pull waits for messages on one subscription.

    Attributes:
        name: the source's key in ``ConsumerOffset.source``: ``pubsub:<P>/<S1>,<S2>,...``.
        skipped: messages that did not decode (acknowledged and dropped, logged).

    Raises:
        ValueError: a path that is not ``projects/P/subscriptions/S``, no subscription, or a
            topic mapping that cannot be derived.
    """

    def __init__(self, subscriptions: Sequence[str], *, topics: Mapping[str, str] | None = None,
                 subscriber: Any = None, pull_timeout: float = 1.0) -> None:
        if not subscriptions:
            raise ValueError("PubSubSource needs at least one subscription")
        self.subscriptions = list(dict.fromkeys(subscriptions))
        self._topics: dict[str, str] = {}
        for path in self.subscriptions:
            parts = path.split("/")
            if len(parts) != 4 or parts[0] != "projects" or parts[2] != "subscriptions":
                raise ValueError(f"not a subscription path (projects/P/subscriptions/S): {path!r}")
            topic = (topics or {}).get(path) or _topic_from_subscription_id(parts[3])
            if topic not in TOPICS:
                raise ValueError(f"cannot tell the event topic of {path}: pass topics="
                                 f"{{path: one of {TOPICS}}}")
            self._topics[path] = topic
        projects = sorted({p.split("/")[1] for p in self.subscriptions})
        ids = ",".join(p.split("/")[3] for p in self.subscriptions)
        name = f"pubsub:{'+'.join(projects)}/{ids}"
        if len(name) > 200:  # ConsumerOffset.source is String(200)
            name = name[:183] + "#" + hashlib.sha256(name.encode()).hexdigest()[:16]
        self.name = name
        self.pull_timeout = pull_timeout
        self.skipped = 0
        self._own_client = subscriber is None
        if subscriber is None:
            from google.cloud import pubsub_v1

            subscriber = pubsub_v1.SubscriberClient()
        self._client = subscriber
        self._next = 1
        self._pending: dict[int, tuple[str, str]] = {}  # position -> (subscription, ack id)
        self._rr = 0

    @classmethod
    def for_project(cls, project: str,
                    subscription_ids: Sequence[str] = DEFAULT_NOTIFY_SUBSCRIPTIONS,
                    **kwargs: Any) -> PubSubSource:
        """The source over ``projects/{project}/subscriptions/{id}`` for each id."""
        return cls([f"projects/{project}/subscriptions/{s}" for s in subscription_ids], **kwargs)

    # -- EventSource ---------------------------------------------------------------------------
    def seek(self, position: int) -> None:
        """Keep the next positions above ``position`` (Pub/Sub itself has no offsets)."""
        self._next = max(self._next, int(position) + 1)

    def read(self, max_events: int) -> list[tuple[int, MarketEvent]]:
        """Pull up to ``max_events`` messages; ``[(position, event)]`` with increasing
        positions. Returns an empty list when nothing is waiting (after at most
        ``pull_timeout`` seconds per subscription).

        Raises:
            google.api_core.exceptions.NotFound: a subscription does not exist.
            google.api_core.exceptions.PermissionDenied: no ``pubsub.subscriptions.consume``.
        """
        from google.api_core import exceptions

        out: list[tuple[int, MarketEvent]] = []
        n = len(self.subscriptions)
        order = [self.subscriptions[(self._rr + i) % n] for i in range(n)]
        self._rr = (self._rr + 1) % n
        for sub in order:
            want = max_events - len(out)
            if want <= 0:
                break
            try:
                response = self._client.pull(
                    request={"subscription": sub, "max_messages": want},
                    timeout=self.pull_timeout, retry=None)
            except exceptions.DeadlineExceeded:
                continue  # nothing waiting
            except (exceptions.ServiceUnavailable, exceptions.InternalServerError,
                    exceptions.Aborted, exceptions.Unknown) as e:
                log.warning("pull %s failed (%s); trying again next read", sub, e)
                continue
            bad: list[str] = []
            for received in response.received_messages:
                message = received.message
                topic = message.attributes.get("event_topic") or self._topics[sub]
                try:
                    event = decode_event(topic, message.data)
                except ValueError as e:
                    self.skipped += 1
                    bad.append(received.ack_id)
                    log.warning("%s message %s: undecodable %s event, acknowledged and dropped: "
                                "%s; payload %r", sub, message.message_id, topic, e,
                                bytes(message.data[:200]))
                    continue
                position = self._next
                self._next += 1
                self._pending[position] = (sub, received.ack_id)
                out.append((position, event))
            if bad:
                self._acknowledge(sub, bad)
        return out

    def commit(self, position: int) -> None:
        """Acknowledge every message read up to ``position`` (its events are processed)."""
        done = [p for p in self._pending if p <= position]
        by_sub: dict[str, list[str]] = {}
        for p in done:
            sub, ack_id = self._pending.pop(p)
            by_sub.setdefault(sub, []).append(ack_id)
        for sub, ack_ids in by_sub.items():
            self._acknowledge(sub, ack_ids)

    # -- extras --------------------------------------------------------------------------------
    @property
    def uncommitted(self) -> int:
        """Messages read but not yet acknowledged."""
        return len(self._pending)

    def release(self) -> int:
        """Give every uncommitted message back for immediate redelivery (ack deadline 0);
        returns how many."""
        by_sub: dict[str, list[str]] = {}
        for sub, ack_id in self._pending.values():
            by_sub.setdefault(sub, []).append(ack_id)
        n = len(self._pending)
        self._pending.clear()
        from google.api_core import exceptions

        for sub, ack_ids in by_sub.items():
            for i in range(0, len(ack_ids), _ACK_CHUNK):
                try:
                    self._client.modify_ack_deadline(request={
                        "subscription": sub, "ack_ids": ack_ids[i:i + _ACK_CHUNK],
                        "ack_deadline_seconds": 0})
                except exceptions.GoogleAPICallError as e:  # redelivered after the deadline
                    log.warning("release on %s failed: %s", sub, e)
        return n

    def close(self) -> None:
        """Release uncommitted messages and close the client (if this source made it)."""
        self.release()
        if self._own_client:
            self._client.close()

    def _acknowledge(self, sub: str, ack_ids: list[str]) -> None:
        from google.api_core import exceptions

        for i in range(0, len(ack_ids), _ACK_CHUNK):
            try:
                self._client.acknowledge(
                    request={"subscription": sub, "ack_ids": ack_ids[i:i + _ACK_CHUNK]})
            except exceptions.GoogleAPICallError as e:
                # the messages come again after their deadline; the dedup key absorbs them
                log.warning("acknowledge on %s failed (%d messages will be redelivered): %s",
                            sub, len(ack_ids[i:i + _ACK_CHUNK]), e)


if __name__ == "__main__":  # pragma: no cover - demo
    src = PubSubSource.for_project(sys.argv[1] if len(sys.argv) > 1 else "miraikakaku-local")
    try:
        for pos, ev in src.read(20):
            print(pos, ev.type, ev.event_id, ev.event_time.isoformat())
    finally:
        src.close()  # nothing acknowledged: the messages stay for the notifier
