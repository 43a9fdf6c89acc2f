"""``/v1/users/me`` on SQLite and PostgreSQL: profile read and update, mass assignment refused,
password change, webhook secret, account deletion (no row of the user left in any table), and
user A never reaching user B's data.

Run: ``.venv/bin/python -m pytest tests/api/test_users.py -q``.
"""

import datetime as dt

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from serving.app import accounts
from serving.app.models import (
    AlertRule,
    Base,
    Delivery,
    Notification,
    RefreshToken,
    User,
)
from tests.api.conftest import TEST_PASSWORD, auth, login, register

pytestmark = pytest.mark.api


def _user_row(client: TestClient, user_id: int) -> User:
    with client.app.state.db.session() as s:
        return s.get(User, user_id)


def _two_users(client: TestClient) -> tuple[dict, dict, dict, dict]:
    a = register(client, "a@example.com", full_name="A")
    b = register(client, "b@example.com", full_name="B")
    return a, auth(login(client, "a@example.com")), b, auth(login(client, "b@example.com"))


def test_read_and_update_profile(db_client: TestClient) -> None:
    user = register(db_client, "taro@example.com")
    h = auth(login(db_client, "taro@example.com"))
    me = db_client.get("/v1/users/me", headers=h).json()
    assert me == user
    assert me["locale"] == "en" and me["email_notifications"] is False
    assert me["webhook_url"] is None and me["has_webhook_secret"] is False

    resp = db_client.patch("/v1/users/me", headers=h, json={
        "full_name": "鈴木 太郎", "locale": "ja", "email_notifications": True,
        "webhook_url": "https://hooks.example.com/miraikakaku"})
    assert resp.status_code == 200, resp.text
    me = resp.json()
    assert (me["full_name"], me["locale"], me["email_notifications"], me["webhook_url"]) == \
        ("鈴木 太郎", "ja", True, "https://hooks.example.com/miraikakaku")
    # only the fields sent change; null clears a nullable field
    me = db_client.patch("/v1/users/me", headers=h, json={"webhook_url": None}).json()
    assert me["webhook_url"] is None and me["locale"] == "ja" and me["full_name"] == "鈴木 太郎"
    row = _user_row(db_client, user["id"])
    assert row.locale == "ja" and row.email_notifications is True and row.webhook_url is None
    # local URL for development
    me = db_client.patch("/v1/users/me", headers=h,
                         json={"webhook_url": "http://localhost:9000/hook"}).json()
    assert me["webhook_url"] == "http://localhost:9000/hook"


@pytest.mark.parametrize("body", [
    {"locale": "fr"}, {"locale": None}, {"email_notifications": None},
    {"email_notifications": "maybe"}, {"webhook_url": "ftp://example.com/x"},
    {"webhook_url": "javascript:alert(1)"}, {"webhook_url": "not a url"},
    {"full_name": "x" * 201}, {"full_name": "nul\x00byte"}, {"full_name": "bell\x07"},
])
def test_invalid_profile_values_are_422(db_client: TestClient, body: dict) -> None:
    register(db_client, "taro@example.com")
    h = auth(login(db_client, "taro@example.com"))
    resp = db_client.patch("/v1/users/me", headers=h, json=body)
    assert resp.status_code == 422, resp.text
    assert resp.json()["error"]["code"] == "invalid_request"


@pytest.mark.parametrize("field,value", [
    ("role", "admin"), ("id", 1), ("token_version", 99), ("is_active", False),
    ("email", "other@example.com"), ("password_hash", "x"), ("webhook_secret", "mine"),
])
def test_mass_assignment_is_refused(db_client: TestClient, field: str, value: object) -> None:
    user = register(db_client, "taro@example.com")
    h = auth(login(db_client, "taro@example.com"))
    before = _user_row(db_client, user["id"])
    resp = db_client.patch("/v1/users/me", headers=h, json={"full_name": "X", field: value})
    assert resp.status_code == 422, resp.text
    assert field in resp.json()["error"]["message"]
    after = _user_row(db_client, user["id"])
    for col in ("role", "id", "token_version", "is_active", "email", "password_hash",
                "webhook_secret", "full_name"):
        assert getattr(after, col) == getattr(before, col), col
    assert db_client.get("/v1/admin/users", headers=h).status_code == 403  # still a user


@pytest.mark.parametrize("field,value", [("role", "admin"), ("is_active", True),
                                         ("token_version", 5), ("id", 7)])
def test_register_refuses_extra_fields(db_client: TestClient, field: str, value: object) -> None:
    resp = db_client.post("/v1/auth/register", json={
        "email": "mallory@example.com", "password": TEST_PASSWORD, field: value})
    assert resp.status_code == 422, resp.text
    with db_client.app.state.db.session() as s:
        assert s.scalar(select(func.count()).select_from(User)) == 0
    user = register(db_client, "mallory@example.com")
    assert user["role"] == "user"


def test_password_change_checks_the_current_password(db_client: TestClient) -> None:
    register(db_client, "taro@example.com")
    h = auth(login(db_client, "taro@example.com"))
    resp = db_client.post("/v1/users/me/password", headers=h,
                          json={"current_password": "not my password",
                                "new_password": "a brand new passphrase"})
    assert resp.status_code == 403
    resp = db_client.post("/v1/users/me/password", headers=h,
                          json={"current_password": TEST_PASSWORD, "new_password": "short"})
    assert resp.status_code == 422
    assert db_client.get("/v1/users/me", headers=h).status_code == 200  # nothing was revoked
    login(db_client, "taro@example.com")  # the old password still works


