"""Auth flows on SQLite and PostgreSQL: register, log in, refresh (rotation, reuse detection),
log out, log out everywhere, and the access tokens that must be refused (expired, forged,
``alg: none``, HS/RS confusion, revoked, of a deleted user).

Run: ``.venv/bin/python -m pytest tests/api/test_auth.py -q``.
"""

import base64
import datetime as dt
import hashlib
import hmac
import json

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi.testclient import TestClient
from sqlalchemy import select

from serving.app import accounts
from serving.app.models import RefreshToken, Role, User
from tests.api.conftest import TEST_PASSWORD, auth, bearer, ensure_user, login, register

pytestmark = pytest.mark.api


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _claims(user_id: int, **over: object) -> dict:
    now = dt.datetime.now(dt.timezone.utc)
    claims = {"sub": str(user_id), "role": "admin", "tv": 0, "typ": "access",
              "iat": int(now.timestamp()), "exp": int((now + dt.timedelta(minutes=15)).timestamp())}
    claims.update(over)
    return claims


def _hs256_by_hand(claims: dict, key: bytes, alg: str = "HS256") -> str:
    head = _b64(json.dumps({"alg": alg, "typ": "JWT"}).encode())
    body = _b64(json.dumps(claims).encode())
    sig = hmac.new(key, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{_b64(sig)}"


def _me(client: TestClient, token: str):
    return client.get("/v1/users/me", headers={"Authorization": f"Bearer {token}"})


def _assert_401(resp) -> dict:
    assert resp.status_code == 401, resp.text
    assert resp.headers["www-authenticate"] == "Bearer"
    body = resp.json()
    assert body["error"]["code"] == "unauthorized"
    return body


def _refresh(client: TestClient, token: str):
    return client.post("/v1/auth/refresh", json={"refresh_token": token})


def test_register_login_use_refresh_logout(db_client: TestClient) -> None:
    user = register(db_client, "Hanako@Example.com", full_name="山田 花子", locale="ja")
    assert user["email"] == "hanako@example.com" and user["role"] == "user"
    assert user["full_name"] == "山田 花子" and user["locale"] == "ja"
    assert not {"password", "password_hash", "token_version", "webhook_secret"} & set(user)

    tokens = login(db_client, "HANAKO@example.com")
    assert tokens["token_type"] == "bearer"
    settings = db_client.app.state.settings
    assert tokens["expires_in"] == int(settings.access_token_minutes * 60)
    assert db_client.get("/v1/users/me", headers=auth(tokens)).json()["id"] == user["id"]
    assert db_client.get("/v1/symbols/AAPL/quote", headers=auth(tokens)).status_code == 200

    new = _refresh(db_client, tokens["refresh_token"])
    assert new.status_code == 200, new.text
    new = new.json()
    assert new["refresh_token"] != tokens["refresh_token"]
    assert new["access_token"] != tokens["access_token"]
    assert db_client.get("/v1/users/me", headers=auth(new)).status_code == 200

    with db_client.app.state.db.session() as s:
        old = s.scalar(select(RefreshToken).where(
            RefreshToken.token_hash == accounts.hash_refresh_token(tokens["refresh_token"])))
        nxt = s.scalar(select(RefreshToken).where(
            RefreshToken.token_hash == accounts.hash_refresh_token(new["refresh_token"])))
        assert old.used_at is not None and old.replaced_by == nxt.id
        assert old.family_id == nxt.family_id and nxt.used_at is None

    assert db_client.post("/v1/auth/logout",
                          json={"refresh_token": new["refresh_token"]}).status_code == 204
    _assert_401(_refresh(db_client, new["refresh_token"]))
    _assert_401(db_client.post("/v1/auth/logout", json={"refresh_token": "never-issued"}))


def test_register_conflict_and_password_policy(db_client: TestClient) -> None:
    register(db_client, "taro@example.com")
    resp = db_client.post("/v1/auth/register",
                          json={"email": "TARO@example.com", "password": "another password 1"})
    assert resp.status_code == 409 and resp.json()["error"]["code"] == "conflict"
    resp = db_client.post("/v1/auth/register", json={"email": "jiro@example.com",
                                                     "password": "123456789"})
    assert resp.status_code == 422
    assert resp.json()["error"]["details"][0]["loc"] == ["body", "password"]
    resp = db_client.post("/v1/auth/register", json={"email": "not-an-email",
                                                     "password": TEST_PASSWORD})
    assert resp.status_code == 422
    register(db_client, "jiro@example.com", "1234567890")  # exactly 10 is enough


def test_wrong_credentials_are_one_401(db_client: TestClient) -> None:
    register(db_client, "taro@example.com")
    wrong_pw = db_client.post("/v1/auth/login", data={"username": "taro@example.com",
                                                      "password": "wrong password!"})
    unknown = db_client.post("/v1/auth/login", data={"username": "nobody@example.com",
                                                     "password": TEST_PASSWORD})
    assert _assert_401(wrong_pw) == _assert_401(unknown)
    assert "email or password" in wrong_pw.json()["error"]["message"]
    for username, password in (("taro\x00@example.com", TEST_PASSWORD),
                               ("taro@example.com", "x" * 10_000), ("x" * 300, TEST_PASSWORD)):
        resp = db_client.post("/v1/auth/login", data={"username": username,
                                                      "password": password})
        assert _assert_401(resp) == _assert_401(unknown)
    resp = db_client.post("/v1/auth/register", json={"email": "nul@example.com",
                                                     "password": TEST_PASSWORD,
                                                     "full_name": "a\x00b"})
    assert resp.status_code == 422


def test_market_routes_need_login_but_healthz_does_not(db_client: TestClient) -> None:
    assert db_client.get("/healthz").status_code == 200
    for path in ("/v1/symbols", "/v1/symbols/AAPL", "/v1/symbols/AAPL/quote",
                 "/v1/symbols/AAPL/bars", "/v1/symbols/AAPL/predictions", "/v1/alerts",
                 "/v1/models", "/v1/users/me", "/v1/admin/users"):
        _assert_401(db_client.get(path))
        _assert_401(db_client.get(path, headers={"Authorization": "Bearer not.a.jwt"}))
    register(db_client, "taro@example.com")
    tokens = login(db_client, "taro@example.com")
    for path in ("/v1/symbols", "/v1/symbols/AAPL/bars", "/v1/alerts", "/v1/models"):
        assert db_client.get(path, headers=auth(tokens)).status_code == 200, path


def test_expired_access_token(db_client: TestClient) -> None:
    user = ensure_user(db_client.app.state.db, "taro@example.com")
    settings = db_client.app.state.settings
    past = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=settings.access_token_minutes,
                                                           seconds=5)
    expired = bearer(settings, user, now=past)
    body = _assert_401(db_client.get("/v1/users/me", headers=expired))
    assert "expired" in body["error"]["message"]
    fresh = bearer(settings, user)
    assert db_client.get("/v1/users/me", headers=fresh).status_code == 200


