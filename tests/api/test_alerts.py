"""Read-API tests for ``GET /v1/alerts``: filters by symbol and time, ordering, bad input.

Run: ``pytest tests/api/test_alerts.py -q``.
"""

import datetime as dt

import pytest
from fastapi.testclient import TestClient

pytestmark = pytest.mark.api


def _ids(resp) -> list[str]:
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["count"] == len(body["data"])
    return [a["alert_id"] for a in body["data"]]


def _newest_first(alerts) -> list[str]:
    return [a.alert_id for a in sorted(alerts, key=lambda a: (-a.event_time.timestamp(),
                                                               a.alert_id))]


def test_all_alerts_newest_first(client: TestClient, api_data) -> None:
    body = client.get("/v1/alerts").json()
    assert [a["alert_id"] for a in body["data"]] == _newest_first(api_data.alerts)
    first = body["data"][0]
    want = next(a for a in api_data.alerts if a.alert_id == first["alert_id"])
    assert first == {"alert_id": want.alert_id, "rule_id": want.rule_id, "kind": want.kind,
                     "instrument_id": want.instrument_id,
                     "event_time": want.event_time.isoformat(),
                     "session_date": want.session_date.isoformat(), "value": want.value,
                     "threshold": want.threshold, "message": want.message}
    assert first["event_time"].endswith("+00:00")


@pytest.mark.parametrize(("symbol", "instrument_id"), [
    ("AAPL", "XNAS:AAPL"), ("aapl", "XNAS:AAPL"), ("xtks:7203", "XTKS:7203"),
    ("7203.T", "XTKS:7203"), ("MSFT", "XNAS:MSFT")])
def test_alerts_by_symbol(client: TestClient, api_data, symbol: str, instrument_id: str) -> None:
    want = _newest_first(a for a in api_data.alerts if a.instrument_id == instrument_id)
    assert _ids(client.get("/v1/alerts", params={"symbol": symbol})) == want


def test_alerts_since(client: TestClient, api_data) -> None:
    aapl = sorted((a for a in api_data.alerts if a.instrument_id == "XNAS:AAPL"),
                  key=lambda a: a.event_time)
    cut = aapl[1].event_time  # the middle AAPL alert (UTC session close)
    want = _newest_first(a for a in api_data.alerts if a.event_time >= cut)
    aware = cut.isoformat()
    naive = cut.replace(tzinfo=None).isoformat()
    tokyo = cut.astimezone(dt.timezone(dt.timedelta(hours=9))).isoformat()
    zulu = cut.strftime("%Y-%m-%dT%H:%M:%SZ")
    for since in (aware, naive, tokyo, zulu):
        assert _ids(client.get("/v1/alerts", params={"since": since})) == want, since
    just_after = (cut + dt.timedelta(microseconds=1)).isoformat()
    assert aapl[1].alert_id not in _ids(client.get("/v1/alerts", params={"since": just_after}))
    future = _ids(client.get("/v1/alerts", params={"since": "2100-01-01T00:00:00Z"}))
    assert future == []


def test_alerts_limit(client: TestClient, api_data) -> None:
    want = _newest_first(api_data.alerts)[:2]
    assert _ids(client.get("/v1/alerts", params={"limit": 2})) == want
    for bad in ("0", "1001", "x"):
        resp = client.get("/v1/alerts", params={"limit": bad})
        assert resp.status_code == 422 and resp.json()["error"]["code"] == "invalid_request"


def test_alerts_unknown_symbol_is_404(client: TestClient) -> None:
    resp = client.get("/v1/alerts", params={"symbol": "NOPE"})
    assert resp.status_code == 404
    assert resp.json()["error"]["code"] == "not_found"


@pytest.mark.parametrize("since", ["not-a-date", "2018-02-30T00:00:00", "2018-02-07T25:00:00",
                                   "9999-12-31T23:00:00-14:00", "0001-01-01T00:00:00+14:00", ""])
def test_alerts_bad_since_is_422(client: TestClient, since: str) -> None:
    resp = client.get("/v1/alerts", params={"since": since})
    assert resp.status_code == 422, resp.text
    err = resp.json()["error"]
    assert err["code"] == "invalid_request" and err["details"][0]["loc"] == ["query", "since"]


@pytest.mark.parametrize("symbol", ["", "x" * 65])
def test_alerts_bad_symbol_is_422(client: TestClient, symbol: str) -> None:
    resp = client.get("/v1/alerts", params={"symbol": symbol})
    assert resp.status_code == 422
    assert resp.json()["error"]["code"] == "invalid_request"
