"""The notifier end to end on SQLite and PostgreSQL application databases.

Real AAPL bars (plus predictions and a pipeline alert) are written through the SQLite serving
store's ``write_batch``, exactly as the pipeline writes them (outbox rows in the same
transaction); the notifier drains the outbox (``run_notifier(once=True)``) into users' inboxes.

Run: ``.venv/bin/python -m pytest -q tests/integration/test_notifier.py``.
"""

from __future__ import annotations

import threading
import time

import pandas as pd
import pytest
from sqlalchemy import func, select

from miraikakaku.settings import Settings
from notifier.service import CONSUMER, run_notifier
from serving.app.db import Database
from serving.app.models import AlertRule, ConsumerOffset, Delivery, Notification
from stores.sqlite import SqliteServingStore
from tests.api.conftest import (
    US_FILE,
    ensure_user,
    instrument,
    make_alert,
    make_predictions,
    read_rows,
    to_price_event,
)

pytestmark = pytest.mark.integration

AAPL = "XNAS:AAPL"


@pytest.fixture(scope="module")
def aapl():
    inst = instrument("AAPL")
    events = [to_price_event(r, inst, "sp500_5yr") for r in read_rows(US_FILE, ("AAPL",))]
    return inst, sorted((e for e in events if e is not None), key=lambda e: e.session_date)


@pytest.fixture(scope="module")
def closes() -> pd.Series:
    df = pd.read_csv(US_FILE, dtype={"symbol": str, "date": str})
    df = df[df["symbol"] == "AAPL"].copy()
    df["date"] = pd.to_datetime(df["date"]).dt.date
    return df.sort_values("date").set_index("date")["close"]


@pytest.fixture()
def env(app_db_url, tmp_path):
    settings = Settings(env="test", data_dir=tmp_path / "var", database_url=app_db_url,
                        notify_poll_seconds=0.0)
    db = Database.connect(settings.app_database_url)
    store = SqliteServingStore(settings.store_path)
    yield settings, db, store
    store.close()
    db.close()


def add_rule(db, user, kind, params, channels=("inbox",), cooldown=0) -> int:
    with db.session() as s:
        r = AlertRule(user_id=user.id, name=f"{kind} rule", instrument_id=AAPL, kind=kind,
                      params=params, channels=list(channels), cooldown_seconds=cooldown)
        s.add(r)
        s.flush()
        return r.id


def inbox(db, user) -> list[Notification]:
    with db.session() as s:
        return list(s.scalars(select(Notification).where(Notification.user_id == user.id)
                              .order_by(Notification.event_time, Notification.id)))


def crossings(closes: pd.Series, level: float, first, last) -> list:
    prev = closes.shift(1)
    hit = closes.index[(prev < level) & (closes >= level)]
    return [d for d in hit if first <= d <= last]


def test_pipeline_writes_then_notify_once_fills_the_inbox(env, aapl, closes):
    settings, db, store = env
    inst, events = aapl
    alice = ensure_user(db, "alice@example.com")
    bob = ensure_user(db, "bob@example.com")
    with db.session() as s:
        a = s.get(type(alice), alice.id)
        a.email_notifications, a.locale = True, "ja"
    level = float(round(closes.median()))
    above = add_rule(db, alice, "price_above", {"level": level}, ("inbox", "email", "webhook"))
    add_rule(db, alice, "predicted_move", {"threshold": 0.01})
    add_rule(db, alice, "market_alert", {})
    # bob watches nothing on AAPL that fires: never sees alice's notifications
    add_rule(db, bob, "price_below", {"level": 1.0})
    preds = make_predictions(events, AAPL, "sp500_5yr", [0.004, -0.02, 0.03])
    alert = make_alert(events[-1], "aapl_pct", "pct_move", -0.03, 0.02)
    # as the pipeline writes: several batches, each one transaction
    store.write_batch([inst, *events[:500]])
    store.write_batch([*events[500:], *preds, alert])

    summary = run_notifier(settings, once=True, db=db, deliver=False)

    expected = crossings(closes, level, events[1].session_date, events[-1].session_date)
    notes = inbox(db, alice)
    price = [n for n in notes if n.kind == "price_above"]
    assert [n.payload["session_date"] for n in price] == [
        d.isoformat() for d in expected]
    assert all(n.rule_id == above and n.locale == "ja" and "上回" in n.title for n in price)
    assert sorted(n.value for n in notes if n.kind == "predicted_move") == [-0.02, 0.03]
    assert [n.payload["alert_kind"] for n in notes if n.kind == "market_alert"] == ["pct_move"]
    assert inbox(db, bob) == []
    assert summary.events == {"prices": len(events), "predictions": 3, "alerts": 1}
    assert summary.notified == len(notes) == len(expected) + 3
    with db.session() as s:
        deliveries = s.execute(select(Delivery.channel, Delivery.status)).all()
        # email only: alice has email on and no webhook URL
        assert sorted(deliveries) == [("email", "pending")] * len(expected)
        offset = s.get(ConsumerOffset, (CONSUMER, f"outbox:{settings.store_path}"))
        max_rowid = store._conn().execute("SELECT max(rowid) FROM outbox").fetchone()[0]
        assert offset.position == max_rowid
        assert s.get(AlertRule, above).last_fired_at is not None

    # a second run resumes after the offset: nothing new
    again = run_notifier(settings, once=True, db=db, deliver=False)
    assert sum(again.events.values()) == 0 and again.notified == 0
    # a replay of the same events (pipeline rerun, and --from-start) notifies once
    store.write_batch([*events, *preds, alert])
    replay = run_notifier(settings, once=True, db=db, from_start=True, deliver=False)
    assert sum(replay.events.values()) == len(events) + 4
    assert replay.notified == 0
    with db.session() as s:
        assert s.scalar(select(func.count(Notification.id))) == len(notes)
        assert s.scalar(select(func.count(Delivery.id))) == len(expected)


