"""Email and webhook delivery (notifier/channels.py) against real servers, on SQLite and
PostgreSQL: an aiosmtpd SMTP server and a local HTTP webhook receiver (``http.server`` in a
thread) started by the fixtures. Rows are created with the SQLAlchemy models.

Run: ``.venv/bin/python -m pytest -q tests/integration/test_notifier_channels.py``
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import email
import email.policy
import io
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import select

from miraikakaku.settings import Settings
from notifier.channels import (
    DELIVERY_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    _claim,
    add_deadletters_parser,
    dead_letters,
    deliver_due,
    requeue,
    run_deadletters_command,
    verify_signature,
)
from notifier.templates import render
from serving.app.db import Database
from serving.app.models import Delivery, Notification, User, utc, utcnow
from tests.emulators import free_port

pytestmark = pytest.mark.integration

SECRET = "whsec_test_0123456789abcdef"
EVENT_TIME = dt.datetime(2026, 11, 30, 21, 0, tzinfo=dt.timezone.utc)


# -- servers ---------------------------------------------------------------------------------------
class _SmtpRecorder:
    """aiosmtpd handler: keeps every accepted message; refuses RCPT to ``refuse`` (550)."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], bytes]] = []
        self.refuse: set[str] = set()
        self.greylist: set[str] = set()

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address in self.refuse:
            return "550 5.1.1 mailbox unavailable"
        if address in self.greylist:
            self.greylist.discard(address)
            return "451 4.7.1 greylisted, try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        return "250 Message accepted for delivery"


@contextlib.contextmanager
def _smtp_server(port: int):
    handler = _SmtpRecorder()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield handler
    finally:
        controller.stop()


@pytest.fixture
def smtp():
    """A real SMTP server (aiosmtpd) on a free port: ``(port, recorder)``."""
    port = free_port()
    with _smtp_server(port) as handler:
        yield port, handler


@dataclasses.dataclass
class _Request:
    path: str
    headers: dict[str, str]
    body: bytes


