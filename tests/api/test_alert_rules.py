"""``/v1/alert-rules``: CRUD of a user's own rules, per-kind validation, cross-user isolation.

Runs on SQLite and PostgreSQL application databases (``db_client``) over the real-data store.
Run: ``.venv/bin/python -m pytest -q tests/api/test_alert_rules.py``.
"""

from __future__ import annotations

import pytest

from serving.app.models import Role
from tests.api.conftest import bearer, ensure_user

pytestmark = pytest.mark.api


@pytest.fixture()
def users(db_client):
    app = db_client.app
    alice = ensure_user(app.state.db, "alice@example.com", Role.user)
    bob = ensure_user(app.state.db, "bob@example.com", Role.analyst)
    return bearer(app.state.settings, alice), bearer(app.state.settings, bob)


def create(client, headers, **body):
    body = {"symbol": "AAPL", "kind": "price_above", "params": {"level": 170}, **body}
    return client.post("/v1/alert-rules", json=body, headers=headers)


def test_create_resolves_the_symbol_and_lists_only_my_rules(db_client, users):
    alice, bob = users
    r = create(db_client, alice, channels=["email", "email"], cooldown_seconds=60)
    assert r.status_code == 201, r.text
    rule = r.json()
    assert rule["instrument_id"] == "XNAS:AAPL" and rule["kind"] == "price_above"
    assert rule["params"] == {"level": 170.0} and rule["channels"] == ["email", "inbox"]
    assert rule["enabled"] is True and rule["last_fired_at"] is None
    assert rule["created_at"].endswith(("Z", "+00:00"))  # UTC
    r2 = create(db_client, alice, symbol="xtks:7203", kind="pct_move",
                params={"threshold": 0.05, "window": 5})
    assert r2.status_code == 201 and r2.json()["instrument_id"] == "XTKS:7203"
    create(db_client, bob, kind="market_alert", params={})
    mine = db_client.get("/v1/alert-rules", headers=alice).json()
    assert mine["count"] == 2 and [x["id"] for x in mine["data"]] == [rule["id"],
                                                                     r2.json()["id"]]
    assert db_client.get("/v1/alert-rules", headers=bob).json()["count"] == 1
    assert db_client.get(f"/v1/alert-rules/{rule['id']}", headers=alice).json() == rule


def test_unknown_symbol_is_404(db_client, users):
    r = create(db_client, users[0], symbol="NOPE")
    assert r.status_code == 404 and r.json()["error"]["code"]


@pytest.mark.parametrize("body", [
    {"kind": "price_above", "params": {"threshold": 0.1}},          # wrong params for the kind
    {"kind": "price_below", "params": {"level": -5}},
    {"kind": "pct_move", "params": {"threshold": 0.05, "window": 0}},
    {"kind": "pct_move", "params": {"threshold": 0.05, "window": 1000}},
    {"kind": "volume_spike", "params": {"multiplier": 0.5}},
    {"kind": "predicted_move", "params": {}},
    {"kind": "market_alert", "params": {"alert_kinds": ["moon"]}},
    {"kind": "teleport", "params": {}},
    {"kind": "price_above", "params": {"level": 1}, "channels": ["sms"]},
    {"kind": "price_above", "params": {"level": 1}, "cooldown_seconds": -1},
    {"kind": "price_above", "params": {"level": 1}, "user_id": 1},
])
def test_params_are_validated_per_kind(db_client, users, body):
    r = create(db_client, users[0], **body)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"]


def test_update_validates_params_for_the_rules_kind_and_delete(db_client, users):
    alice, _ = users
    rule = create(db_client, alice, kind="volume_spike",
                  params={"multiplier": 3, "window": 20}).json()
    url = f"/v1/alert-rules/{rule['id']}"
    r = db_client.patch(url, json={"params": {"multiplier": 4}, "enabled": False,
                                   "name": "big volume"}, headers=alice)
    assert r.status_code == 200, r.text
    assert r.json()["params"] == {"multiplier": 4.0, "window": 20}
    assert r.json()["enabled"] is False and r.json()["name"] == "big volume"
    assert db_client.patch(url, json={"params": {"level": 3}}, headers=alice).status_code == 422
    assert db_client.patch(url, json={"kind": "pct_move"}, headers=alice).status_code == 422
    assert db_client.delete(url, headers=alice).status_code == 204
    assert db_client.get(url, headers=alice).status_code == 404


def test_another_users_rule_is_404_for_every_verb(db_client, users):
    alice, bob = users
    rule = create(db_client, alice).json()
    url = f"/v1/alert-rules/{rule['id']}"
    assert db_client.get(url, headers=bob).status_code == 404
    assert db_client.patch(url, json={"enabled": False}, headers=bob).status_code == 404
    assert db_client.delete(url, headers=bob).status_code == 404
    assert db_client.get(url, headers=alice).json()["enabled"] is True  # untouched
    assert db_client.get("/v1/alert-rules/999999", headers=alice).status_code == 404


def test_rules_need_a_login(db_client):
    assert db_client.get("/v1/alert-rules").status_code == 401
    assert db_client.post("/v1/alert-rules", json={}).status_code in (401, 422)
