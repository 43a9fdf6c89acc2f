"""The main job end to end on ~20 real symbols (US and Tokyo): train, run, then read via the API.

The full-size run (all 404 S&P 500 tickers plus the Tokyo file) is the demo (`make demo`),
measured, not a test.
"""

from __future__ import annotations

import sqlite3

import pytest
from fastapi.testclient import TestClient

from models.registry import latest_version
from models.training import train
from pipelines.prices import run
from serving.app.main import create_app
from tests.api.tokens import auth_header, make_user_token
from tests.conftest import JP, SP500, read_rows, write_csv

pytestmark = pytest.mark.e2e

US = {"AAPL", "MSFT", "IBM", "JPM", "XOM", "GE", "KO", "NVDA", "AMZN", "GOOG", "LNT", "NWL",
      "CHD", "DHR"}
JPS = {"7203.T", "6758.T", "9984.T", "8306.T", "1321.T", "N225"}


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    from miraikakaku.settings import Settings

    tmp = tmp_path_factory.mktemp("e2e")
    settings = Settings(data_dir=tmp / "var")
    uh, us = read_rows(SP500, US)
    jh, jp = read_rows(JP, JPS)
    jp = [r for r in jp if r[1] >= "2012-01-01"]
    inputs = [write_csv(tmp / "us_daily_sp500_5yr_2013_2018.csv", uh, us),
              write_csv(tmp / "jp_daily.csv", jh, jp)]
    mv = train(inputs, settings=settings, epochs=1, max_train_examples=20_000, progress=False)
    argv = [a for p in inputs for a in ("--input", str(p))] + ["--source", "sp500_5yr"]
    summary = run(argv, settings=settings)
    return settings, summary, mv, us, jp


def test_every_event_is_accounted_for(job):
    settings, summary, _, us, jp = job
    assert summary.events_read == len(us) + len(jp)
    assert summary.reconciled
    conn = sqlite3.connect(settings.store_path)
    assert conn.execute("SELECT count(*) FROM bars").fetchone()[0] == summary.bars_stored
    dl = conn.execute("SELECT count(*) FROM dead_letters WHERE step != 'RunInference'")
    assert dl.fetchone()[0] == summary.parse_dead_letters + summary.validation_dead_letters
    # real anomalies of the data are where the README says they are
    reasons = summary.dead_letters_by_reason
    assert reasons.get("ParseEvents:missing_field", 0) >= 1      # DHR 2015-07-17 empty open
    assert reasons.get("ParseEvents:bad_number", 0) >= 1         # TSE outage 2020-10-01 #VALUE!
    assert summary.flags_by_name.get("ohlc_inconsistent", 0) >= 1  # CHD 2014-05-19
    assert summary.flags_by_name.get("large_move", 0) >= 1         # NWL 2017-09-14, LNT 2016-05-19


def test_predictions_carry_the_model_version_and_cover_every_window(job):
    settings, summary, mv, _, _ = job
    assert latest_version(settings.model_dir).version == mv.version == "1"
    assert summary.predictions == summary.windows - summary.inference_dead_letters
    assert summary.predictions > 20_000
    conn = sqlite3.connect(settings.store_path)
    versions = conn.execute("SELECT DISTINCT model_name, model_version FROM predictions").fetchall()
    assert versions == [(settings.model_name, mv.version)]
    bad = conn.execute("SELECT count(*) FROM predictions WHERE abs(predicted_price / base_price "
                       "- exp(predicted_log_return)) > 1e-9").fetchone()[0]
    assert bad == 0


def test_api_answers_quote_bars_and_predictions(job):
    settings, _, mv, us, jp = job
    with TestClient(create_app(settings)) as client:
        _, token = make_user_token(client.app, email="analyst@example.com", role="analyst")
        client.headers.update(auth_header(token))
        _check_market_routes(client, mv, us, jp)