def test_forged_none_and_algorithm_confusion_tokens(db_client: TestClient) -> None:
    user = ensure_user(db_client.app.state.db, "taro@example.com")
    claims = _claims(user.id)

    # signed with another key
    forged = jwt.encode(claims, "another-secret-key-that-is-long-enough-32", algorithm="HS256")
    _assert_401(_me(db_client, forged))

    # alg: none, no signature
    head = _b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    none_token = f"{head}.{_b64(json.dumps(claims).encode())}."
    _assert_401(_me(db_client, none_token))
    none_pyjwt = jwt.encode(claims, None, algorithm="none")
    _assert_401(_me(db_client, none_pyjwt))

    # HS/RS confusion: an RS256 token, and an HS256 token keyed with the RSA public key (PEM)
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    rs256 = jwt.encode(claims, private, algorithm="RS256")
    _assert_401(_me(db_client, rs256))
    confused = _hs256_by_hand(claims, public_pem)
    _assert_401(_me(db_client, confused))

    # control: the same hand-made HS256 with the real key passes, so the refusals above are
    # about the key and algorithm, not the hand-made encoding
    real = db_client.app.state.settings.secret_key.get_secret_value().encode()
    assert _me(db_client, _hs256_by_hand(claims, real)).status_code == 200
    # ... and a claim the server requires removed, or a token of another type, is refused
    no_exp = {k: v for k, v in claims.items() if k != "exp"}
    _assert_401(_me(db_client, _hs256_by_hand(no_exp, real)))
    _assert_401(_me(db_client, _hs256_by_hand({**claims, "typ": "refresh"}, real)))
    _assert_401(_me(db_client, _hs256_by_hand({**claims, "sub": "999999"}, real)))


