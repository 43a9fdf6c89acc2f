"""The quote entitlement on SQLite and PostgreSQL app databases: ``analyst`` and ``admin``
(``market:realtime``) see the newest bar; ``user`` sees the latest bar at least
``quote_delay_minutes`` old, marked ``delayed``. The store side, ``get_quote_as_of``, is checked
against a brute-force answer on the real-data store, and (``integration``, Bigtable emulator)
the Bigtable store against the SQLite store on the same records.

The scenario store holds real AAPL prices re-timed to now: daily bars 30 days and 2 days ago, a
1-minute bar 30 minutes ago and a daily bar 5 minutes ago, so a 20-minute delay shows a
different bar than real time.

Run: ``.venv/bin/python -m pytest tests/api/test_entitlements.py -q`` (``-m integration`` for
the Bigtable comparison).
"""

import dataclasses
import datetime as dt
import uuid
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from miraikakaku.resources import init_gcp
from miraikakaku.schema import PriceEvent, make_event_id
from miraikakaku.settings import Settings
from serving.app.main import create_app
from serving.app.models import Role
from stores.sqlite import SqliteServingStore
from tests.api.conftest import ApiData, authorize, bearer, instrument, write_store

NOW = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
AGES = {"month": dt.timedelta(days=30), "days": dt.timedelta(days=2),
        "minute_bar": dt.timedelta(minutes=30), "fresh": dt.timedelta(minutes=5)}


def _retimed(bar: PriceEvent, age: dt.timedelta, interval: str = "1d") -> PriceEvent:
    """``bar``'s prices at ``NOW - age`` (a daily bar of that UTC date, or a 1-minute bar)."""
    t = NOW - age
    start = f"{t:%Y%m%d}" if interval == "1d" else f"{t - dt.timedelta(minutes=1):%Y%m%dT%H%M%S}"
    return dataclasses.replace(
        bar, interval=interval, session_date=t.date(), event_time=t, flags=(),
        event_id=make_event_id(bar.source, bar.instrument_id, interval, start, 0))


def scenario_events(api_data: ApiData) -> dict[str, PriceEvent]:
    """The four re-timed AAPL bars (distinct closes), by name."""
    real = api_data.bars("XNAS:AAPL", "sp500_5yr")[-4:]
    assert len({b.close for b in real}) == 4
    return {"month": _retimed(real[0], AGES["month"]),
            "days": _retimed(real[1], AGES["days"]),
            "minute_bar": _retimed(real[2], AGES["minute_bar"], "1m"),
            "fresh": _retimed(real[3], AGES["fresh"])}


@pytest.fixture()
def recent(api_data: ApiData, db_settings: Settings) -> tuple[Settings, dict[str, PriceEvent]]:
    """Settings (app database from ``app_db_url``) whose store holds the re-timed bars, and
    MSFT with a single bar 5 minutes old."""
    events = scenario_events(api_data)
    msft = _retimed(api_data.bars("XNAS:MSFT", "sp500_5yr")[-1], AGES["fresh"])
    write_store(db_settings.store_path,
                [instrument("AAPL"), instrument("MSFT"), *events.values(), msft],
                db_settings.source_priority)
    return db_settings, events


def _client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as c:
        yield c


@pytest.fixture()
def app_client(recent) -> Iterator[TestClient]:
    yield from _client(recent[0])


def _quote(client: TestClient, role: Role, symbol: str = "AAPL") -> dict:
    authorize(client, role)
    resp = client.get(f"/v1/symbols/{symbol}/quote")
    assert resp.status_code == 200, resp.text
    return resp.json()


def _is(quote: dict, bar: PriceEvent) -> bool:
    return (dt.datetime.fromisoformat(quote["event_time"]) == bar.event_time
            and quote["close"] == bar.close)


pytestmark = pytest.mark.api


def test_user_gets_the_delayed_quote_analyst_and_admin_the_newest(app_client, recent) -> None:
    settings, bars = recent
    assert settings.quote_delay_minutes == 20
    user_q = _quote(app_client, Role.user)
    assert user_q["delayed"] is True and user_q["delay_minutes"] == 20
    assert _is(user_q, bars["minute_bar"]), user_q  # 30 minutes old: the newest >= 20 minutes
    for role in (Role.analyst, Role.admin):
        q = _quote(app_client, role)
        assert q["delayed"] is False and q["delay_minutes"] == 0
        assert _is(q, bars["fresh"]), q
    assert user_q["close"] != q["close"]


def test_delay_comes_from_settings(recent) -> None:
    settings, bars = recent
    for minutes, expected in ((45, "days"), (4, "fresh"), (60 * 24 * 3, "month")):
        slow = settings.model_copy(update={"quote_delay_minutes": minutes})
        for c in _client(slow):
            q = _quote(c, Role.user)
            assert q["delay_minutes"] == minutes and _is(q, bars[expected]), (minutes, q)


def test_user_bars_stop_at_the_delay_analyst_sees_all(app_client, recent) -> None:
    """The delay holds on the bars route too (daily and 1-minute), not only on /quote."""
    _, bars = recent

    def closes(role: Role, interval: str) -> list[float]:
        authorize(app_client, role)
        resp = app_client.get("/v1/symbols/AAPL/bars", params={"interval": interval})
        assert resp.status_code == 200, resp.text
        return [b["close"] for b in resp.json()["data"]]

    assert closes(Role.analyst, "1d") == [bars[k].close for k in ("month", "days", "fresh")]
    assert closes(Role.user, "1d") == [bars[k].close for k in ("month", "days")]
    assert closes(Role.user, "1m") == closes(Role.analyst, "1m") == [bars["minute_bar"].close]


