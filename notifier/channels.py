"""Deliver notifications by email (SMTP) and signed webhooks, with retries and a dead letter.

``deliver_due(db, settings)`` takes the ``deliveries`` rows that are ``pending`` and due
(``next_attempt_at <= now``), claims each one, sends it and records the outcome:

* ``email``: one multipart message (text + escaped HTML, in the user's language) through SMTP
  at ``settings.smtp_host:smtp_port`` from ``settings.smtp_sender``. Its ``Message-ID`` is
  ``<notification-{notification_id}@{sender domain}>`` on every attempt, so a retried email is
  recognisable (mail clients and ``X-MiraiKakaku-Delivery`` show it is the same notification).
* ``webhook``: ``POST`` of a JSON document to ``user.webhook_url`` (``httpx``, 5 s timeout, no
  redirects) with three headers:

  - ``X-MiraiKakaku-Timestamp``: Unix time in seconds when it was signed;
  - ``X-MiraiKakaku-Signature``: ``sha256=<hex HMAC-SHA256 of "{timestamp}.{body}">`` keyed with
    ``user.webhook_secret`` (UTF-8), ``body`` being the raw request body bytes;
  - ``X-MiraiKakaku-Delivery``: the delivery id, the same on every retry (dedupe on it).

Verifying a webhook (the receiver's side, as Stripe's recipe)::

    1. Read the raw body bytes (before any JSON parsing) and the three headers.
    2. Reject when |now - X-MiraiKakaku-Timestamp| > 300 s (a replayed old request).
    3. expected = hex(HMAC_SHA256(key=secret, msg=f"{timestamp}.".encode() + raw_body))
    4. Accept only when hmac.compare_digest("sha256=" + expected, X-MiraiKakaku-Signature).
    5. Drop a request whose X-MiraiKakaku-Delivery you already processed (retries happen).
    6. Answer 2xx quickly; any other answer is retried or dead-lettered (below).

    In Python: ``notifier.channels.verify_signature(secret, timestamp, raw_body, signature)``.

Retry policy (email and webhook alike):

* sent: 2xx answer / SMTP accepted → ``status=sent``, ``delivered_at``.
* transient: connection refused or reset, timeout, HTTP 5xx or 429, SMTP 4xx reply or a
  dropped SMTP connection → ``attempts`` + 1 and ``next_attempt_at = now +
  webhook_backoff_seconds × 2^(attempts-1)`` × a jitter in [0.9, 1.1] (at least a 429's
  ``Retry-After``); after ``webhook_max_attempts`` attempts → ``dead``.
* permanent: HTTP 4xx other than 429 (and 3xx: redirects are not followed), an invalid URL,
  an SMTP 5xx reply, no webhook URL or secret, a deactivated user or email turned off →
  ``dead`` at once.

A ``dead`` row stays in ``deliveries`` with its ``last_error``: the dead letter
(``dead_letters(db)`` lists them, ``requeue(db, ids)`` sends them again).

Concurrency: several notifier processes may call ``deliver_due`` on one database. Each row is
claimed with ``UPDATE deliveries SET attempts = attempts + 1, next_attempt_at = now + lease
WHERE id = :id AND status = 'pending' AND attempts = :seen`` before it is sent: only the process
whose update changed the row sends it. A process that dies after claiming leaves the row
pending; it is tried again when the lease (``CLAIM_LEASE_SECONDS``) runs out. Delivery is
therefore at least once (a crash between sending and recording resends): receivers dedupe on
the delivery id or Message-ID.

Run it: ``miraikakaku notify`` calls ``deliver_due`` in its loop; by hand::

    from notifier.channels import deliver_due
    deliver_due(Database.connect(settings.app_database_url), settings)
    # {'sent': 3, 'retry': 1, 'dead': 0, 'skipped': 0}
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import email.utils
import hashlib
import hmac
import json
import logging
import random
import smtplib
import sys
import time
from collections.abc import Iterable
from email.message import EmailMessage
from typing import Any, TextIO

import httpx
from sqlalchemy import select, update

from miraikakaku.settings import Settings
from notifier.templates import email_footer, format_time, render_email_html
from serving.app.db import Database
from serving.app.models import Delivery, DeliveryStatus, Notification, User, utc, utcnow

__all__ = ["deliver_due", "verify_signature", "sign", "backoff_seconds", "dead_letters",
           "requeue", "DeadLetter", "DeliveryFailed", "CHANNELS", "SIGNATURE_HEADER",
           "TIMESTAMP_HEADER", "DELIVERY_HEADER", "CLAIM_LEASE_SECONDS",
           "add_deadletters_parser", "run_deadletters_command"]

log = logging.getLogger(__name__)

CHANNELS = ("email", "webhook")
SIGNATURE_HEADER = "X-MiraiKakaku-Signature"
TIMESTAMP_HEADER = "X-MiraiKakaku-Timestamp"
DELIVERY_HEADER = "X-MiraiKakaku-Delivery"
WEBHOOK_TIMEOUT_SECONDS = 5.0
SMTP_TIMEOUT_SECONDS = 10.0
CLAIM_LEASE_SECONDS = 300.0
"""A claimed row that was neither sent nor rescheduled (its process died) is due again after
this many seconds."""
MAX_RETRY_AFTER_SECONDS = 3600.0
_ERROR_CHARS = 500


class DeliveryFailed(Exception):
    """A delivery attempt failed.

    Attributes:
        permanent: True when trying again cannot help (dead letter at once).
        retry_after: seconds the receiver asked us to wait (HTTP 429 ``Retry-After``), or None.
    """

    def __init__(self, message: str, *, permanent: bool, retry_after: float | None = None):
        super().__init__(message)
        self.permanent = permanent
        self.retry_after = retry_after


# -- signatures ----------------------------------------------------------------------------------
def _bytes(x: bytes | str) -> bytes:
    return x if isinstance(x, bytes) else x.encode()


def sign(secret: str, timestamp: int | str, body: bytes | str) -> str:
    """The ``X-MiraiKakaku-Signature`` value of ``body`` signed at ``timestamp``.

    Args:
        secret: the user's webhook secret.
        timestamp: Unix seconds (the ``X-MiraiKakaku-Timestamp`` value).
        body: the raw request body.

    Returns:
        ``sha256=<64 hex digits>``.
    """
    mac = hmac.new(_bytes(secret), f"{timestamp}.".encode() + _bytes(body), hashlib.sha256)
    return f"sha256={mac.hexdigest()}"


def verify_signature(secret: str, timestamp: int | str, body: bytes | str, header: str,
                     tolerance_s: float = 300, *, now: float | None = None) -> bool:
    """Whether a webhook request is authentic and fresh (see the module docstring).

    Args:
        secret: the webhook secret shared with MiraiKakaku.
        timestamp: the ``X-MiraiKakaku-Timestamp`` header (Unix seconds).
        body: the raw request body, exactly as received.
        header: the ``X-MiraiKakaku-Signature`` header (``sha256=<hex>``).
        tolerance_s: largest accepted |now - timestamp| in seconds (replay window).
        now: the current Unix time (default: the clock).

    Returns:
        True only when the timestamp is an integer within the tolerance and the signature
        matches (constant-time comparison); False otherwise, never an exception.
    """
    try:
        ts = int(str(timestamp).strip())
    except (TypeError, ValueError):
        return False
    current = time.time() if now is None else now
    if abs(current - ts) > tolerance_s or not secret or not header:
        return False
    return hmac.compare_digest(sign(secret, ts, body).encode(), str(header).strip().encode())


# -- what is sent ----------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class _Job:
    """Everything one attempt needs, copied out of the session (no DB I/O while sending)."""

    delivery_id: int
    channel: str
    attempts: int  # including this attempt
    notification_id: int
    user_id: int
    email: str
    locale: str
    user_active: bool
    email_notifications: bool
    webhook_url: str | None
    webhook_secret: str | None
    kind: str
    instrument_id: str
    title: str
    body: str
    value: float | None
    event_time: dt.datetime
    created_at: dt.datetime
    rule_id: int | None
    payload: dict[str, Any]


def _webhook_body(job: _Job) -> bytes:
    doc = {
        "type": "notification",
        "delivery_id": job.delivery_id,
        "notification_id": job.notification_id,
        "rule_id": job.rule_id,
        "kind": job.kind,
        "instrument_id": job.instrument_id,
        "title": job.title,
        "body": job.body,
        "locale": job.locale,
        "value": job.value,
        "event_time": job.event_time.isoformat(),
        "created_at": job.created_at.isoformat(),
        "attempt": job.attempts,
        "payload": job.payload,
    }
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":"), default=str).encode()


def _message_id(notification_id: int, sender: str) -> str:
    domain = sender.rsplit("@", 1)[-1].strip("<> ") if "@" in sender else "miraikakaku.local"
    return f"<notification-{notification_id}@{domain}>"


def _email(job: _Job, settings: Settings) -> EmailMessage:
    msg = EmailMessage()
    msg["Subject"] = job.title
    msg["From"] = settings.smtp_sender
    msg["To"] = job.email
    msg["Date"] = email.utils.formatdate(usegmt=True)
    msg["Message-ID"] = _message_id(job.notification_id, settings.smtp_sender)
    msg["Auto-Submitted"] = "auto-generated"
    msg["X-MiraiKakaku-Notification"] = str(job.notification_id)
    msg[DELIVERY_HEADER] = str(job.delivery_id)
    footer = email_footer(job.locale)
    msg.set_content(f"{job.body}\n\n-- \n{footer}\n")
    ja = job.locale.startswith("ja")
    context = job.payload.get("context") if isinstance(job.payload.get("context"), dict) else {}
    try:  # the exchange's zone the notifier rendered the body with, when it recorded it
        when = format_time(job.event_time, context.get("timezone"), "ja" if ja else "en")
    except ValueError:
        when = format_time(job.event_time, None, "ja" if ja else "en")
    details = [("銘柄" if ja else "Instrument", job.instrument_id),
               ("日時" if ja else "Time", when)]
    msg.add_alternative(render_email_html(job.title, job.body, job.locale, details),
                        subtype="html")
    msg["Content-Language"] = job.locale  # after add_alternative, which moves Content-* down
    return msg


# -- channels ----------------------------------------------------------------------------------
def _smtp_code_failure(code: int, text: str) -> DeliveryFailed:
    return DeliveryFailed(f"SMTP {code}: {text}"[:_ERROR_CHARS], permanent=500 <= code < 600)


def _send_email(job: _Job, settings: Settings) -> None:
    """Send one notification email.

    Raises:
        DeliveryFailed: permanent for an SMTP 5xx reply or email turned off, else transient.
    """
    if not job.email_notifications:
        raise DeliveryFailed("email notifications are turned off for this user", permanent=True)
    msg = _email(job, settings)
    try:
        with smtplib.SMTP(settings.smtp_host, settings.smtp_port,
                          timeout=SMTP_TIMEOUT_SECONDS) as smtp:
            smtp.send_message(msg)
    except smtplib.SMTPRecipientsRefused as e:
        code, text = max(e.recipients.values(), key=lambda r: r[0])  # any 5xx: permanent
        raise _smtp_code_failure(code, _text(text)) from e
    except smtplib.SMTPResponseException as e:  # sender refused, data error, connect error ...
        raise _smtp_code_failure(e.smtp_code, _text(e.smtp_error)) from e
    except smtplib.SMTPNotSupportedError as e:
        raise DeliveryFailed(f"SMTP: {e}"[:_ERROR_CHARS], permanent=True) from e
    except (smtplib.SMTPException, OSError) as e:  # refused, reset, timeout, disconnected
        raise DeliveryFailed(f"SMTP {type(e).__name__}: {e}"[:_ERROR_CHARS],
                             permanent=False) from e


def _text(x: bytes | str) -> str:
    return x.decode(errors="replace") if isinstance(x, bytes) else str(x)


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:  # an HTTP date
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    return max(0.0, (when - dt.datetime.now(dt.timezone.utc)).total_seconds())


def _post_webhook(job: _Job, client: httpx.Client) -> None:
    """POST one signed notification.

    Raises:
        DeliveryFailed: permanent for a missing/invalid URL or secret and 3xx/4xx answers other
            than 429; transient for connection errors, timeouts, 429 and 5xx.
    """
    if not job.webhook_url:
        raise DeliveryFailed("the user has no webhook URL", permanent=True)
    if not job.webhook_secret:
        raise DeliveryFailed("the user has no webhook secret", permanent=True)
    try:
        url = httpx.URL(job.webhook_url)
    except (httpx.InvalidURL, TypeError, ValueError) as e:
        raise DeliveryFailed(f"invalid webhook URL: {e}", permanent=True) from e
    if url.scheme not in ("http", "https") or not url.host:
        raise DeliveryFailed(f"invalid webhook URL {job.webhook_url!r}: needs http(s)://host",
                             permanent=True)
    body = _webhook_body(job)
    ts = int(time.time())
    headers = {
        "Content-Type": "application/json; charset=utf-8",
        "User-Agent": "MiraiKakaku-Webhooks/1",
        TIMESTAMP_HEADER: str(ts),
        SIGNATURE_HEADER: sign(job.webhook_secret, ts, body),
        DELIVERY_HEADER: str(job.delivery_id),
    }
    try:
        response = client.post(url, content=body, headers=headers,
                               timeout=WEBHOOK_TIMEOUT_SECONDS, follow_redirects=False)
    except (httpx.InvalidURL, httpx.UnsupportedProtocol) as e:
        raise DeliveryFailed(f"invalid webhook URL: {e}", permanent=True) from e
    except httpx.TransportError as e:  # connect/read/write errors and timeouts
        raise DeliveryFailed(f"{type(e).__name__}: {e}"[:_ERROR_CHARS], permanent=False) from e
    code = response.status_code
    if 200 <= code < 300:
        return
    detail = f"HTTP {code}: {response.text[:200]}"
    if code == 429 or code >= 500:
        raise DeliveryFailed(detail, permanent=False, retry_after=_retry_after(response))
    raise DeliveryFailed(detail, permanent=True)


# -- the loop ------------------------------------------------------------------------------------
def backoff_seconds(settings: Settings, attempts: int, rng: random.Random | None = None
                    ) -> float:
    """Delay before the next attempt after ``attempts`` failed attempts (seconds).

    ``webhook_backoff_seconds × 2^(attempts-1)`` times a uniform jitter in [0.9, 1.1].
    """
    r = (rng or random).uniform(0.9, 1.1)
    return settings.webhook_backoff_seconds * 2 ** max(0, attempts - 1) * r


def _claim(db: Database, delivery_id: int, seen: int, now: dt.datetime) -> bool:
    stmt = (update(Delivery)
            .where(Delivery.id == delivery_id, Delivery.status == DeliveryStatus.pending.value,
                   Delivery.attempts == seen)
            .values(attempts=seen + 1,
                    next_attempt_at=now + dt.timedelta(seconds=CLAIM_LEASE_SECONDS))
            .execution_options(synchronize_session=False))
    with db.session() as s:
        return s.execute(stmt).rowcount == 1


def _load(db: Database, delivery_id: int) -> _Job | None:
    with db.session() as s:
        row = s.execute(
            select(Delivery, Notification, User)
            .join(Notification, Delivery.notification_id == Notification.id)
            .join(User, Notification.user_id == User.id)
            .where(Delivery.id == delivery_id)).first()
        if row is None:
            return None
        d, n, u = row
        return _Job(
            delivery_id=d.id, channel=d.channel, attempts=d.attempts, notification_id=n.id,
            user_id=u.id, email=u.email, locale=n.locale or u.locale or "en",
            user_active=bool(u.is_active), email_notifications=bool(u.email_notifications),
            webhook_url=u.webhook_url, webhook_secret=u.webhook_secret, kind=n.kind,
            instrument_id=n.instrument_id, title=n.title, body=n.body, value=n.value,
            event_time=utc(n.event_time), created_at=utc(n.created_at), rule_id=n.rule_id,
            payload=dict(n.payload or {}))


def _record(db: Database, job: _Job, values: dict[str, Any]) -> None:
    stmt = (update(Delivery)
            .where(Delivery.id == job.delivery_id, Delivery.attempts == job.attempts,
                   Delivery.status == DeliveryStatus.pending.value)
            .values(**values).execution_options(synchronize_session=False))
    with db.session() as s:
        if s.execute(stmt).rowcount != 1:
            log.warning("delivery %s changed while it was being sent (lease expired?)",
                        job.delivery_id)


def _attempt(job: _Job, settings: Settings, client: httpx.Client) -> None:
    if not job.user_active:
        raise DeliveryFailed("the user is deactivated", permanent=True)
    if job.channel == "email":
        _send_email(job, settings)
    elif job.channel == "webhook":
        _post_webhook(job, client)
    else:
        raise DeliveryFailed(f"unknown channel {job.channel!r} (expected one of {CHANNELS})",
                             permanent=True)


def deliver_due(db: Database, settings: Settings, *, now: dt.datetime | None = None,
                http: httpx.Client | None = None, limit: int = 100,
                rng: random.Random | None = None) -> dict[str, int]:
    """Send every pending delivery that is due, at most ``limit`` of them.

    Args:
        db: the application database.
        settings: ``smtp_host``, ``smtp_port``, ``smtp_sender``, ``webhook_max_attempts``,
            ``webhook_backoff_seconds``.
        now: the current time, UTC aware (default: the clock): rows with ``next_attempt_at <=
            now`` are due, and retries are scheduled from it.
        http: an ``httpx.Client`` for webhooks (default: a new one, closed on return).
        limit: rows taken in one call (oldest due first).
        rng: random source of the jitter (tests).

    Returns:
        Counts ``{"sent", "retry", "dead", "skipped"}``; ``skipped``: rows another process
        claimed first.
    """
    now = (now or utcnow()).astimezone(dt.timezone.utc)
    counts = {"sent": 0, "retry": 0, "dead": 0, "skipped": 0}
    with db.session() as s:
        due = s.execute(
            select(Delivery.id, Delivery.attempts)
            .where(Delivery.status == DeliveryStatus.pending.value,
                   Delivery.next_attempt_at <= now)
            .order_by(Delivery.next_attempt_at, Delivery.id).limit(limit)).all()
    if not due:
        return counts
    client = http or httpx.Client(timeout=WEBHOOK_TIMEOUT_SECONDS)
    try:
        for delivery_id, seen in due:
            if not _claim(db, delivery_id, seen, now):
                counts["skipped"] += 1
                continue
            job = _load(db, delivery_id)
            if job is None:  # deleted with its user meanwhile
                counts["skipped"] += 1
                continue
            counts[_deliver_one(db, job, settings, client, now, rng)] += 1
    finally:
        if http is None:
            client.close()
    return counts


def _deliver_one(db: Database, job: _Job, settings: Settings, client: httpx.Client,
                 now: dt.datetime, rng: random.Random | None) -> str:
    try:
        _attempt(job, settings, client)
    except DeliveryFailed as e:
        error = f"attempt {job.attempts}: {e}"
        if e.permanent or job.attempts >= settings.webhook_max_attempts:
            if not e.permanent:
                error += f" (gave up after {job.attempts} attempts)"
            _record(db, job, {"status": DeliveryStatus.dead.value, "last_error": error})
            log.warning("delivery %s (%s) dead: %s", job.delivery_id, job.channel, error)
            return "dead"
        delay = backoff_seconds(settings, job.attempts, rng)
        if e.retry_after is not None:
            delay = max(delay, min(e.retry_after, MAX_RETRY_AFTER_SECONDS))
        _record(db, job, {"last_error": error,
                          "next_attempt_at": now + dt.timedelta(seconds=delay)})
        log.info("delivery %s (%s) retry in %.1f s: %s", job.delivery_id, job.channel, delay,
                 error)
        return "retry"
    _record(db, job, {"status": DeliveryStatus.sent.value, "delivered_at": utcnow(),
                      "last_error": None})
    return "sent"


# -- the dead letter -----------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class DeadLetter:
    """A delivery that was given up (``status=dead``)."""

    delivery_id: int
    notification_id: int
    user_id: int
    channel: str
    attempts: int
    last_error: str | None
    title: str
    event_time: dt.datetime


def dead_letters(db: Database, *, user_id: int | None = None, limit: int = 100
                 ) -> list[DeadLetter]:
    """The dead deliveries, newest notification first (``miraikakaku notify deadletters``)."""
    q = (select(Delivery, Notification)
         .join(Notification, Delivery.notification_id == Notification.id)
         .where(Delivery.status == DeliveryStatus.dead.value)
         .order_by(Delivery.id.desc()).limit(limit))
    if user_id is not None:
        q = q.where(Notification.user_id == user_id)
    with db.session() as s:
        return [DeadLetter(d.id, n.id, n.user_id, d.channel, d.attempts, d.last_error, n.title,
                           utc(n.event_time)) for d, n in s.execute(q)]


def requeue(db: Database, delivery_ids: Iterable[int], *, now: dt.datetime | None = None) -> int:
    """Make dead deliveries pending again with a fresh attempt budget; returns how many."""
    ids = list(delivery_ids)
    if not ids:
        return 0
    stmt = (update(Delivery)
            .where(Delivery.id.in_(ids), Delivery.status == DeliveryStatus.dead.value)
            .values(status=DeliveryStatus.pending.value, attempts=0,
                    next_attempt_at=now or utcnow())
            .execution_options(synchronize_session=False))
    with db.session() as s:
        return s.execute(stmt).rowcount


# -- command line --------------------------------------------------------------------------------
def add_deadletters_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``deadletters`` (list or requeue dead deliveries) to a sub-parsers object, e.g. the
    ``miraikakaku notify`` parser's: ``miraikakaku notify deadletters [--requeue ID ...]``."""
    p = subparsers.add_parser(
        "deadletters", help="List email/webhook deliveries that were given up; --requeue "
                            "sends them again.",
        description="Deliveries that failed permanently (HTTP 4xx, SMTP 5xx, invalid URL) or "
                    "transiently MIRAIKAKAKU_WEBHOOK_MAX_ATTEMPTS times stay in the deliveries "
                    "table with status dead and their last error. List them, fix the cause, "
                    "then requeue them (a fresh attempt budget).")
    p.add_argument("--user-id", type=int, default=None, help="Only this user's. Default: all.")
    p.add_argument("--limit", type=int, default=50, help="At most this many. Default: 50.")
    p.add_argument("--requeue", type=int, nargs="+", metavar="DELIVERY_ID", default=None,
                   help="Make these dead deliveries pending again instead of listing.")
    return p


def run_deadletters_command(args: argparse.Namespace, settings: Settings | None = None, *,
                            out: TextIO | None = None) -> int:
    """Run ``deadletters`` with parsed arguments; returns the exit code (1: nothing requeued).

    One line per dead delivery: ``id channel user notification attempts event time, title,
    last error``.
    """
    from miraikakaku.settings import get_settings

    out = out or sys.stdout
    settings = settings or get_settings()
    db = Database.connect(settings.app_database_url)
    try:
        if args.requeue:
            n = requeue(db, args.requeue)
            print(f"requeued {n} of {len(args.requeue)} deliveries", file=out)
            return 0 if n else 1
        rows = dead_letters(db, user_id=args.user_id, limit=args.limit)
        for r in rows:
            print(f"{r.delivery_id}\t{r.channel}\tuser={r.user_id}\t"
                  f"notification={r.notification_id}\tattempts={r.attempts}\t"
                  f"{r.event_time.isoformat()}\t{r.title}\t{r.last_error}", file=out)
        print(f"{len(rows)} dead deliveries", file=out)
        return 0
    finally:
        db.close()
