"""``/v1/notifications``: inbox paging, read marks, isolation, and the live SSE stream.

The stream test runs a real uvicorn server in a thread: a client connects (``?access_token=``),
then the notifier (a separate component, here ``run_notifier(once=True)``) turns real AAPL bars
written through the serving store into notifications, and the client receives them. All tests
run on SQLite and PostgreSQL application databases.

Run: ``.venv/bin/python -m pytest -q tests/api/test_notifications.py``.
"""

from __future__ import annotations

import datetime as dt
import json
import socket
import threading
import time

import httpx
import pandas as pd
import pytest
import uvicorn

from miraikakaku.settings import Settings
from notifier.service import run_notifier
from serving.app.api.routes import notifications as notification_routes
from serving.app.main import create_app
from serving.app.models import AlertRule, Notification, Role
from stores.sqlite import SqliteServingStore
from tests.api.conftest import US_FILE, bearer, ensure_user, instrument, read_rows, to_price_event

pytestmark = pytest.mark.api

T0 = dt.datetime(2018, 1, 2, 21, tzinfo=dt.timezone.utc)


def seed(db, user, n: int, start: int = 0) -> list[int]:
    """``n`` notifications of ``user``; returns their ids in creation order."""
    ids = []
    with db.session() as s:
        for i in range(start, start + n):
            row = Notification(user_id=user.id, dedup_key=f"test/{i}", instrument_id="XNAS:AAPL",
                               kind="price_above", title=f"t{i}", body=f"b{i}", locale="en",
                               value=float(i), event_time=T0 + dt.timedelta(days=i),
                               payload={"i": i})
            s.add(row)
            s.flush()
            ids.append(row.id)
    return ids


@pytest.fixture()
def users(db_client):
    app = db_client.app
    alice = ensure_user(app.state.db, "alice@example.com", Role.user)
    bob = ensure_user(app.state.db, "bob@example.com", Role.user)
    return alice, bob, bearer(app.state.settings, alice), bearer(app.state.settings, bob)


def test_inbox_pages_newest_first_with_a_cursor(db_client, users):
    alice, bob, ha, hb = users
    ids = seed(db_client.app.state.db, alice, 7)
    seed(db_client.app.state.db, bob, 2, start=100)
    got, cursor = [], None
    while True:
        params = {"limit": 3} | ({"cursor": cursor} if cursor else {})
        page = db_client.get("/v1/notifications", params=params, headers=ha).json()
        got += [n["id"] for n in page["data"]]
        assert page["count"] == len(page["data"]) <= 3
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert got == sorted(ids, reverse=True)
    first = db_client.get("/v1/notifications", headers=ha).json()["data"][0]
    assert first["title"] == "t6" and first["event_time"].startswith("2018-01-08T21:00:00")
    assert first["read_at"] is None and first["payload"] == {"i": 6}


def test_read_marks_unread_count_and_read_all(db_client, users):
    alice, bob, ha, hb = users
    ids = seed(db_client.app.state.db, alice, 4)
    seed(db_client.app.state.db, bob, 3, start=100)
    assert db_client.get("/v1/notifications/unread-count", headers=ha).json() == {"count": 4}
    r = db_client.post(f"/v1/notifications/{ids[1]}/read", headers=ha)
    assert r.status_code == 200 and r.json()["read_at"] is not None
    again = db_client.post(f"/v1/notifications/{ids[1]}/read", headers=ha).json()
    assert again["read_at"] == r.json()["read_at"]  # idempotent: first read time kept
    unread = db_client.get("/v1/notifications", params={"unread_only": True}, headers=ha).json()
    assert [n["id"] for n in unread["data"]] == [ids[3], ids[2], ids[0]]
    assert db_client.post("/v1/notifications/read-all", headers=ha).json() == {"updated": 3}
    assert db_client.get("/v1/notifications/unread-count", headers=ha).json() == {"count": 0}
    assert db_client.get("/v1/notifications/unread-count", headers=hb).json() == {"count": 3}


def test_another_users_notification_is_404(db_client, users):
    alice, bob, ha, hb = users
    (nid,) = seed(db_client.app.state.db, alice, 1)
    assert db_client.post(f"/v1/notifications/{nid}/read", headers=hb).status_code == 404
    assert db_client.get("/v1/notifications", headers=hb).json()["count"] == 0
    assert db_client.get("/v1/notifications/unread-count", headers=ha).json() == {"count": 1}


def test_access_token_query_is_accepted_by_the_stream_only(db_client, users):
    _, _, ha, _ = users
    token = ha["Authorization"].split()[1]
    r = db_client.get("/v1/notifications", params={"access_token": token})
    assert r.status_code == 401
    assert db_client.get("/v1/notifications/stream").status_code == 401
    assert db_client.get("/v1/notifications/stream",
                         params={"access_token": "not-a-jwt"}).status_code == 401


