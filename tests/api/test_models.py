"""Read-API tests for ``/v1/models`` and ``/v1/models/{version}/performance``.

The store holds the real bars of AAPL, MSFT (S&P 500 file) and 7203.T (chart0, mlbot) and
"momentum" predictions (the previous session's log return) of two model versions; the batch
tracking job (``track_store``) fills ``model_performance`` from them. Expected errors are
computed here with pandas straight from the CSV files. The registry holds two versions' metadata
files (``miraikakaku_model.json``, the registry's format; the routes only read metadata).
Run: ``pytest tests/api/test_models.py -q``.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from miraikakaku.settings import Settings
from miraikakaku.tracking import track_store
from models.registry import METADATA_FILE
from serving.app.main import create_app
from stores.sqlite import SqliteServingStore
from tests.api.conftest import US_FILE, authorize, instrument, load_real_events
from tests.unit.test_tracking import momentum_predictions

pytestmark = pytest.mark.api


def _write_version(settings: Settings, version: int, meta: dict) -> None:
    d = settings.model_dir / str(version)
    d.mkdir(parents=True)
    (d / METADATA_FILE).write_text(json.dumps({"model_name": settings.model_name,
                                               "version": str(version), **meta}))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    settings = Settings(env="test", data_dir=tmp_path_factory.mktemp("models-api"))
    events = load_real_events()
    preds = (momentum_predictions(events, "XNAS:AAPL", "sp500_5yr", 60, version="1")
             + momentum_predictions(events, "XNAS:MSFT", "sp500_5yr", 30, version="1")
             + momentum_predictions(events, "XTKS:7203", "chart0", 40, version="1")
             + momentum_predictions(events, "XNAS:AAPL", "sp500_5yr", 20, version="2"))
    store = SqliteServingStore(settings.store_path, source_priority=settings.source_priority)
    store.write_batch([instrument(s) for s in ("AAPL", "MSFT", "7203.T")] + events + preds)
    report = track_store(store)
    store.close()
    assert report.outcomes == 59 + 29 + 39 + 19
    _write_version(settings, 1, {"created_at": "2026-01-05T10:00:00+00:00",
                                 "cutoff_date": "2017-06-30",
                                 "validation_metrics": {"rmse": 0.0161, "n": 88147,
                                                        "rmse_ratio": float("nan")}})
    _write_version(settings, 3, {"created_at": "2026-02-01T09:30:00+00:00",
                                 "cutoff_date": "2017-06-30",
                                 "validation_metrics": {"rmse": 0.0159, "n": 88147}})
    us = pd.read_csv(US_FILE, dtype={"symbol": str, "date": str})
    return settings, preds, us


@pytest.fixture()
def client(setup):
    with TestClient(create_app(setup[0])) as c:
        authorize(c)
        yield c


def _expected_errors(preds, us, symbol: str, version: str) -> pd.DataFrame:
    close = us[us["symbol"] == symbol].set_index("date")["close"]
    iid = instrument(symbol).instrument_id
    rows = []
    for p in preds:
        day = p.target_date.isoformat()
        if p.instrument_id == iid and p.model_version == version and day in close.index:
            real = float(close[day])
            rows.append({"day": day, "err": p.predicted_price - real, "real": real,
                         "pr": p.predicted_log_return, "rr": math.log(real / p.base_price)})
    return pd.DataFrame(rows)


def test_models_merge_registry_and_tracked_versions(client, setup):
    _, preds, us = setup
    resp = client.get("/v1/models")
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert [(m["version"], m["in_registry"]) for m in body["data"]] == [
        ("1", True), ("2", False), ("3", True)]
    assert body["count"] == 3
    v1, v2, v3 = body["data"]
    assert v1["created_at"] == "2026-01-05T10:00:00+00:00" and v1["cutoff_date"] == "2017-06-30"
    assert v1["validation_metrics"] == {"rmse": 0.0161, "n": 88147, "rmse_ratio": None}
    assert v1["performance"]["n"] == 59 + 29 + 39
    assert v1["performance"]["currency"] is None and v1["performance"]["mae"] is None
    assert v3["performance"] is None and v2["created_at"] is None
    aapl2 = _expected_errors(preds, us, "AAPL", "2")
    assert v2["performance"]["n"] == len(aapl2) == 19
    assert v2["performance"]["currency"] == "USD"
    assert v2["performance"]["mae"] == pytest.approx(np.mean(np.abs(aapl2["err"])), rel=1e-12)
    assert v2["performance"]["mape"] == pytest.approx(
        100 * np.mean(np.abs(aapl2["err"]) / aapl2["real"]), rel=1e-12)


def test_performance_of_one_instrument_in_a_date_range(client, setup):
    _, preds, us = setup
    exp = _expected_errors(preds, us, "AAPL", "1")
    exp = exp[(exp["day"] >= "2018-01-02") & (exp["day"] <= "2018-01-31")]
    resp = client.get("/v1/models/1/performance",
                      params={"instrument": "aapl", "start": "2018-01-02", "end": "2018-01-31"})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["model_name"] == "lstm_daily" and body["model_version"] == "1"
    assert [d["target_date"] for d in body["data"]] == list(exp["day"])
    assert body["count"] == len(exp) == 21
    for d, (_, e) in zip(body["data"], exp.iterrows()):
        assert d["instrument_id"] == "XNAS:AAPL" and d["currency"] == "USD" and d["n"] == 1
        assert d["mean_error"] == pytest.approx(e["err"], rel=1e-9, abs=1e-9)
        assert d["rmse"] == pytest.approx(abs(e["err"]), rel=1e-9, abs=1e-9)
        assert d["mape"] == pytest.approx(100 * abs(e["err"]) / e["real"], rel=1e-9)
    (inst,) = body["instruments"]
    nz = exp["rr"] != 0
    for summary in (inst, body["overall"]):
        assert summary["n"] == 21 and summary["currency"] == "USD"
        assert summary["rmse"] == pytest.approx(np.sqrt(np.mean(exp["err"] ** 2)), rel=1e-12)
        assert summary["directional_accuracy"] == pytest.approx(
            np.mean(np.sign(exp["pr"][nz]) == np.sign(exp["rr"][nz])))
        assert (summary["first_date"], summary["last_date"]) == ("2018-01-02", "2018-01-31")


def test_limit_cuts_rows_not_summaries(client):
    body = client.get("/v1/models/1/performance", params={"limit": 5}).json()
    assert body["count"] == 5 and [d["instrument_id"] for d in body["data"]] == ["XNAS:AAPL"] * 5
    assert [(s["instrument_id"], s["currency"], s["n"]) for s in body["instruments"]] == [
        ("XNAS:AAPL", "USD", 59), ("XNAS:MSFT", "USD", 29), ("XTKS:7203", "JPY", 39)]
    overall = body["overall"]
    assert overall["n"] == 127 and overall["currency"] is None and overall["rmse"] is None
    assert overall["mape"] == pytest.approx(
        sum(s["mape"] * s["n"] for s in body["instruments"]) / 127, rel=1e-12)


def test_registry_version_without_rows_and_errors(client):
    empty = client.get("/v1/models/3/performance")
    assert empty.status_code == 200 and empty.json()["count"] == 0
    assert empty.json()["overall"] is None
    for path, params, status, code in (
            ("/v1/models/99/performance", {}, 404, "not_found"),
            ("/v1/models/1/performance", {"model_name": "other"}, 404, "not_found"),
            ("/v1/models/1/performance", {"instrument": "ZZZZ"}, 404, "not_found"),
            ("/v1/models/1/performance", {"start": "2018-02-01", "end": "2018-01-01"}, 422,
             "invalid_request"),
            ("/v1/models/vertex-123/performance", {}, 404, "not_found"),
            ("/v1/models/a$b/performance", {}, 422, "invalid_request")):
        resp = client.get(path, params=params)
        assert resp.status_code == status, (path, params, resp.text)
        assert resp.json()["error"]["code"] == code


def test_without_a_store_the_registry_still_lists(tmp_path, setup):
    settings = Settings(env="test", data_dir=tmp_path / "nostore")
    _write_version(settings, 4, {"created_at": "2026-03-01T00:00:00+00:00"})
    with TestClient(create_app(settings)) as c:
        authorize(c)
        body = c.get("/v1/models").json()
        assert [(m["version"], m["performance"]) for m in body["data"]] == [("4", None)]
        resp = c.get("/v1/models/4/performance")
        assert resp.status_code == 503 and resp.json()["error"]["code"] == "store_unavailable"
