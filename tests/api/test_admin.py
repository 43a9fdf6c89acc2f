"""``/v1/admin/users`` and the ``miraikakaku users``/``db`` commands on SQLite and PostgreSQL:
every role check (anonymous 401; user and analyst 403; admin 200), keyset pages, role and
active-flag changes that take effect at once, the last-admin guard, and the first admin created
from the command line.

Run: ``.venv/bin/python -m pytest tests/api/test_admin.py -q``.
"""

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from miraikakaku import cli
from miraikakaku.settings import Settings
from serving.app.db import Database
from serving.app.models import Role, User
from tests.api.conftest import TEST_PASSWORD, auth, bearer, ensure_user, login, register

pytestmark = pytest.mark.api

ROUTES = [("GET", "/v1/admin/users", None), ("GET", "/v1/admin/users/{id}", None),
          ("PATCH", "/v1/admin/users/{id}", {"role": "analyst"})]


def _headers(client: TestClient, role: str | None) -> dict[str, str]:
    if role is None:
        return {}
    user = ensure_user(client.app.state.db, f"{role}@example.com", role)
    return bearer(client.app.state.settings, user)


@pytest.mark.parametrize("role,expected", [(None, 401), ("user", 403), ("analyst", 403),
                                           ("admin", 200)])
def test_every_admin_route_checks_the_role(db_client: TestClient, role: str | None,
                                           expected: int) -> None:
    target = ensure_user(db_client.app.state.db, "target@example.com", Role.user)
    ensure_user(db_client.app.state.db, "spare-admin@example.com", Role.admin)
    headers = _headers(db_client, role)
    for method, path, body in ROUTES:
        resp = db_client.request(method, path.format(id=target.id), headers=headers, json=body)
        assert resp.status_code == expected, (method, path, resp.text)
        if expected != 200:
            code = "unauthorized" if expected == 401 else "forbidden"
            assert resp.json()["error"]["code"] == code
    with db_client.app.state.db.session() as s:
        assert s.get(User, target.id).role == ("analyst" if role == "admin" else "user")