def test_no_bar_old_enough_is_404_for_user_only(app_client) -> None:
    authorize(app_client, Role.user)
    resp = app_client.get("/v1/symbols/MSFT/quote")
    assert resp.status_code == 404 and "20 minutes" in resp.json()["error"]["message"]
    assert _quote(app_client, Role.analyst, "MSFT")["delayed"] is False


def test_a_promotion_lifts_the_delay_at_once(app_client, recent) -> None:
    _, bars = recent
    user = authorize(app_client, Role.user)
    assert _is(app_client.get("/v1/symbols/AAPL/quote").json(), bars["minute_bar"])
    admin = authorize(app_client, Role.admin, "boss@example.com")
    app_client.headers.pop("Authorization")
    boss = bearer(app_client.app.state.settings, admin)
    resp = app_client.patch(f"/v1/admin/users/{user.id}", headers=boss, json={"role": "analyst"})
    assert resp.status_code == 200
    mine = bearer(app_client.app.state.settings, user)  # same token version, role from DB
    q = app_client.get("/v1/symbols/AAPL/quote", headers=mine).json()
    assert q["delayed"] is False and _is(q, bars["fresh"])


def test_anonymous_quote_is_401(app_client) -> None:
    resp = app_client.get("/v1/symbols/AAPL/quote")
    assert resp.status_code == 401


# -- the store method ---------------------------------------------------------------------------

def _brute_force(events, instrument_id: str, as_of: dt.datetime,
                 priority: list[str]) -> PriceEvent | None:
    rank = {s: i for i, s in enumerate(priority)}
    candidates = [e for e in events if e.instrument_id == instrument_id
                  and e.event_time <= as_of]
    if not candidates:
        return None
    return min(candidates,
               key=lambda e: (-e.event_time.timestamp(), rank.get(e.source, 1_000), e.source))


def _same(row, event: PriceEvent | None) -> bool:
    if event is None:
        return row is None
    return (row is not None and row.source == event.source
            and row.event_time == event.event_time and row.close == event.close
            and row.session_date == event.session_date)


def test_sqlite_quote_as_of_matches_brute_force_on_real_data(api_data: ApiData) -> None:
    priority = list(api_data.settings.source_priority)
    store = SqliteServingStore(api_data.settings.store_path, source_priority=priority,
                               read_only=True)
    try:
        toyota = api_data.bars("XTKS:7203", "chart0")
        both = sorted({e.event_time for e in api_data.bars("XTKS:7203", "mlbot")}
                      & {e.event_time for e in toyota})
        assert both
        probes = [toyota[0].event_time - dt.timedelta(seconds=1), toyota[0].event_time,
                  toyota[len(toyota) // 2].event_time + dt.timedelta(hours=5),
                  both[-1], both[0], both[-1] + dt.timedelta(microseconds=1),
                  NOW, toyota[-1].event_time - dt.timedelta(microseconds=1)]
        for iid in ("XTKS:7203", "XNAS:AAPL", "XNAS:MSFT"):
            for as_of in probes:
                expected = _brute_force(api_data.events, iid, as_of, priority)
                assert _same(store.get_quote_as_of(iid, as_of), expected), (iid, as_of)
        # on a session both sources have, the better-ranked one wins (chart0 before mlbot)
        assert store.get_quote_as_of("XTKS:7203", both[-1]).source == "chart0"
        assert store.get_quote_as_of("XNAS:NOPE", NOW) is None
        # as of now it is the latest quote
        latest = store.get_quote("XTKS:7203")
        assert store.get_quote_as_of("XTKS:7203", NOW) == latest
    finally:
        store.close()


@pytest.mark.integration
def test_bigtable_quote_as_of_matches_sqlite(bigtable_emulator, api_data: ApiData,
                                             tmp_path) -> None:
    from stores.bigtable import BigtableServingStore

    priority = list(api_data.settings.source_priority)
    records = [instrument("AAPL"), *scenario_events(api_data).values(),
               *api_data.bars("XTKS:7203", "chart0")[-40:],
               *api_data.bars("XTKS:7203", "mlbot")[-40:]]
    sqlite = SqliteServingStore(tmp_path / "s.db", source_priority=priority)
    instance = f"it-{uuid.uuid4().hex[:12]}"
    init_gcp("miraikakaku-it", instance=instance, dataset=None, topics=(), subscriptions=(),
             emulator=True)
    bigtable = BigtableServingStore("miraikakaku-it", instance, source_priority=priority)
    try:
        sqlite.write_batch(records)
        bigtable.write_batch(records)
        toyota = api_data.bars("XTKS:7203", "chart0")[-40:]
        probes = [NOW, NOW - dt.timedelta(minutes=20), NOW - dt.timedelta(minutes=31),
                  NOW - dt.timedelta(days=1), NOW - dt.timedelta(days=10),  # fallback scan
                  NOW - dt.timedelta(days=31), toyota[-1].event_time,
                  toyota[-1].event_time - dt.timedelta(seconds=1), toyota[0].event_time,
                  toyota[0].event_time - dt.timedelta(days=30)]
        for iid in ("XNAS:AAPL", "XTKS:7203"):
            for as_of in probes:
                expected = _brute_force(records[1:], iid, as_of, priority)
                assert _same(sqlite.get_quote_as_of(iid, as_of), expected), (iid, as_of)
                assert bigtable.get_quote_as_of(iid, as_of) == \
                    sqlite.get_quote_as_of(iid, as_of), (iid, as_of)
    finally:
        sqlite.close()
        bigtable.close()
