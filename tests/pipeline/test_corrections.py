"""The correction policy: a later revision of a bar wins, in the dedup, the serving store (its
own flags recomputed, the earlier revision kept as history), the analytics views and the API.

Real AAPL rows of the S&P 500 five-year file; a "correction" is the same session's row sent
again with another close (the next session's real close) or a repaired open.
"""

from __future__ import annotations

import sqlite3

import pytest

from analytics.sink import ParquetWarehouse
from miraikakaku.settings import Settings
from pipelines.prices import run
from stores.base import EVENT_FLAGS, NEIGHBOUR_FLAGS
from tests.conftest import SP500, read_rows, write_csv

pytestmark = pytest.mark.pipeline

ARGS = ["--source", "sp500_5yr", "--skip_inference", "true"]


@pytest.fixture(scope="module")
def aapl():
    header, rows = read_rows(SP500, {"AAPL"})
    return header, rows[:40]


def _bar(conn, day: str):
    return conn.execute("SELECT close, open FROM bars WHERE row_key = ? AND source = 'sp500_5yr'",
                        (f"XNAS:AAPL#1d#{day.replace('-', '')}",)).fetchone()


def _flags(conn, day: str) -> set[str]:
    return {f for (f,) in conn.execute(
        "SELECT flag FROM bar_flags WHERE row_key = ? AND source = 'sp500_5yr'",
        (f"XNAS:AAPL#1d#{day.replace('-', '')}",))}


def test_within_a_file_the_later_line_wins_and_the_earlier_is_history(aapl, tmp_path):
    header, rows = aapl
    target = rows[30]
    flawed = [*target]
    flawed[2] = f"{float(target[3]) * 1.02:.4f}"  # open above high: ohlc_inconsistent
    settings = Settings(data_dir=tmp_path / "var")
    # the flawed print first, the source's corrected (the file's real) row at the end
    path = write_csv(tmp_path / "a.csv", header, [*rows[:30], flawed, *rows[31:], target])
    s = run(["--input", str(path), *ARGS], settings=settings)
    assert (s.duplicates, s.conflicting_duplicates) == (1, 1)
    assert s.events_read == len(rows) + 1 and s.reconciled
    conn = sqlite3.connect(settings.store_path)
    assert _bar(conn, target[1]) == (float(target[5]), float(target[2]))
    assert "ohlc_inconsistent" not in _flags(conn, target[1])  # the winner's own flags only
    history = conn.execute("SELECT payload, position, superseded_by FROM bar_revisions").fetchall()
    assert len(history) == 1
    payload, position, by = history[0]
    assert position == "line:32" and by == "a.csv line:42"
    assert f'"open":{float(flawed[2])}' in payload
    # the analytics view shows the winner
    with ParquetWarehouse(settings.data_dir / "warehouse") as pw:
        df = pw.warehouse().query(
            f"SELECT open FROM miraikakaku.daily_bars WHERE instrument_id = 'XNAS:AAPL' "
            f"AND session_date = DATE '{target[1]}'")
    assert list(df["open"]) == [float(target[2])]


def test_the_later_input_file_wins(aapl, tmp_path):
    header, rows = aapl
    corrected = [*rows[10]]
    corrected[5] = rows[11][5]
    first = write_csv(tmp_path / "prints.csv", header, rows)
    second = write_csv(tmp_path / "corrections.csv", header, [corrected])
    for order, want in (((first, second), rows[11][5]), ((second, first), rows[10][5])):
        settings = Settings(data_dir=tmp_path / f"var-{order[0].stem}")
        s = run(["--input", str(order[0]), "--input", str(order[1]), *ARGS], settings=settings)
        assert s.conflicting_duplicates == 1 and s.reconciled
        conn = sqlite3.connect(settings.store_path)
        assert _bar(conn, rows[10][1])[0] == float(want)