def test_list_pages_with_a_cursor(db_client: TestClient) -> None:
    admin = ensure_user(db_client.app.state.db, "admin@example.com", Role.admin)
    h = bearer(db_client.app.state.settings, admin)
    for i in range(6):
        ensure_user(db_client.app.state.db, f"u{i}@example.com",
                    Role.analyst if i % 3 == 0 else Role.user)
    seen, cursor, pages = [], None, 0
    while True:
        params = {"limit": 3} | ({"cursor": cursor} if cursor else {})
        body = db_client.get("/v1/admin/users", headers=h, params=params).json()
        pages += 1
        assert body["count"] == len(body["data"]) <= 3
        seen += [u["id"] for u in body["data"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert pages == 3 and seen == sorted(seen) and len(seen) == len(set(seen)) == 7
    analysts = db_client.get("/v1/admin/users", headers=h, params={"role": "analyst"}).json()
    assert [u["email"] for u in analysts["data"]] == ["u0@example.com", "u3@example.com"]
    assert "password_hash" not in str(analysts) and "token_version" not in str(analysts)
    for bad in ({"cursor": "abc"}, {"cursor": "-1"}, {"limit": 0}, {"role": "root"}):
        assert db_client.get("/v1/admin/users", headers=h, params=bad).status_code == 422, bad
    assert db_client.get("/v1/admin/users/999999", headers=h).status_code == 404
    assert db_client.get("/v1/admin/users/0", headers=h).status_code == 422


def test_role_and_active_changes_apply_at_once(db_client: TestClient) -> None:
    admin = ensure_user(db_client.app.state.db, "admin@example.com", Role.admin)
    h = bearer(db_client.app.state.settings, admin)
    user = register(db_client, "taro@example.com")
    tokens = login(db_client, "taro@example.com")
    assert db_client.get("/v1/admin/users", headers=auth(tokens)).status_code == 403

    resp = db_client.patch(f"/v1/admin/users/{user['id']}", headers=h, json={"role": "admin"})
    assert resp.status_code == 200 and resp.json()["role"] == "admin"
    # the same access token now passes: the role is read from the database, not the token
    assert db_client.get("/v1/admin/users", headers=auth(tokens)).status_code == 200

    resp = db_client.patch(f"/v1/admin/users/{user['id']}", headers=h,
                           json={"role": "user", "is_active": False})
    assert resp.status_code == 200 and resp.json()["is_active"] is False
    assert db_client.get("/v1/users/me", headers=auth(tokens)).status_code == 401
    assert db_client.post("/v1/auth/refresh",
                          json={"refresh_token": tokens["refresh_token"]}).status_code == 401
    resp = db_client.post("/v1/auth/login", data={"username": "taro@example.com",
                                                  "password": TEST_PASSWORD})
    assert resp.status_code == 401
    db_client.patch(f"/v1/admin/users/{user['id']}", headers=h, json={"is_active": True})
    login(db_client, "taro@example.com")

    for bad in ({"role": "root"}, {"role": None}, {"is_active": None}, {"email": "x@y.z"},
                {"token_version": 0}, {"password": "0123456789"}):
        resp = db_client.patch(f"/v1/admin/users/{user['id']}", headers=h, json=bad)
        assert resp.status_code == 422, bad
    assert db_client.patch("/v1/admin/users/999999", headers=h,
                           json={"role": "user"}).status_code == 404


def test_the_last_active_admin_cannot_be_demoted(db_client: TestClient) -> None:
    admin = ensure_user(db_client.app.state.db, "admin@example.com", Role.admin)
    h = bearer(db_client.app.state.settings, admin)
    for body in ({"role": "user"}, {"is_active": False}):
        resp = db_client.patch(f"/v1/admin/users/{admin.id}", headers=h, json=body)
        assert resp.status_code == 409 and resp.json()["error"]["code"] == "conflict"
    other = ensure_user(db_client.app.state.db, "admin2@example.com", Role.admin)
    resp = db_client.patch(f"/v1/admin/users/{admin.id}", headers=h, json={"role": "analyst"})
    assert resp.status_code == 200
    h2 = bearer(db_client.app.state.settings, other)
    assert db_client.patch(f"/v1/admin/users/{other.id}", headers=h2,
                           json={"role": "user"}).status_code == 409


def test_cli_creates_the_first_admin_and_sets_roles(app_db_url: str, tmp_path, monkeypatch,
                                                    capsys) -> None:
    monkeypatch.setenv("MIRAIKAKAKU_DATABASE_URL", app_db_url)
    monkeypatch.setenv("MIRAIKAKAKU_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("MIRAIKAKAKU_ADMIN_PASSWORD", "first admin password")
    from miraikakaku import settings as settings_module

    settings_module.get_settings.cache_clear()
    try:
        assert Settings().app_database_url == app_db_url
        assert cli.main(["db", "upgrade"]) == 0
        assert cli.main(["users", "create-admin", "--email", "Root@Example.com"]) == 0
        db = Database(app_db_url)
        with db.session() as s:
            root = s.scalar(select(User).where(User.email == "root@example.com"))
            assert root.role == "admin"
        ensure_user(db, "hanako@example.com", Role.user)
        assert cli.main(["users", "set-role", "hanako@example.com", "analyst"]) == 0
        assert cli.main(["users", "set-role", "nobody@example.com", "analyst"]) == 1
        assert cli.main(["users", "set-role", "root@example.com", "user"]) == 1  # last admin
        with db.session() as s:
            roles = dict(s.execute(select(User.email, User.role)).all())
        assert roles == {"root@example.com": "admin", "hanako@example.com": "analyst"}
        db.close()
        out = capsys.readouterr()
        assert "created admin root@example.com" in out.out
        assert "last active admin" in out.err and "first admin password" not in out.out
    finally:
        settings_module.get_settings.cache_clear()