def test_rules_created_and_disabled_while_running_apply_without_restart(env, aapl, closes):
    settings, db, store = env
    inst, events = aapl
    carol = ensure_user(db, "carol@example.com")
    level = float(round(closes.median()))
    thirds = [events[:400], events[400:800], events[800:]]
    stop = threading.Event()
    result = {}
    thread = threading.Thread(target=lambda: result.update(s=run_notifier(
        settings, db=db, poll_seconds=0.02, stop=stop, deliver=False)))
    thread.start()

    def caught_up() -> None:
        want = store._conn().execute("SELECT max(rowid) FROM outbox").fetchone()[0]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with db.session() as s:
                off = s.scalar(select(ConsumerOffset.position))
            if off == want:
                return
            time.sleep(0.02)
        raise AssertionError(f"notifier did not reach outbox rowid {want}")

    try:
        store.write_batch([inst, *thirds[0]])
        caught_up()
        assert inbox(db, carol) == []  # no rule yet
        rule_id = add_rule(db, carol, "price_above", {"level": level})
        time.sleep(0.3)  # several polls: the rule book reloads on the change
        store.write_batch(thirds[1])
        caught_up()
        got = [n.payload["session_date"] for n in inbox(db, carol)]
        expected = crossings(closes, level, thirds[1][0].session_date,
                             thirds[1][-1].session_date)
        assert expected and got == [d.isoformat() for d in expected]
        with db.session() as s:
            s.get(AlertRule, rule_id).enabled = False
        time.sleep(0.3)
        store.write_batch(thirds[2])
        caught_up()
        assert len(inbox(db, carol)) == len(expected)  # disabled: nothing more
        assert crossings(closes, level, thirds[2][0].session_date, thirds[2][-1].session_date)
    finally:
        stop.set()
        thread.join(30)
    assert result["s"].rule_reloads >= 3


def test_cooldown_applies_within_one_batch_and_a_deleted_rule_is_skipped(env, aapl, closes):
    settings, db, store = env
    inst, events = aapl
    dave = ensure_user(db, "dave@example.com")
    times = {e.session_date: e.event_time for e in events}
    best = None  # the level AAPL crosses upward most often: a flapping series
    for level in range(int(closes.min()) + 1, int(closes.max())):
        ups = crossings(closes, float(level), events[1].session_date, events[-1].session_date)
        if best is None or len(ups) > len(best[1]):
            best = (float(level), ups)
    level, ups = best
    cooldown = 30 * 86_400
    kept, last = [], None
    for d in ups:
        if last is None or (times[d] - last).total_seconds() >= cooldown:
            kept.append(d)
            last = times[d]
    assert len(kept) < len(ups)
    flappy = add_rule(db, dave, "price_above", {"level": level}, cooldown=cooldown)
    doomed = add_rule(db, dave, "price_below", {"level": level})
    store.write_batch([inst, *events])

    from notifier.service import Notifier

    notifier = Notifier(db, settings, batch_size=100_000, deliver=False)
    notifier.start()
    with db.session() as s:  # deleted after the notifier loaded it
        s.delete(s.get(AlertRule, doomed))
    notifier.drain()
    assert notifier.summary.batches == 1
    got = [n.payload["session_date"] for n in inbox(db, dave)]
    assert got == [d.isoformat() for d in kept]
    with db.session() as s:
        assert s.get(AlertRule, flappy).last_fired_at.date() == kept[-1]