def _check_market_routes(client: TestClient, mv, us, jp) -> None:
    last_aapl = max((r for r in us if r[0] == "AAPL"), key=lambda r: r[1])
    q = client.get("/v1/symbols/AAPL/quote").json()
    assert q["session_date"] == last_aapl[1] and q["close"] == float(last_aapl[5])
    assert q["instrument_id"] == "XNAS:AAPL" and q["currency"] == "USD"
    q = client.get("/v1/symbols/7203.T/quote").json()
    last_chart0 = max((r for r in jp if r[0] == "7203.T" and r[8] == "chart0"
                       and r[5] != "#VALUE!"), key=lambda r: r[1])
    assert (q["instrument_id"], q["source"], q["session_date"], q["close"]) == \
        ("XTKS:7203", "chart0", last_chart0[1], float(last_chart0[5]))
    bars = client.get("/v1/symbols/XTKS:7203/bars", params={"start": "2018-01-01",
                                                            "end": "2018-01-31"}).json()
    expected = sorted(r[1] for r in jp if r[0] == "7203.T" and r[8] == "chart0"
                      and "2018-01-01" <= r[1] <= "2018-01-31")
    assert [b["session_date"] for b in bars["data"]] == expected
    preds = client.get("/v1/symbols/AAPL/predictions", params={"start": "2018-01-01"}).json()
    assert preds["count"] > 0
    assert {p["model_version"] for p in preds["data"]} == {mv.version}
    assert client.get("/v1/symbols/NOPE/quote").status_code == 404


def test_newcomer_flow_rule_to_inbox_and_sse(job):
    """The README's notification walk-through on the main job's output: register and log in
    over HTTP (a real uvicorn server), create an alert rule, open the SSE stream, run the
    notifier over the outbox the pipeline run wrote, and see the notification arrive on the
    stream and in the inbox."""
    import json
    import threading
    import time

    import httpx
    import uvicorn

    from notifier.service import run_notifier
    from tests.emulators import free_port

    settings, _, _, us, _ = job
    # AAPL's close crossed 150 upwards in the job's input (checked on the raw rows)
    level = 150.0
    closes = [float(r[5]) for r in sorted((r for r in us if r[0] == "AAPL"), key=lambda r: r[1])]
    assert any(a < level < b for a, b in zip(closes, closes[1:], strict=False))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    received: list[dict] = []
    try:
        for _ in range(200):
            if server.started:
                break
            time.sleep(0.05)
        with httpx.Client(base_url=base, timeout=10) as http:
            r = http.post("/v1/auth/register", json={"email": "newcomer@example.com",
                                                    "password": "a long passphrase 42",
                                                    "locale": "ja"})
            assert r.status_code == 201, r.text
            login = http.post("/v1/auth/login", data={"username": "newcomer@example.com",
                                                      "password": "a long passphrase 42"})
            assert login.status_code == 200, login.text
            tok = login.json()
            auth = {"Authorization": f"Bearer {tok['access_token']}"}
            rule = http.post("/v1/alert-rules", headers=auth, json={
                "name": "AAPL crosses up", "symbol": "AAPL", "kind": "price_above",
                "params": {"level": level}, "channels": ["inbox"]})
            assert rule.status_code == 201, rule.text

            def listen() -> None:
                with httpx.stream("GET", f"{base}/v1/notifications/stream", headers=auth,
                                  timeout=60) as resp:
                    for line in resp.iter_lines():
                        if line.startswith("data:"):
                            received.append(json.loads(line[5:]))
                            return

            listener = threading.Thread(target=listen, daemon=True)
            listener.start()
            time.sleep(1.0)  # the stream is open before the notifier writes
            summary = run_notifier(settings, once=True)
            assert summary.notified >= 1
            listener.join(timeout=30)
            assert received, "no notification arrived on the SSE stream"
            first = received[0]
            assert first["instrument_id"] == "XNAS:AAPL" and first["kind"] == "price_above"
            assert "AAPL" in first["title"] and first["locale"] == "ja"
            inbox = http.get("/v1/notifications", headers=auth).json()
            assert inbox["count"] == min(summary.notified, 50)  # the first page
            assert http.get("/v1/notifications/unread-count",
                            headers=auth).json()["count"] == summary.notified
    finally:
        server.should_exit = True
        thread.join(timeout=10)
