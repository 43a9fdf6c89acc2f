"""The ``model_performance`` table on the Bigtable emulator answers like the SQLite store.

Rows come from the batch tracking job on real bars (AAPL and MSFT from the S&P 500 file, 7203.T
from chart0) with "momentum" forecasts; the same rows are written to both stores and every read
(rows with filters, per-instrument summaries, versions) must agree. Needs the Bigtable emulator
(``BIGTABLE_EMULATOR_HOST`` or started by the fixture). Run:
``pytest tests/integration/test_performance_bigtable.py -q``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from miraikakaku.tracking import aggregate_outcomes, match_predictions
from stores.sqlite import SqliteServingStore
from tests.api.conftest import load_real_events
from tests.integration.test_bigtable_store import new_bigtable_store
from tests.unit.test_tracking import momentum_predictions

pytestmark = pytest.mark.integration


def _same(a, b) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        for f in dataclasses.fields(x):
            u, v = getattr(x, f.name), getattr(y, f.name)
            assert u == (pytest.approx(v, rel=1e-12) if isinstance(v, float) else v), f.name


def test_bigtable_and_sqlite_agree(bigtable_emulator, tmp_path):
    events = load_real_events()
    preds = (momentum_predictions(events, "XNAS:AAPL", "sp500_5yr", 40)
             + momentum_predictions(events, "XNAS:MSFT", "sp500_5yr", 40)
             + momentum_predictions(events, "XTKS:7203", "chart0", 40, version="8"))
    rows = aggregate_outcomes(match_predictions(preds, events).outcomes)
    sqlite = SqliteServingStore(tmp_path / "s.db")
    bigtable = new_bigtable_store()
    try:
        for store in (sqlite, bigtable):
            assert store.write_batch(rows) == len(rows)
            assert store.write_batch(rows) == len(rows)  # idempotent
        start, end = dt.date(2018, 1, 10), dt.date(2018, 1, 31)
        for kwargs in ({}, {"instrument_id": "XNAS:MSFT"},
                       {"instrument_id": "XNAS:MSFT", "start": start, "end": end},
                       {"start": start}, {"limit": 7}):
            got = bigtable.get_model_performance("lstm_daily", "7", **kwargs)
            assert got == sqlite.get_model_performance("lstm_daily", "7", **kwargs), kwargs
            assert got
        assert bigtable.get_model_performance("lstm_daily", "7") == [
            r for r in rows if r.model_version == "7"]
        _same(bigtable.summarize_model_performance("lstm_daily", "7", end=end),
              sqlite.summarize_model_performance("lstm_daily", "7", end=end))
        _same(bigtable.list_performance_versions(), sqlite.list_performance_versions())
        assert [v.model_version for v in bigtable.list_performance_versions()] == ["7", "8"]
    finally:
        sqlite.close()
        bigtable.close()