def test_a_rerun_with_a_corrected_bar_replaces_value_and_flags_and_keeps_history(aapl,
                                                                                 tmp_path):
    header, rows = aapl
    target = rows[25]
    flawed = [*target]
    flawed[2] = f"{float(target[3]) * 1.02:.4f}"  # open above high
    settings = Settings(data_dir=tmp_path / "var")
    run(["--input", str(write_csv(tmp_path / "v1.csv", header,
                                  [*rows[:25], flawed, *rows[26:]])), *ARGS], settings=settings)
    conn = sqlite3.connect(settings.store_path)
    assert "ohlc_inconsistent" in _flags(conn, target[1])
    run(["--input", str(write_csv(tmp_path / "v2.csv", header, rows)), *ARGS], settings=settings)
    assert _bar(conn, target[1]) == (float(target[5]), float(target[2]))
    assert "ohlc_inconsistent" not in _flags(conn, target[1])
    (payload,) = conn.execute("SELECT payload FROM bar_revisions").fetchone()
    import json

    assert json.loads(payload)["open"] == float(flawed[2])
    assert conn.execute("SELECT count(*) FROM bar_revisions").fetchone()[0] == 1  # only it
    # the API reads the store: the corrected bar
    from stores.sqlite import SqliteServingStore

    bars = SqliteServingStore(settings.store_path, read_only=True).get_bars(
        "XNAS:AAPL", interval="1d")
    got = next(b for b in bars if b.session_date.isoformat() == target[1])
    assert (got.open, "ohlc_inconsistent" in got.flags) == (float(target[2]), False)
    # and the analytics view picks the latest revision, not one of the two at random
    with ParquetWarehouse(settings.data_dir / "warehouse") as pw:
        df = pw.warehouse().query(
            f"SELECT open, flags FROM miraikakaku.daily_bars WHERE instrument_id = 'XNAS:AAPL' "
            f"AND session_date = DATE '{target[1]}'")
    assert list(df["open"]) == [float(target[2])]
    # the API serves the corrected bar and lists what it replaced
    from fastapi.testclient import TestClient

    from serving.app.main import create_app
    from tests.api.conftest import authorize

    with TestClient(create_app(settings.model_copy(update={"env": "test"}))) as client:
        authorize(client, "analyst")
        bar = client.get(f"/v1/symbols/AAPL/bars?start={target[1]}&end={target[1]}").json()
        assert [b["open"] for b in bar["data"]] == [float(target[2])]
        rev = client.get(f"/v1/symbols/AAPL/revisions?start={target[1]}&end={target[1]}")
        assert rev.status_code == 200, rev.text
        (r,) = rev.json()["data"]
        assert (r["payload"]["open"], r["source"], r["superseded_by"]) == (
            float(flawed[2]), "sp500_5yr", "a later ingest")
        other = client.get("/v1/symbols/AAPL/revisions?start=2000-01-01&end=2000-12-31").json()
        assert other["data"] == [] and other["count"] == 0


def test_within_a_file_the_api_lists_the_earlier_line_as_superseded(aapl, tmp_path):
    header, rows = aapl
    target = rows[10]
    earlier = [*target]
    earlier[5] = rows[11][5]  # the next session's real close
    settings = Settings(env="test", data_dir=tmp_path / "var")
    path = write_csv(tmp_path / "prices.csv", header, [*rows[:10], earlier, target, *rows[11:]])
    run(["--input", str(path), *ARGS], settings=settings)
    from fastapi.testclient import TestClient

    from serving.app.main import create_app
    from tests.api.conftest import authorize

    with TestClient(create_app(settings)) as client:
        authorize(client, "analyst")
        (r,) = client.get(f"/v1/symbols/AAPL/revisions?start={target[1]}&end={target[1]}"
                          ).json()["data"]
    assert r["payload"]["close"] == float(earlier[5]) and r["position"] == "line:12"
    assert r["superseded_by"] == f"{path.name} line:13" and r["origin"] == path.name


def test_event_flags_cover_every_flag_an_event_can_carry():
    from quality.suites import SUITES  # the block/flag rules

    suite_flags = {r.name for suite in SUITES.values() for r in suite.rules
                   if r.severity == "flag"}
    parse_flags = {"not_a_session", "calendar_estimated", "unknown_instrument", "suspicious",
                   "intraday_gap"}
    batch_only = {"large_move", "gap"}  # the batch suite's history rules: never on an event
    assert (suite_flags - batch_only) | parse_flags <= EVENT_FLAGS
    assert not EVENT_FLAGS & NEIGHBOUR_FLAGS