def test_role_in_token_is_not_trusted(db_client: TestClient) -> None:
    user = ensure_user(db_client.app.state.db, "taro@example.com", Role.user)
    real = db_client.app.state.settings.secret_key.get_secret_value().encode()
    token = _hs256_by_hand(_claims(user.id, role="admin"), real)  # claims admin, is user
    resp = db_client.get("/v1/admin/users", headers={"Authorization": f"Bearer {token}"})
    assert resp.status_code == 403


def test_logout_all_revokes_access_and_refresh_tokens(db_client: TestClient) -> None:
    register(db_client, "taro@example.com")
    a = login(db_client, "taro@example.com")
    b = login(db_client, "taro@example.com")  # a second device
    assert db_client.post("/v1/auth/logout-all", headers=auth(a)).status_code == 204
    for tokens in (a, b):
        body = _assert_401(db_client.get("/v1/users/me", headers=auth(tokens)))
        assert "revoked" in body["error"]["message"]
        _assert_401(_refresh(db_client, tokens["refresh_token"]))
    _assert_401(db_client.post("/v1/auth/logout-all", headers=auth(a)))
    c = login(db_client, "taro@example.com")  # logging in again works
    assert db_client.get("/v1/users/me", headers=auth(c)).status_code == 200


def test_password_change_revokes_tokens(db_client: TestClient) -> None:
    register(db_client, "taro@example.com")
    tokens = login(db_client, "taro@example.com")
    resp = db_client.post("/v1/users/me/password", headers=auth(tokens),
                          json={"current_password": TEST_PASSWORD,
                                "new_password": "a brand new passphrase"})
    assert resp.status_code == 204, resp.text
    _assert_401(db_client.get("/v1/users/me", headers=auth(tokens)))
    _assert_401(_refresh(db_client, tokens["refresh_token"]))
    _assert_401(db_client.post("/v1/auth/login", data={"username": "taro@example.com",
                                                       "password": TEST_PASSWORD}))
    login(db_client, "taro@example.com", "a brand new passphrase")


def test_refresh_token_reuse_revokes_the_family(db_client: TestClient) -> None:
    register(db_client, "taro@example.com")
    first = login(db_client, "taro@example.com")
    other = login(db_client, "taro@example.com")  # another login: its own family
    second = _refresh(db_client, first["refresh_token"]).json()
    third = _refresh(db_client, second["refresh_token"]).json()

    # a thief replays the first token: 401, and the whole family is revoked ...
    body = _assert_401(_refresh(db_client, first["refresh_token"]))
    assert "reused" in body["error"]["message"]
    # ... so the legitimate newest token fails too
    _assert_401(_refresh(db_client, third["refresh_token"]))
    with db_client.app.state.db.session() as s:
        fam = s.scalar(select(RefreshToken.family_id).where(
            RefreshToken.token_hash == accounts.hash_refresh_token(first["refresh_token"])))
        rows = s.scalars(select(RefreshToken).where(RefreshToken.family_id == fam)).all()
        assert len(rows) == 3 and all(r.revoked_at is not None for r in rows)
    # the other login is untouched
    assert _refresh(db_client, other["refresh_token"]).status_code == 200


def test_expired_and_revoked_refresh_tokens(db_client: TestClient) -> None:
    db = db_client.app.state.db
    settings = db_client.app.state.settings
    user = ensure_user(db, "taro@example.com")
    old = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=settings.refresh_token_days,
                                                          seconds=1)
    with db.session() as s:
        pair, _ = accounts.issue_tokens(s, s.get(User, user.id), settings, now=old)
    body = _assert_401(_refresh(db_client, pair.refresh_token))
    assert "reused" not in body["error"]["message"]
    fresh = login(db_client, "taro@example.com")
    assert db_client.post("/v1/auth/logout",
                          json={"refresh_token": fresh["refresh_token"]}).status_code == 204
    _assert_401(_refresh(db_client, fresh["refresh_token"]))
    resp = db_client.post("/v1/auth/refresh", json={"refresh_token": fresh["refresh_token"],
                                                    "user_id": 1})
    assert resp.status_code == 422  # unknown fields are refused here too
