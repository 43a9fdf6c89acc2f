"""Inspect, fix and redrive dead letters: ``miraikakaku deadletters list|replay``.

Where dead letters are:

* embedded mode: the store's ``dead_letters`` table (``list --store``); fix the source file and
  run it again (the sinks are idempotent, so already stored rows are not duplicated);
* streaming mode: the dead-letter topic (``--dead_letter_topic`` of the pipeline); ``list
  --subscription`` pulls them without acknowledging (they stay for the next reader) and
  ``--export`` writes them as JSON lines to edit. ``replay FILE --topic`` publishes each fixed
  record's message again — the original data and attributes for messages the parser rejected,
  the event JSON for events validation blocked — and, with ``--ack-subscription``, acknowledges
  the replayed originals on the dead-letter subscription so they are not redriven twice.

Each exported line is the dead letter as the pipeline wrote it: ``dead_letter_id``, ``step``,
``reason``, ``detail``, ``payload``, ``origin``, ``event_time``, ``position`` (``line:<n>``,
``row:<n>`` or ``message:<id>``: where in ``origin`` the record was).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from pathlib import Path

__all__ = ["pull_dead_letters", "replay_records", "message_for", "add_parser", "run_command"]


def pull_dead_letters(subscription: str, *, limit: int = 1000, ack: bool = False
                      ) -> list[tuple[str, dict]]:
    """Pull up to ``limit`` dead letters from a subscription.

    Returns:
        ``(ack_id, record)`` pairs; unless ``ack``, the messages are released at once
        (ack deadline 0), so they stay on the subscription.
    """
    from google.cloud import pubsub_v1

    client = pubsub_v1.SubscriberClient()
    out: list[tuple[str, dict]] = []
    try:
        while len(out) < limit:
            resp = client.pull(subscription=subscription,
                               max_messages=min(100, limit - len(out)), timeout=10)
            if not resp.received_messages:
                break
            ids = [m.ack_id for m in resp.received_messages]
            out += [(m.ack_id, json.loads(m.message.data)) for m in resp.received_messages]
            if ack:
                client.acknowledge(subscription=subscription, ack_ids=ids)
            else:
                client.modify_ack_deadline(subscription=subscription, ack_ids=ids,
                                           ack_deadline_seconds=0)
    finally:
        client.close()
    return out


def message_for(record: dict) -> tuple[bytes, dict[str, str]]:
    """The message to publish again for a (fixed) dead-letter record.

    Raises:
        ValueError: when the payload is neither a message envelope nor a PriceEvent.
    """
    payload = record["payload"]
    try:
        envelope = json.loads(payload)
    except json.JSONDecodeError:
        raise ValueError(f"dead letter {record.get('dead_letter_id')}: payload is not JSON; "
                         "fix it in the export file") from None
    if isinstance(envelope, dict) and set(envelope) == {"data", "attributes"}:
        return envelope["data"].encode(), {k: str(v) for k, v in envelope["attributes"].items()}
    from miraikakaku.schema import PriceEvent

    event = PriceEvent.from_json(payload)
    t = event.event_time
    return payload.encode(), {
        "event_id": event.event_id, "symbol": event.symbol, "instrument_id": event.instrument_id,
        "event_time": t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"}


def replay_records(records: Iterable[dict], topic: str, *, ack_subscription: str | None = None
                   ) -> tuple[int, list[str]]:
    """Publish fixed dead letters to ``topic``; optionally ack the originals.

    Returns:
        (messages published, dead-letter ids that could not be replayed).
    """
    from google.cloud import pubsub_v1

    publisher = pubsub_v1.PublisherClient()
    published, failed, done = 0, [], set()
    futures = []
    for record in records:
        try:
            data, attrs = message_for(record)
        except (ValueError, KeyError) as e:
            failed.append(f"{record.get('dead_letter_id')}: {e}")
            continue
        futures.append((record.get("dead_letter_id"), publisher.publish(topic, data, **attrs)))
    for dl_id, fut in futures:
        try:
            fut.result(timeout=60)
            published += 1
            done.add(dl_id)
        except Exception as e:  # noqa: BLE001 - reported, not dropped
            failed.append(f"{dl_id}: {e}")
    if ack_subscription and done:
        _ack_replayed(ack_subscription, done)
    return published, failed


def _ack_replayed(subscription: str, replayed: set[str]) -> None:
    """Acknowledge the replayed originals on the dead-letter subscription; release the rest."""
    from google.cloud import pubsub_v1

    client = pubsub_v1.SubscriberClient()
    try:
        while True:
            resp = client.pull(subscription=subscription, max_messages=100, timeout=10)
            if not resp.received_messages:
                return
            ack, release = [], []
            for m in resp.received_messages:
                dl_id = json.loads(m.message.data).get("dead_letter_id")
                (ack if dl_id in replayed else release).append(m.ack_id)
            if ack:
                client.acknowledge(subscription=subscription, ack_ids=ack)
            if release:
                client.modify_ack_deadline(subscription=subscription, ack_ids=release,
                                           ack_deadline_seconds=0)
            if not ack:
                return
    finally:
        client.close()


def add_parser(subparsers) -> None:
    """Add ``deadletters list`` and ``deadletters replay`` to the CLI."""
    p = subparsers.add_parser("deadletters", help="Inspect, export and redrive dead letters.",
                              description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="action", required=True)
    ls = sub.add_parser("list", help="List dead letters (store or dead-letter subscription).")
    ls.add_argument("--store", default=None,
                    help="Embedded store (SQLite). Default: $MIRAIKAKAKU_DATA_DIR/serving.db.")
    ls.add_argument("--subscription", default=None,
                    help="Dead-letter subscription (projects/P/subscriptions/S); read without "
                         "acknowledging.")
    ls.add_argument("--reason", default=None, help="Only this reason.")
    ls.add_argument("--limit", type=int, default=100, help="At most this many. Default: 100.")
    ls.add_argument("--export", default=None, help="Also write them as JSON lines to this file.")
    rp = sub.add_parser("replay", help="Publish fixed dead letters (a JSON-lines export) again.")
    rp.add_argument("file", help="JSON-lines file from `deadletters list --export`, fixed.")
    rp.add_argument("--topic", required=True, help="Topic to publish to (projects/P/topics/T).")
    rp.add_argument("--ack-subscription", default=None,
                    help="Dead-letter subscription whose replayed originals to acknowledge.")


def run_command(args: argparse.Namespace) -> int:
    """Run ``deadletters list|replay``; returns the exit code."""
    if args.action == "list":
        if args.subscription:
            records = [r for _, r in pull_dead_letters(args.subscription, limit=args.limit)]
        else:
            from miraikakaku.settings import get_settings
            from stores.sqlite import SqliteServingStore

            store = SqliteServingStore(args.store or get_settings().store_path, read_only=True)
            records = [{"dead_letter_id": d.dead_letter_id, "step": d.step, "reason": d.reason,
                        "detail": d.detail, "payload": d.payload, "origin": d.origin,
                        "event_time": d.event_time.isoformat() if d.event_time else None,
                        "position": d.position}
                       for d in store.get_dead_letters(reason=args.reason, limit=args.limit)]
        if args.reason:
            records = [r for r in records if r.get("reason") == args.reason]
        for r in records:
            print(f"{r['step']:<16} {r['reason']:<20} {r['detail'][:60]:<60} "
                  f"{r['payload'][:60]}")
        print(f"{len(records)} dead letters", file=sys.stderr)
        if args.export:
            Path(args.export).write_text("".join(json.dumps(r) + "\n" for r in records))
        return 0
    records = [json.loads(line) for line in Path(args.file).read_text().splitlines() if line]
    published, failed = replay_records(records, args.topic,
                                       ack_subscription=args.ack_subscription)
    print(f"replayed {published} of {len(records)}")
    for f in failed:
        print(f"  not replayed: {f}", file=sys.stderr)
    return 1 if failed else 0
