"""The notification service: events in, users' notifications (and pending deliveries) out.

``run_notifier`` (``miraikakaku notify``) loops:

1. reload the enabled alert rules when they changed (``notifier.rules.RuleBook``);
2. read up to ``batch_size`` events after the stored ``ConsumerOffset`` (consumer ``notifier``,
   source ``outbox:<store path>`` for the SQLite outbox; ``notifier.sources``);
3. match them (``notifier.rules.RuleMatcher``: bar history warmed from the serving store,
   per-rule cooldown in event time);
4. in ONE transaction of the application database: insert a ``Notification`` per match (title
   and body in the user's locale, ``notifier.templates.render``; ``dedup_key =
   {rule_id}/{event_id}``, a conflict is ignored so a replayed event notifies once), a pending
   ``Delivery`` per external channel of the rule (``email`` when the user has email
   notifications on, ``webhook`` when the user has a webhook URL), the rules' ``last_fired_at``
   and the new offset;
5. acknowledge the source and send due deliveries (``notifier.channels.deliver_due``).

Run it::

    miraikakaku notify --once          # drain what is waiting, print a summary, exit
    miraikakaku notify                 # keep polling (every settings.notify_poll_seconds)
    miraikakaku notify --from-start    # re-read the outbox from its first message
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from miraikakaku.settings import Settings
from notifier.rules import (
    BarHistory,
    Match,
    RuleBook,
    RuleMatcher,
    save_last_fired,
    store_bar_loader,
)
from notifier.sources import EventSource, OutboxSource
from serving.app.db import Database
from serving.app.models import (
    AlertRule,
    ConsumerOffset,
    Delivery,
    Notification,
    User,
    utcnow,
)

__all__ = ["CONSUMER", "NotifySummary", "Notifier", "run_notifier", "notification_context",
           "insert_notification", "read_offset", "add_notify_parser", "run_notify_command"]

log = logging.getLogger(__name__)

CONSUMER = "notifier"
"""``ConsumerOffset.consumer`` of this service."""

EXTERNAL_CHANNELS = ("email", "webhook")


@dataclasses.dataclass
class NotifySummary:
    """What a run did.

    Attributes:
        events: events read per topic.
        matched: rule matches (after cooldown).
        notified: notifications inserted.
        duplicates: matches whose notification already existed (a replay).
        deliveries: pending deliveries created.
        sent: deliveries sent by ``deliver_due`` (0 when the channels module is missing).
        batches: transactions committed.
        position: the stored offset at the end.
        rule_reloads: times the rules were (re)loaded.
        seconds: wall time.
    """

    events: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    matched: int = 0
    notified: int = 0
    duplicates: int = 0
    deliveries: int = 0
    sent: int = 0
    batches: int = 0
    position: int = 0
    rule_reloads: int = 0
    seconds: float = 0.0

    def line(self) -> str:
        """One-line human summary."""
        topics = ", ".join(f"{k} {v}" for k, v in sorted(self.events.items())) or "none"
        return (f"events read: {topics}; matched {self.matched}, notified {self.notified} "
                f"({self.duplicates} already notified), deliveries {self.deliveries}, "
                f"sent {self.sent}; offset {self.position}; {self.seconds:.1f}s")


def _render(kind: str, locale: str, context: dict[str, Any]) -> tuple[str, str]:
    try:
        from notifier.templates import render
    except ModuleNotFoundError as e:  # pragma: no cover - only while templates are missing
        if e.name != "notifier.templates":
            raise
        title = f"{context.get('symbol')}: {kind} ({context.get('value')})"
        return title, title
    return render(kind, locale, context)


def notification_context(match: Match, *, symbol: str | None = None,
                         currency: str | None = None,
                         timezone: str | None = None) -> dict[str, Any]:
    """The template context of a match (see ``notifier.templates`` for the keys).

    Args:
        match: the match.
        symbol, currency, timezone: the instrument's ticker, quote currency and IANA zone
            (from the serving store; the event's own values win when it has them).
    """
    e, r = match.event, match.rule
    c: dict[str, Any] = {
        "symbol": e.symbol or symbol or e.instrument_id.split(":")[-1],
        "instrument_id": e.instrument_id, "currency": e.currency or currency or "",
        "timezone": timezone, "event_time": e.event_time, "session_date": e.session_date,
        "rule_name": r.name, "value": match.value, **match.context}
    if r.kind == "pct_move":
        c["price"] = e.feature_price
    elif r.kind == "volume_spike":
        c["threshold"] = c.get("multiplier")
        c["average"] = c.get("mean_volume")
    elif r.kind == "predicted_move":
        c.update(value=math.expm1(match.value), predicted_log_return=e.predicted_log_return,
                 target_date=e.target_date, predicted_price=e.predicted_price,
                 base_price=e.base_price)
    elif r.kind == "market_alert":
        c.update(alert_kind=e.alert_kind, message=e.alert_message, level=e.alert_threshold)
    return c


def _jsonable(value: Any) -> Any:
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def insert_notification(session: Session, values: dict[str, Any]) -> int | None:
    """Insert a ``Notification`` unless the user already has its ``dedup_key``.

    ``INSERT ... ON CONFLICT (user_id, dedup_key) DO NOTHING RETURNING id`` on SQLite and
    PostgreSQL alike.

    Returns:
        The new row's id, or None when it already existed.
    """
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    stmt = insert(Notification).values(**values).on_conflict_do_nothing(
        index_elements=["user_id", "dedup_key"]).returning(Notification.id)
    return session.execute(stmt).scalar_one_or_none()


class Notifier:
    """One notifier: a source, the rules, the application database.

    Args:
        db: the application database.
        settings: ``notify_poll_seconds`` (rule reload period), channel settings.
        source: where events come from (default: the outbox of ``settings.store_path``).
        store: the serving store for bar warm-up and instrument lookups (default: open
            ``settings.store_path`` read-only when it exists).
        batch_size: events per transaction.
        deliver: send due deliveries after each batch (``notifier.channels.deliver_due``).
    """

    def __init__(self, db: Database, settings: Settings, *, source: EventSource | None = None,
                 store: Any = None, batch_size: int = 500, deliver: bool = True) -> None:
        self.db = db
        self.settings = settings
        self.source = source if source is not None else OutboxSource(settings.store_path)
        self._store = store
        self.batch_size = batch_size
        self.deliver = deliver
        self.book = RuleBook(poll_seconds=settings.notify_poll_seconds)
        self.matcher = RuleMatcher(self.book, BarHistory(self._load_bars))
        self.summary = NotifySummary()
        self._instruments: dict[str, Any] = {}
        self._pending_deliveries = 0

    # -- serving store lookups ---------------------------------------------------------------
    def _serving_store(self) -> Any:
        if self._store is None and self.settings.store_path.exists():
            from stores.sqlite import SqliteServingStore

            self._store = SqliteServingStore(self.settings.store_path, read_only=True)
        return self._store

    def _load_bars(self, instrument_id: str, source: str, before: dt.date, n: int) -> list:
        store = self._serving_store()
        return list(store_bar_loader(store)(instrument_id, source, before, n)) if store else []

    def _instrument(self, instrument_id: str) -> Any:
        if instrument_id not in self._instruments:
            store = self._serving_store()
            self._instruments[instrument_id] = (
                store.get_instrument(instrument_id) if store is not None else None)
        return self._instruments[instrument_id]

    # -- offsets -----------------------------------------------------------------------------
    def stored_position(self, session: Session) -> int:
        """The committed offset of this consumer and source (0 when none)."""
        row = session.get(ConsumerOffset, (CONSUMER, self.source.name))
        return row.position if row is not None else 0

    def _store_position(self, session: Session, position: int) -> None:
        row = session.get(ConsumerOffset, (CONSUMER, self.source.name))
        if row is None:
            session.add(ConsumerOffset(consumer=CONSUMER, source=self.source.name,
                                       position=position))
        else:
            row.position = position
            row.updated_at = utcnow()

    def start(self, *, from_start: bool = False) -> int:
        """Load the rules and position the source after the stored offset (or at 0).

        Returns:
            The position reading continues after.
        """
        with self.db.session() as s:
            self.book.refresh(s, force=True)
            position = 0 if from_start else self.stored_position(s)
        self.source.seek(position)
        self.summary.position = position
        self.summary.rule_reloads = self.book.reloads
        log.info("notifier: %s from position %d, %d rules", self.source.name, position,
                 len(self.book))
        return position

    # -- one batch ---------------------------------------------------------------------------
    def step(self) -> int:
        """Process one batch (rules refreshed first); returns the number of events read.

        On an error the batch is undone: the source goes back to the last committed position
        and the rules' in-memory cooldowns to what they were, then the error propagates.
        """
        with self.db.session() as s:
            self.book.refresh(s)
        self.summary.rule_reloads = self.book.reloads
        batch = self.source.read(self.batch_size)
        if not batch:
            if self.deliver:  # retries fall due while no events arrive
                self.summary.sent += self._deliver()
            return 0
        cooldowns = {r.id: r.last_fired_at for r in self.book.rules()}
        try:
            return self._process(batch)
        except BaseException:
            self.source.seek(self.summary.position)
            for r in self.book.rules():
                if r.id in cooldowns:
                    r.last_fired_at = cooldowns[r.id]
            raise

    def _process(self, batch: list[tuple[int, Any]]) -> int:
        matches: list[Match] = []
        topics: collections.Counter = collections.Counter()
        for _, event in batch:
            topics[event.topic] += 1
            ms = self.matcher.match(event)
            self.matcher.fired(ms)  # the cooldown applies to later events of the batch too
            matches.extend(ms)
        position = batch[-1][0]
        fired: list[Match] = []
        counts: collections.Counter = collections.Counter()
        self._pending_deliveries = 0
        with self.db.session() as s:
            for m in matches:
                outcome = self._notify(s, m)
                counts[outcome] += 1
                if outcome == "notified":
                    fired.append(m)
            save_last_fired(s, {m.rule.id: m.rule for m in matches}.values())
            self._store_position(s, position)
        self.source.commit(position)
        sm = self.summary
        sm.events.update(topics)
        sm.matched += len(matches)
        sm.notified += counts["notified"]
        sm.duplicates += counts["duplicate"]
        sm.deliveries += self._pending_deliveries
        self._pending_deliveries = 0
        sm.batches += 1
        sm.position = position
        if self.deliver:  # new deliveries and retries that fell due
            sm.sent += self._deliver()
        return len(batch)

    def _notify(self, s: Session, m: Match) -> str:
        """Write the notification of one match; returns ``notified``, ``duplicate`` or
        ``skipped`` (rule deleted or disabled since the last reload, user inactive)."""
        # Lock the rule row (PostgreSQL): a concurrent delete waits for this transaction, so
        # the notification's rule_id never points at a deleted rule.
        rule = s.get(AlertRule, m.rule.id, with_for_update=True)
        if rule is None or not rule.enabled:
            return "skipped"
        user = s.get(User, m.rule.user_id)
        if user is None or not user.is_active:
            return "skipped"
        inst = self._instrument(m.event.instrument_id)
        context = notification_context(
            m, symbol=getattr(inst, "symbol", None), currency=getattr(inst, "currency", None),
            timezone=getattr(inst, "timezone", None))
        locale = user.locale or "en"
        title, body = _render(m.rule.kind, locale, context)
        payload = {k: _jsonable(v) for k, v in dataclasses.asdict(m.event).items()
                   if v is not None}
        payload.update(rule_id=m.rule.id, rule_kind=m.rule.kind,
                       context={k: _jsonable(v) for k, v in context.items()
                                if isinstance(v, (str, int, float, dt.date)) or v is None})
        nid = insert_notification(s, {
            "user_id": user.id, "rule_id": m.rule.id, "dedup_key": m.dedup_key,
            "instrument_id": m.event.instrument_id, "kind": m.rule.kind, "title": title[:300],
            "body": body, "locale": locale, "value": _jsonable(float(m.value)),
            "event_time": m.event.event_time, "payload": payload})
        if nid is None:
            return "duplicate"
        channels = set(m.rule.channels)
        for channel in EXTERNAL_CHANNELS:
            wanted = channel in channels and (
                user.email_notifications if channel == "email" else bool(user.webhook_url))
            if wanted:
                s.add(Delivery(notification_id=nid, channel=channel))
                self._pending_deliveries += 1
        return "notified"

    def _deliver(self) -> int:
        try:
            from notifier.channels import deliver_due
        except ModuleNotFoundError as e:  # pragma: no cover - while channels are missing
            if e.name != "notifier.channels":
                raise
            return 0
        try:
            counts = deliver_due(self.db, self.settings)
        except Exception:  # a channel failure must not stop notifications
            log.exception("deliver_due failed; deliveries stay pending")
            return 0
        return int(counts.get("sent", 0)) if isinstance(counts, dict) else 0

    def drain(self) -> int:
        """Process batches until the source has nothing waiting; returns events read."""
        total = 0
        while n := self.step():
            total += n
        return total


def run_notifier(settings: Settings, *, once: bool = False, from_start: bool = False,
                 poll_seconds: float | None = None, source: EventSource | None = None,
                 db: Database | None = None, store: Any = None,
                 stop: threading.Event | None = None, batch_size: int = 500,
                 deliver: bool = True,
                 progress: Callable[[NotifySummary], None] | None = None) -> NotifySummary:
    """Run the notifier until drained (``once``) or until ``stop`` is set.

    Args:
        settings: application settings (``app_database_url``, ``store_path``,
            ``notify_poll_seconds``, channel settings).
        once: drain what is waiting and return.
        from_start: read the source from its first event instead of the stored offset
            (notifications already sent are not repeated: ``dedup_key``).
        poll_seconds: sleep between empty polls (default ``settings.notify_poll_seconds``).
        source, db, store: override the outbox source, the application database and the
            serving store (tests).
        stop: set it to end a continuous run (Ctrl-C also ends it).
        batch_size: events per transaction.
        deliver: send due deliveries after each batch (False: leave them pending).
        progress: called with the running summary after each non-empty batch.

    Returns:
        The summary.
    """
    t0 = time.perf_counter()
    own_db = db is None
    db = db if db is not None else Database.connect(settings.app_database_url)
    poll = settings.notify_poll_seconds if poll_seconds is None else poll_seconds
    notifier = Notifier(db, settings, source=source, store=store, batch_size=batch_size,
                        deliver=deliver)
    try:
        notifier.start(from_start=from_start)
        while stop is None or not stop.is_set():
            n = notifier.step()
            if n and progress is not None:
                notifier.summary.seconds = time.perf_counter() - t0
                progress(notifier.summary)
            if n:
                continue
            if once:
                break
            if stop is not None:
                stop.wait(poll)
            else:
                time.sleep(poll)
    except KeyboardInterrupt:
        log.info("notifier: interrupted")
    finally:
        notifier.summary.seconds = time.perf_counter() - t0
        close = getattr(notifier.source, "close", None)
        if close is not None and source is None:
            close()
        if own_db:
            db.close()
    return notifier.summary


def read_offset(db: Database, source_name: str) -> int:
    """The stored offset of the notifier on ``source_name`` (0 when none)."""
    with db.session() as s:
        row = s.scalar(select(ConsumerOffset.position).where(
            ConsumerOffset.consumer == CONSUMER, ConsumerOffset.source == source_name))
    return int(row or 0)


def add_notify_parser(sub: Any) -> None:
    """Add the ``notify`` subcommand to the ``miraikakaku`` argument parser."""
    p = sub.add_parser(
        "notify", help="Run the notification service (users' alert rules -> inbox, email, "
                       "webhooks).",
        description="Read price, prediction and alert events from the serving store's outbox "
                    "after the stored offset, match the users' alert rules, write "
                    "notifications (and pending email/webhook deliveries) and send due "
                    "deliveries. Rules changed through the API apply without a restart.")
    p.add_argument("--once", action="store_true",
                   help="Drain the events waiting now, print a summary and exit.")
    p.add_argument("--from-start", action="store_true",
                   help="Read the outbox from its first event instead of the stored offset "
                        "(already-notified events are not notified again).")
    p.add_argument("--poll-seconds", type=float, default=None,
                   help="Sleep between empty polls. Default: MIRAIKAKAKU_NOTIFY_POLL_SECONDS "
                        "(1.0).")
    p.add_argument("--batch-size", type=int, default=500,
                   help="Events per transaction. Default: 500.")
    p.add_argument("--no-progress", dest="progress", action="store_false",
                   help="No progress lines (by default one every 2 s while events flow).")
    p.add_argument("--pubsub-project", default=None, metavar="PROJECT",
                   help="Google Cloud mode: read the prices-notify, predictions-notify and "
                        "alerts-notify subscriptions of PROJECT (created by `miraikakaku "
                        "init-gcp`; PUBSUB_EMULATOR_HOST is honoured) instead of the outbox.")
    from notifier.channels import add_deadletters_parser

    add_deadletters_parser(p.add_subparsers(dest="notify_action"))


def run_notify_command(args: Any) -> int:
    """Run ``miraikakaku notify`` with parsed arguments; returns the exit code."""
    from rich.console import Console

    from miraikakaku.settings import get_settings

    if getattr(args, "notify_action", None) == "deadletters":
        from notifier.channels import run_deadletters_command

        return run_deadletters_command(args)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    console = Console(stderr=True)
    settings = get_settings()
    source = None
    if args.pubsub_project:
        from notifier.pubsub_source import PubSubSource

        source = PubSubSource.for_project(args.pubsub_project)
    where = (f"Pub/Sub project {args.pubsub_project}" if source is not None
             else f"outbox {settings.store_path}")
    console.print(f"notifier: {where} -> {settings.app_database_url}"
                  f"{' (from the start)' if args.from_start else ''}")

    last = [0.0]

    def progress(s: NotifySummary) -> None:  # at most one line every 2 s
        if args.progress and time.monotonic() - last[0] >= 2.0:
            last[0] = time.monotonic()
            console.print(f"  {s.line()}", soft_wrap=True)

    try:
        summary = run_notifier(settings, once=args.once, from_start=args.from_start,
                               poll_seconds=args.poll_seconds, batch_size=args.batch_size,
                               progress=progress, source=source)
    finally:
        if source is not None:
            source.close()
    console.print(f"[bold]done[/bold]: {summary.line()}", soft_wrap=True)
    return 0