# -- the live stream against a real server ------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def live(app_db_url, tmp_path, monkeypatch):
    """A uvicorn server in a thread over a fresh serving store and ``app_db_url``."""
    monkeypatch.setattr(notification_routes, "STREAM_PING_SECONDS", 1)
    settings = Settings(env="test", data_dir=tmp_path / "var", database_url=app_db_url,
                        notify_poll_seconds=0.0)
    writer = SqliteServingStore(settings.store_path)
    inst = instrument("AAPL")
    events = sorted((e for e in (to_price_event(r, inst, "sp500_5yr")
                                 for r in read_rows(US_FILE, ("AAPL",))) if e is not None),
                    key=lambda e: e.session_date)
    writer.write_batch([inst, *events[:300]])
    app = create_app(settings)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "server did not start"
        time.sleep(0.05)
    try:
        yield settings, app, f"http://127.0.0.1:{port}", writer, events
    finally:
        server.should_exit = True
        thread.join(15)
        writer.close()


def _read_sse(resp: httpx.Response, want: int, seconds: float) -> tuple[list[dict], int]:
    """Parse SSE frames until ``want`` notification events arrived; returns them and the
    number of ping comments seen."""
    got, pings, frame = [], 0, {}
    deadline = time.monotonic() + seconds
    for line in resp.iter_lines():
        if line.startswith(":"):
            pings += 1
        elif line == "":
            if frame.get("event") == "notification":
                got.append(frame)
                if len(got) >= want:
                    break
            frame = {}
        else:
            key, _, value = line.partition(":")
            frame[key] = value.lstrip(" ")
        if time.monotonic() > deadline:
            break
    return got, pings


def test_stream_delivers_notifications_created_after_connecting(live, closes_aapl):
    settings, app, base, writer, events = live
    db = app.state.db
    alice = ensure_user(db, "alice@example.com")
    token = bearer(settings, alice)["Authorization"].split()[1]
    seed(db, alice, 2, start=900)  # older notifications: not replayed to a new connection
    level = float(round(closes_aapl.median()))
    with db.session() as s:
        s.add(AlertRule(user_id=alice.id, name="above", instrument_id="XNAS:AAPL",
                        kind="price_above", params={"level": level}, channels=["inbox"],
                        cooldown_seconds=0))
    rest = events[300:]
    prev = closes_aapl.shift(1)
    expected = [d for d in closes_aapl.index[(prev < level) & (closes_aapl >= level)]
                if d >= rest[0].session_date]
    assert expected
    result: dict = {}
    with httpx.Client(base_url=base, timeout=httpx.Timeout(30)) as http:
        with http.stream("GET", "/v1/notifications/stream",
                         params={"access_token": token}) as resp:
            assert resp.status_code == 200
            assert resp.headers["content-type"].startswith("text/event-stream")

            def consume() -> None:
                result["frames"], result["pings"] = _read_sse(resp, len(expected), 30)

            reader = threading.Thread(target=consume)
            reader.start()
            time.sleep(1.2)  # connected, one poll done, a ping sent: nothing yet
            writer.write_batch(rest)  # the pipeline writes, then the notifier runs
            summary = run_notifier(settings, once=True, deliver=False)
            assert summary.notified == len(expected)
            reader.join(40)
    frames = result["frames"]
    data = [json.loads(f["data"]) for f in frames]
    assert [d["payload"]["session_date"] for d in data] == [d.isoformat() for d in expected]
    assert [int(f["id"]) for f in frames] == [d["id"] for d in data]
    assert all(d["title"] and d["kind"] == "price_above" for d in data)
    assert result["pings"] >= 1
    # a reconnect with Last-Event-ID resumes after it
    with httpx.Client(base_url=base, timeout=httpx.Timeout(30)) as http:
        with http.stream("GET", "/v1/notifications/stream",
                         headers={"Authorization": f"Bearer {token}",
                                  "Last-Event-ID": frames[0]["id"]}) as resp:
            again, _ = _read_sse(resp, len(frames) - 1, 10)
    assert [f["id"] for f in again] == [f["id"] for f in frames[1:]]


@pytest.fixture(scope="module")
def closes_aapl() -> pd.Series:
    df = pd.read_csv(US_FILE, dtype={"symbol": str, "date": str})
    df = df[df["symbol"] == "AAPL"].copy()
    df["date"] = pd.to_datetime(df["date"]).dt.date
    return df.sort_values("date").set_index("date")["close"]