def test_webhook_secret_is_new_each_time_and_shown_once(db_client: TestClient) -> None:
    user = register(db_client, "taro@example.com")
    h = auth(login(db_client, "taro@example.com"))
    first = db_client.post("/v1/users/me/webhook-secret", headers=h)
    assert first.status_code == 201
    secret = first.json()["webhook_secret"]
    assert len(secret) >= 43
    assert _user_row(db_client, user["id"]).webhook_secret == secret
    me = db_client.get("/v1/users/me", headers=h).json()
    assert me["has_webhook_secret"] is True and secret not in str(me)
    second = db_client.post("/v1/users/me/webhook-secret", headers=h).json()["webhook_secret"]
    assert second != secret and _user_row(db_client, user["id"]).webhook_secret == second


def _seed_personal_rows(client: TestClient, user_id: int) -> None:
    """An alert rule, a notification with a delivery, and a refresh token of ``user_id``."""
    now = dt.datetime.now(dt.timezone.utc)
    with client.app.state.db.session() as s:
        rule = AlertRule(user_id=user_id, name="AAPL above 200", instrument_id="XNAS:AAPL",
                         kind="price_above", params={"level": 200.0}, channels=["inbox"])
        s.add(rule)
        s.flush()
        note = Notification(user_id=user_id, rule_id=rule.id, dedup_key=f"{rule.id}/e1",
                            instrument_id="XNAS:AAPL", kind="price_above", title="AAPL",
                            body="AAPL crossed 200", locale="en", value=201.0, event_time=now)
        s.add(note)
        s.flush()
        s.add(Delivery(notification_id=note.id, channel="webhook"))
        s.add(RefreshToken(token_hash=accounts.hash_refresh_token(f"t{user_id}"),
                           user_id=user_id, family_id=f"fam-{user_id}",
                           expires_at=now + dt.timedelta(days=1)))


def _rows_of(client: TestClient, user_id: int) -> dict[str, int]:
    """Rows that belong to ``user_id`` in every table of the schema."""
    counts: dict[str, int] = {}
    with client.app.state.db.session() as s:
        note_ids = select(Notification.id).where(Notification.user_id == user_id)
        for table in Base.metadata.sorted_tables:
            if table.name == "users":
                q = select(func.count()).select_from(table).where(table.c.id == user_id)
            elif "user_id" in table.c:
                q = select(func.count()).select_from(table).where(table.c.user_id == user_id)
            elif "notification_id" in table.c:
                q = select(func.count()).select_from(table).where(
                    table.c.notification_id.in_(note_ids))
            else:
                continue
            counts[table.name] = s.scalar(q)
    return counts


def test_delete_account_removes_every_row_of_the_user(db_client: TestClient) -> None:
    a, ha, b, hb = _two_users(db_client)
    _seed_personal_rows(db_client, a["id"])
    _seed_personal_rows(db_client, b["id"])
    before = _rows_of(db_client, a["id"])
    b_rows = _rows_of(db_client, b["id"])
    assert set(before) >= {"users", "refresh_tokens", "alert_rules", "notifications",
                           "deliveries"}
    assert all(n >= 1 for n in before.values()), before

    resp = db_client.request("DELETE", "/v1/users/me", headers=ha,
                             json={"password": "wrong password"})
    assert resp.status_code == 403
    assert db_client.request("DELETE", "/v1/users/me", headers=ha).status_code == 422
    resp = db_client.request("DELETE", "/v1/users/me", headers=ha,
                             json={"password": TEST_PASSWORD})
    assert resp.status_code == 204, resp.text

    assert _rows_of(db_client, a["id"]) == dict.fromkeys(before, 0)
    assert _rows_of(db_client, b["id"]) == b_rows  # B keeps everything
    assert db_client.get("/v1/users/me", headers=ha).status_code == 401
    resp = db_client.post("/v1/auth/login", data={"username": "a@example.com",
                                                  "password": TEST_PASSWORD})
    assert resp.status_code == 401
    assert db_client.get("/v1/users/me", headers=hb).json()["email"] == "b@example.com"
    register(db_client, "a@example.com")  # the email is free again


def test_user_a_cannot_reach_user_b(db_client: TestClient) -> None:
    a, ha, b, hb = _two_users(db_client)
    b_before = _user_row(db_client, b["id"])
    # "me" is always the token's user
    assert db_client.get("/v1/users/me", headers=ha).json()["id"] == a["id"]
    # there is no per-id user route outside admin
    for method in ("GET", "PATCH", "DELETE"):
        assert db_client.request(method, f"/v1/users/{b['id']}", headers=ha,
                                 json={}).status_code in (404, 405)
    # admin routes are closed to a user
    assert db_client.get(f"/v1/admin/users/{b['id']}", headers=ha).status_code == 403
    assert db_client.get("/v1/admin/users", headers=ha).status_code == 403
    resp = db_client.patch(f"/v1/admin/users/{b['id']}", headers=ha, json={"is_active": False})
    assert resp.status_code == 403
    # an id smuggled into my own profile update is refused
    resp = db_client.patch("/v1/users/me", headers=ha, json={"id": b["id"], "full_name": "pwn"})
    assert resp.status_code == 422
    # A's account changes never touch B
    assert db_client.patch("/v1/users/me", headers=ha, json={"full_name": "A2"}).status_code == 200
    assert db_client.post("/v1/users/me/webhook-secret", headers=ha).status_code == 201
    assert db_client.post("/v1/auth/logout-all", headers=ha).status_code == 204
    b_after = _user_row(db_client, b["id"])
    for col in ("full_name", "webhook_secret", "token_version", "role", "is_active",
                "password_hash"):
        assert getattr(b_after, col) == getattr(b_before, col), col
    assert db_client.get("/v1/users/me", headers=hb).json()["full_name"] == "B"