class _Receiver(ThreadingHTTPServer):
    """Records every POST; answers with the next status of ``statuses`` (then 200)."""

    daemon_threads = True

    def __init__(self) -> None:
        self.requests: list[_Request] = []
        self.statuses: list[int] = []
        self.extra_headers: dict[str, str] = {}
        self.delay = 0.0
        self.lock = threading.Lock()

        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver.lock:
                    receiver.requests.append(_Request(self.path, dict(self.headers), body))
                    status = receiver.statuses.pop(0) if receiver.statuses else 200
                if receiver.delay:
                    time.sleep(receiver.delay)
                self.send_response(status)
                for k, v in receiver.extra_headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        super().__init__(("127.0.0.1", 0), Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hooks/miraikakaku"


@pytest.fixture
def receiver():
    """A real local HTTP server receiving webhooks."""
    server = _Receiver()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


# -- database rows -----------------------------------------------------------------------------
@pytest.fixture
def db(app_db_url):
    database = Database.connect(app_db_url)
    yield database
    database.close()


def _settings(tmp_path, app_db_url, smtp_port: int = 1, **kw) -> Settings:
    kw.setdefault("webhook_max_attempts", 5)
    kw.setdefault("webhook_backoff_seconds", 2.0)
    return Settings(env="test", data_dir=tmp_path, database_url=app_db_url,
                    smtp_host="127.0.0.1", smtp_port=smtp_port,
                    smtp_sender="alerts@miraikakaku.test", **kw)


def _user(db: Database, email_addr: str, locale: str = "en", *, email_on: bool = True,
          webhook_url: str | None = None, secret: str | None = SECRET) -> int:
    with db.session() as s:
        u = User(email=email_addr, password_hash="x", locale=locale, email_notifications=email_on,
                 webhook_url=webhook_url, webhook_secret=secret if webhook_url else None)
        s.add(u)
        s.flush()
        return u.id


_CTX = dict(symbol="AAPL", instrument_id="XNAS:AAPL", currency="USD", value=171.25, level=170.0,
            event_time=EVENT_TIME, timezone="America/New_York", session_date="2026-11-30",
            rule_name="Apple <170> & more")


def _delivery(db: Database, user_id: int, channel: str, *, locale: str = "en",
              key: str = "1/evt") -> tuple[int, int]:
    """A notification rendered with the templates and one pending delivery: ``(nid, did)``."""
    title, body = render("price_above", locale, _CTX)
    with db.session() as s:
        n = Notification(user_id=user_id, dedup_key=key, instrument_id="XNAS:AAPL",
                         kind="price_above", title=title, body=body, locale=locale,
                         value=171.25, event_time=EVENT_TIME,
                         payload={"level": 170.0, "context": {"timezone": "America/New_York"}})
        s.add(n)
        s.flush()
        d = Delivery(notification_id=n.id, channel=channel)
        s.add(d)
        s.flush()
        return n.id, d.id


def _row(db: Database, delivery_id: int) -> Delivery:
    with db.session() as s:
        return s.get(Delivery, delivery_id)


def _parse(raw: bytes) -> email.message.EmailMessage:
    return email.message_from_bytes(raw, policy=email.policy.default)


# -- email ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("locale", ["ja", "en"])
def test_email_arrives_in_the_users_language(db, smtp, tmp_path, app_db_url, locale):
    port, server = smtp
    settings = _settings(tmp_path, app_db_url, port)
    uid = _user(db, f"{locale}@example.com", locale)
    nid, did = _delivery(db, uid, "email", locale=locale)
    assert deliver_due(db, settings) == {"sent": 1, "retry": 0, "dead": 0, "skipped": 0}

    assert len(server.messages) == 1
    mail_from, rcpt, raw = server.messages[0]
    assert mail_from == "alerts@miraikakaku.test" and rcpt == [f"{locale}@example.com"]
    msg = _parse(raw)
    title, body = render("price_above", locale, _CTX)
    assert msg["Subject"] == title
    assert title == ("AAPL が 170.00 USD を上回りました" if locale == "ja"
                     else "AAPL rose above 170.00 USD")
    assert msg["Message-ID"] == f"<notification-{nid}@miraikakaku.test>"
    assert msg[DELIVERY_HEADER] == str(did)
    assert msg["Content-Language"] == locale
    text = msg.get_body(("plain",)).get_content().replace("\r\n", "\n")
    html = msg.get_body(("html",)).get_content()
    assert body in text
    assert "Apple <170> & more" in text  # text is not escaped
    assert "Apple &lt;170&gt; &amp; more" in html and "<170>" not in html  # HTML is
    # the details table shows the time in the exchange's zone, as the body does
    assert ("2026年11月30日 16:00 EST" if locale == "ja" else "2026-11-30 16:00 EST") in html
    assert (("メール通知" in text) if locale == "ja" else ("email notifications" in text))
    row = _row(db, did)
    assert (row.status, row.attempts, row.last_error) == ("sent", 1, None)
    assert utc(row.delivered_at) is not None
    # nothing is due any more: a second run sends nothing
    assert deliver_due(db, settings)["sent"] == 0 and len(server.messages) == 1


def test_smtp_down_then_delivered_when_it_comes_up(db, tmp_path, app_db_url):
    port = free_port()  # nothing listens there yet
    settings = _settings(tmp_path, app_db_url, port, webhook_backoff_seconds=2.0)
    uid = _user(db, "late@example.com", "ja")
    nid, did = _delivery(db, uid, "email", locale="ja")
    t0 = utcnow()
    assert deliver_due(db, settings, now=t0) == {"sent": 0, "retry": 1, "dead": 0, "skipped": 0}
    row = _row(db, did)
    assert row.status == "pending" and row.attempts == 1
    assert "SMTP" in row.last_error and "attempt 1" in row.last_error
    delay = (utc(row.next_attempt_at) - t0).total_seconds()
    assert 1.8 <= delay <= 2.2  # backoff 2 s with ≤ 10 % jitter
    assert deliver_due(db, settings, now=t0)["retry"] == 0  # not due yet

    with _smtp_server(port) as server:
        counts = deliver_due(db, settings, now=utc(row.next_attempt_at))
        assert counts == {"sent": 1, "retry": 0, "dead": 0, "skipped": 0}
        assert len(server.messages) == 1
        msg = _parse(server.messages[0][2])
        assert msg["Message-ID"] == f"<notification-{nid}@miraikakaku.test>"
        assert msg["Subject"] == "AAPL が 170.00 USD を上回りました"
    row = _row(db, did)
    assert (row.status, row.attempts) == ("sent", 2)


def test_smtp_5xx_is_permanent(db, smtp, tmp_path, app_db_url):
    port, server = smtp
    server.refuse.add("gone@example.com")
    settings = _settings(tmp_path, app_db_url, port)
    _, did = _delivery(db, _user(db, "gone@example.com"), "email")
    assert deliver_due(db, settings) == {"sent": 0, "retry": 0, "dead": 1, "skipped": 0}
    row = _row(db, did)
    assert row.status == "dead" and row.attempts == 1 and "SMTP 550" in row.last_error
    assert server.messages == []


def test_smtp_4xx_is_retried(db, smtp, tmp_path, app_db_url):
    port, server = smtp
    server.greylist.add("grey@example.com")
    settings = _settings(tmp_path, app_db_url, port)
    _, did = _delivery(db, _user(db, "grey@example.com"), "email")
    now = utcnow()
    assert deliver_due(db, settings, now=now)["retry"] == 1
    row = _row(db, did)
    assert row.status == "pending" and "SMTP 451" in row.last_error and server.messages == []
    assert deliver_due(db, settings, now=utc(row.next_attempt_at))["sent"] == 1
    assert len(server.messages) == 1 and _row(db, did).attempts == 2


def test_email_turned_off_is_dead(db, smtp, tmp_path, app_db_url):
    port, server = smtp
    _, did = _delivery(db, _user(db, "quiet@example.com", email_on=False), "email")
    assert deliver_due(db, _settings(tmp_path, app_db_url, port))["dead"] == 1
    assert "turned off" in _row(db, did).last_error and server.messages == []


# -- webhooks ----------------------------------------------------------------------------------
def _check_signed(req: _Request, secret: str = SECRET) -> None:
    ts, sig = req.headers[TIMESTAMP_HEADER], req.headers[SIGNATURE_HEADER]
    assert sig.startswith("sha256=") and len(sig) == 7 + 64
    assert verify_signature(secret, ts, req.body, sig)


def test_webhook_is_signed_and_verifies(db, receiver, tmp_path, app_db_url):
    settings = _settings(tmp_path, app_db_url)
    uid = _user(db, "hook@example.com", "ja", webhook_url=receiver.url)
    nid, did = _delivery(db, uid, "webhook", locale="ja")
    assert deliver_due(db, settings) == {"sent": 1, "retry": 0, "dead": 0, "skipped": 0}
    assert len(receiver.requests) == 1
    req = receiver.requests[0]
    assert req.path == "/hooks/miraikakaku"
    assert req.headers["Content-Type"].startswith("application/json")
    assert req.headers[DELIVERY_HEADER] == str(did)
    _check_signed(req)
    ts, sig = req.headers[TIMESTAMP_HEADER], req.headers[SIGNATURE_HEADER]
    assert abs(int(ts) - time.time()) < 60
    doc = json.loads(req.body)
    assert doc["delivery_id"] == did and doc["notification_id"] == nid
    assert doc["title"] == "AAPL が 170.00 USD を上回りました" and doc["kind"] == "price_above"
    assert doc["event_time"] == EVENT_TIME.isoformat() and doc["payload"]["level"] == 170.0
    # a tampered body, another secret, a changed timestamp or an old request do not verify
    tampered = req.body.replace(b"170.00", b"270.00")
    assert tampered != req.body
    assert not verify_signature(SECRET, ts, tampered, sig)
    assert not verify_signature("another-secret", ts, req.body, sig)
    assert not verify_signature(SECRET, int(ts) + 1, req.body, sig)
    assert not verify_signature(SECRET, ts, req.body, sig, now=int(ts) + 301)
    assert verify_signature(SECRET, ts, req.body, sig, now=int(ts) + 299)
    assert not verify_signature(SECRET, "not-a-number", req.body, sig)
    assert not verify_signature(SECRET, ts, req.body, "sha256=" + "0" * 64)
    assert _row(db, did).status == "sent"


def test_webhook_500_twice_then_200_delivered_on_attempt_3(db, receiver, tmp_path, app_db_url):
    receiver.statuses = [500, 500, 200]
    settings = _settings(tmp_path, app_db_url, webhook_backoff_seconds=2.0)
    _, did = _delivery(db, _user(db, "flaky@example.com", webhook_url=receiver.url), "webhook")
    now = utcnow()
    delays = []
    for expected in ("retry", "retry", "sent"):
        counts = deliver_due(db, settings, now=now)
        assert counts[expected] == 1, counts
        row = _row(db, did)
        if expected == "retry":
            assert "HTTP 500" in row.last_error
            delays.append((utc(row.next_attempt_at) - now).total_seconds())
            # not due before its time
            early = now + dt.timedelta(seconds=delays[-1] - 0.1)
            assert deliver_due(db, settings, now=early) == \
                {"sent": 0, "retry": 0, "dead": 0, "skipped": 0}
            now = utc(row.next_attempt_at)
    assert (row.status, row.attempts) == ("sent", 3)
    assert 1.8 <= delays[0] <= 2.2 and 3.6 <= delays[1] <= 4.4 and delays[1] > delays[0]
    assert len(receiver.requests) == 3
    assert {r.headers[DELIVERY_HEADER] for r in receiver.requests} == {str(did)}
    for r in receiver.requests:
        _check_signed(r)
    assert [json.loads(r.body)["attempt"] for r in receiver.requests] == [1, 2, 3]


def test_webhook_always_500_is_dead_after_max_attempts(db, receiver, tmp_path, app_db_url):
    receiver.statuses = [500] * 10
    settings = _settings(tmp_path, app_db_url, webhook_max_attempts=3,
                         webhook_backoff_seconds=0.5)
    _, did = _delivery(db, _user(db, "down@example.com", webhook_url=receiver.url), "webhook")
    now = utcnow()
    outcomes = []
    for _ in range(6):
        counts = deliver_due(db, settings, now=now)
        outcomes.append(next((k for k, v in counts.items() if v), None))
        now += dt.timedelta(hours=1)
    assert outcomes == ["retry", "retry", "dead", None, None, None]
    assert len(receiver.requests) == 3
    row = _row(db, did)
    assert row.status == "dead" and row.attempts == 3
    assert "HTTP 500" in row.last_error and "gave up after 3 attempts" in row.last_error
    dead = dead_letters(db)
    assert [(d.delivery_id, d.channel, d.attempts) for d in dead] == [(did, "webhook", 3)]
    assert dead[0].title == "AAPL rose above 170.00 USD"


def test_webhook_400_is_dead_at_once_and_can_be_requeued(db, receiver, tmp_path, app_db_url):
    receiver.statuses = [400]
    settings = _settings(tmp_path, app_db_url)
    uid = _user(db, "bad@example.com", webhook_url=receiver.url)
    _, did = _delivery(db, uid, "webhook")
    assert deliver_due(db, settings) == {"sent": 0, "retry": 0, "dead": 1, "skipped": 0}
    row = _row(db, did)
    assert (row.status, row.attempts) == ("dead", 1) and "HTTP 400" in row.last_error
    assert len(receiver.requests) == 1
    assert [d.delivery_id for d in dead_letters(db, user_id=uid)] == [did]
    assert dead_letters(db, user_id=uid + 1000) == []
    # the receiver is fixed: redrive the dead letter
    assert requeue(db, [did]) == 1
    assert requeue(db, [did]) == 0  # no longer dead
    assert deliver_due(db, settings)["sent"] == 1
    assert (_row(db, did).status, _row(db, did).attempts) == ("sent", 1)
    assert len(receiver.requests) == 2


def test_deadletters_command_lists_and_requeues(db, receiver, tmp_path, app_db_url):
    receiver.statuses = [410]
    settings = _settings(tmp_path, app_db_url)
    uid = _user(db, "cli@example.com", webhook_url=receiver.url)
    _, did = _delivery(db, uid, "webhook")
    assert deliver_due(db, settings)["dead"] == 1
    parser = argparse.ArgumentParser(prog="miraikakaku notify")
    add_deadletters_parser(parser.add_subparsers(dest="action"))
    out = io.StringIO()
    assert run_deadletters_command(parser.parse_args(["deadletters"]), settings, out=out) == 0
    lines = out.getvalue().splitlines()
    assert lines[-1] == "1 dead deliveries"
    assert lines[0].startswith(f"{did}\twebhook\tuser={uid}\t") and "HTTP 410" in lines[0]
    out = io.StringIO()
    args = parser.parse_args(["deadletters", "--user-id", str(uid + 1)])
    assert run_deadletters_command(args, settings, out=out) == 0
    assert out.getvalue().splitlines() == ["0 dead deliveries"]
    args = parser.parse_args(["deadletters", "--requeue", str(did)])
    assert run_deadletters_command(args, settings, out=io.StringIO()) == 0
    assert run_deadletters_command(args, settings, out=io.StringIO()) == 1  # not dead now
    assert _row(db, did).status == "pending"


def test_webhook_429_waits_for_retry_after(db, receiver, tmp_path, app_db_url):
    receiver.statuses = [429]
    receiver.extra_headers = {"Retry-After": "30"}
    settings = _settings(tmp_path, app_db_url, webhook_backoff_seconds=1.0)
    _, did = _delivery(db, _user(db, "busy@example.com", webhook_url=receiver.url), "webhook")
    now = utcnow()
    assert deliver_due(db, settings, now=now)["retry"] == 1
    row = _row(db, did)
    assert "HTTP 429" in row.last_error
    assert (utc(row.next_attempt_at) - now).total_seconds() >= 30


@pytest.mark.parametrize("url,outcome", [
    ("http://127.0.0.1:{port}/nobody-listens", "retry"),
    ("ftp://example.com/hook", "dead"),
    ("not a url", "dead"),
    ("http:///no-host", "dead"),
])
def test_webhook_url_failures(db, tmp_path, app_db_url, url, outcome):
    settings = _settings(tmp_path, app_db_url)
    uid = _user(db, "url@example.com", webhook_url=url.format(port=free_port()))
    _, did = _delivery(db, uid, "webhook")
    assert deliver_due(db, settings)[outcome] == 1
    row = _row(db, did)
    assert row.status == ("pending" if outcome == "retry" else "dead") and row.attempts == 1
    if outcome == "retry":
        assert "ConnectError" in row.last_error


def test_webhook_without_secret_is_dead(db, receiver, tmp_path, app_db_url):
    uid = _user(db, "nosecret@example.com", webhook_url=receiver.url, secret=None)
    _, did = _delivery(db, uid, "webhook")
    assert deliver_due(db, _settings(tmp_path, app_db_url))["dead"] == 1
    assert "secret" in _row(db, did).last_error and receiver.requests == []


# -- concurrency ---------------------------------------------------------------------------------
def test_a_claimed_row_cannot_be_claimed_again(db, app_db_url):
    _, did = _delivery(db, _user(db, "claim@example.com", webhook_url="http://x/"), "webhook")
    now = utcnow()
    other = Database(app_db_url)  # another process's engine
    try:
        assert _claim(db, did, 0, now) is True
        assert _claim(other, did, 0, now) is False  # it saw attempts=0 too, but lost the race
    finally:
        other.close()
    assert _row(db, did).attempts == 1


def test_two_notifiers_never_send_a_delivery_twice(db, receiver, tmp_path, app_db_url):
    receiver.delay = 0.01
    settings = _settings(tmp_path, app_db_url)
    uid = _user(db, "many@example.com", webhook_url=receiver.url)
    ids = [_delivery(db, uid, "webhook", key=f"1/evt-{i}")[1] for i in range(30)]
    results: list[dict[str, int]] = []
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def notifier():
        own = Database(app_db_url)  # each "process" has its own engine and connections
        try:
            start.wait()
            results.append(deliver_due(own, settings))
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)
        finally:
            own.close()

    threads = [threading.Thread(target=notifier) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert len(results) == 2 and sum(r["sent"] for r in results) == 30
    assert all(r["retry"] == 0 and r["dead"] == 0 for r in results)
    sent_ids = [int(r.headers[DELIVERY_HEADER]) for r in receiver.requests]
    assert sorted(sent_ids) == sorted(ids)  # each exactly once
    with db.session() as s:
        rows = s.execute(select(Delivery.status, Delivery.attempts)).all()
    assert set(rows) == {("sent", 1)}
