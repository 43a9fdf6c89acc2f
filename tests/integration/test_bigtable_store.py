"""The Bigtable serving store against the real Bigtable emulator, side by side with SQLite.

Real records: AAPL's daily bars (sp500_5yr), Toyota's (7203.T) from three sources (chart0,
yfinance, mlbot; overlapping sessions, so the latest quote is a source-priority tie-break), the
first IBM trades of 2013-10-07 (lean ticks) and dead letters from malformed rows, all parsed with
``transforms.parsing``; predictions, alerts and flags derived from those bars. Tables come from
``init_gcp`` on a uuid-named instance. Checks: row keys, families, qualifiers and explicit cell
timestamps as ``stores/bigtable.py`` documents; rewrites are idempotent (same cells) on both write
paths (``write_batch`` and the ``to_direct_rows`` rows Beam's ``WriteToBigTable`` gets); an older
event arriving late does not replace the latest quote; and the same assertions hold for
``SqliteServingStore`` and ``BigtableServingStore`` fed the same records.
Run: ``pytest tests/integration/test_bigtable_store.py`` (starts the emulator unless
``BIGTABLE_EMULATOR_HOST`` is set).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import pickle
import uuid
from pathlib import Path

import pytest

from miraikakaku import rowkeys
from miraikakaku.instruments import load_master
from miraikakaku.resources import init_gcp
from miraikakaku.schema import AlertEvent, DeadLetter, Prediction, PriceEvent
from stores.base import BarFlag, BarRow, QuoteRow, ServingStore
from stores.bigtable import (
    TABLES,
    BigtableServingStore,
    alert_key,
    alias_key,
    cell_timestamp,
    dead_letter_key,
    to_direct_rows,
)
from stores.sqlite import SqliteServingStore
from tests.conftest import JP, SHARED, SP500, read_rows, write_csv
from transforms.parsing import file_spec, iter_file

pytestmark = pytest.mark.integration

TICKS = SHARED / "normalized" / "us_tick_trades_lean.normalized.csv.gz"
PROJECT = "miraikakaku-it"
PRIORITY = ("chart0", "sp500_5yr", "yfinance", "mlbot", "user")
UTC = dt.timezone.utc
AAPL, TOYOTA, IBM = "XNAS:AAPL", "XTKS:7203", "XNYS:IBM"


# -- real records ------------------------------------------------------------------------------
@dataclasses.dataclass
class Records:
    events: list[PriceEvent]
    flags: list[BarFlag]
    predictions: list[Prediction]
    alerts: list[AlertEvent]
    dead_letters: list[DeadLetter]
    instruments: list

    @property
    def all(self) -> list[object]:
        return [*self.instruments, *self.events, *self.flags, *self.predictions, *self.alerts,
                *self.dead_letters]

    def of(self, instrument_id: str, interval: str = "1d", source: str | None = None):
        return [e for e in self.events if e.instrument_id == instrument_id
                and e.interval == interval and (source is None or e.source == source)]


def _parse(path: Path, source: str | None = None) -> list[PriceEvent | DeadLetter]:
    return list(iter_file(file_spec(path, default_source=source)))


def build_records(tmp: Path) -> Records:
    header, aapl = read_rows(SP500, {"AAPL"})
    broken = [["AAPL", "2018-02-30", *aapl[-1][2:]], ["AAPL", "2018-03-01", "abc", *aapl[-1][3:]],
              ["AAPL", "2018-03-02", "", *aapl[-1][3:]]]
    parsed = _parse(write_csv(tmp / "us_daily_sp500_5yr_2013_2018.csv", header, aapl + broken))
    jheader, toyota = read_rows(JP, {"7203.T"})
    toyota = [r for r in toyota if "2017-06-01" <= r[1] <= "2018-06-29"]
    parsed += _parse(write_csv(tmp / "jp_daily.csv", jheader, toyota))
    theader, trades = read_rows(TICKS, {"IBM"})
    parsed += _parse(write_csv(tmp / "us_tick_trades_lean.csv", theader, trades[:300]), "lean")
    events = [e for e in parsed if isinstance(e, PriceEvent)]
    dead = [d for d in parsed if isinstance(d, DeadLetter)]
    assert len(dead) == 3 and len({d.reason for d in dead}) >= 2

    flags, preds, alerts = [], [], []
    for inst, src in ((AAPL, "sp500_5yr"), (TOYOTA, "chart0")):
        bars = sorted((e for e in events if e.instrument_id == inst and e.source == src),
                      key=lambda e: e.session_date)
        for prev, cur, nxt in zip(bars, bars[1:], bars[2:]):
            move = cur.close / prev.close - 1
            if abs(move) > 0.03:
                day = f"{cur.session_date:%Y%m%d}"
                alerts.append(AlertEvent(f"pct_move_3/{inst}/{day}", "pct_move_3", "pct_move",
                                         inst, cur.event_time, cur.session_date, move, 0.03,
                                         f"{inst} moved {move:+.1%}"))
                flags.append(BarFlag(rowkeys.event_key(cur), src, "large_move", f"{move:+.4f}"))
            if cur.session_date >= dt.date(2018, 1, 1):
                for version, bias in (("1", 0.001), ("2", -0.002)):
                    lr = bias * (cur.session_date.day % 5)
                    preds.append(Prediction(inst, src, cur.session_date, cur.event_time,
                                            nxt.session_date, cur.close, lr,
                                            cur.close * math.exp(lr), "lstm_daily", version))
    master = load_master()
    instruments = [master.lookup(s) for s in ("AAPL", "7203.T", "IBM")]
    return Records(events, flags, preds, alerts, dead, instruments)


def _batches(items: list[object], size: int = 500):
    for i in range(0, len(items), size):
        yield items[i:i + size]


def new_bigtable_store(**kwargs) -> BigtableServingStore:
    instance = f"it-{uuid.uuid4().hex[:12]}"
    lines = init_gcp(PROJECT, instance=instance, dataset=None, topics=(), subscriptions=(),
                     emulator=True)
    assert any(line.startswith("created bigtable-table prices") for line in lines)
    return BigtableServingStore(PROJECT, instance, source_priority=PRIORITY, **kwargs)


@pytest.fixture(scope="module")
def records(tmp_path_factory) -> Records:
    return build_records(tmp_path_factory.mktemp("records"))


@pytest.fixture(scope="module")
def stores(bigtable_emulator, records, tmp_path_factory):
    """Both stores, each fed the same records in the same batches."""
    sqlite = SqliteServingStore(tmp_path_factory.mktemp("sqlite") / "serving.db",
                                source_priority=PRIORITY)
    bigtable = new_bigtable_store()
    for batch in _batches(records.all):
        assert sqlite.write_batch(batch) == len(batch)
        assert bigtable.write_batch(batch) == len(batch)
    yield {"sqlite": sqlite, "bigtable": bigtable}
    sqlite.close()
    bigtable.close()


@pytest.fixture(params=["sqlite", "bigtable"])
def store(request, stores):
    return stores[request.param]


# -- expectations from the records ---------------------------------------------------------------
def expected_bar(e: PriceEvent, flags: list[BarFlag]) -> BarRow:
    key = rowkeys.event_key(e)
    names = set(e.flags) | {f.flag for f in flags if f.row_key == key and f.source == e.source}
    return BarRow(key, e.instrument_id, e.source, e.interval, e.session_date, e.event_time,
                  e.open, e.high, e.low, e.close, e.volume, e.adj_close, e.currency,
                  tuple(sorted(names)))


def expected_quote(e: PriceEvent) -> QuoteRow:
    return QuoteRow(e.instrument_id, e.source, e.session_date, e.event_time, e.open, e.high,
                    e.low, e.close, e.volume, e.adj_close, e.currency)


def cells(row) -> list:
    return [c for family in row.cells.values() for column in family.values() for c in column]


def count_cells(store: BigtableServingStore) -> int:
    return sum(len(cells(r)) for name in TABLES for r in store.table(name).read_rows())


# -- the same assertions against both stores --------------------------------------------------
def test_bars_are_range_scans_in_key_and_source_order(store, records):
    start, end = dt.date(2018, 1, 1), dt.date(2018, 2, 28)
    want = [expected_bar(e, records.flags) for e in records.of(AAPL)
            if start <= e.session_date <= end]
    assert store.get_bars(AAPL, start=start, end=end) == want
    toyota = sorted((e for e in records.of(TOYOTA) if e.session_date >= dt.date(2018, 6, 1)),
                    key=lambda e: (rowkeys.event_key(e), e.source))
    got = store.get_bars(TOYOTA, start=dt.date(2018, 6, 1))
    assert got == [expected_bar(e, records.flags) for e in toyota]
    assert {b.source for b in got} == {"chart0", "yfinance", "mlbot"}
    only = store.get_bars(TOYOTA, source="yfinance", limit=5)
    assert [b.source for b in only] == ["yfinance"] * 5
    assert only == [expected_bar(e, records.flags) for e in records.of(TOYOTA, source="yfinance")
                    ][:5]
    assert store.get_bars(AAPL, start=dt.date(2030, 1, 1)) == []


def test_trades_read_back_with_millisecond_keys(store, records):
    trades = records.of(IBM, "tick")
    got = store.get_bars(IBM, interval="tick", start=dt.date(2013, 10, 7),
                         end=dt.date(2013, 10, 7))
    assert got == [expected_bar(e, records.flags)
                   for e in sorted(trades, key=rowkeys.event_key)]
    assert all(b.row_key.split("#")[2][15:16] == "." for b in got)


def test_latest_quote_is_newest_bar_then_best_source(store, records):
    assert store.get_quote(AAPL) == expected_quote(max(records.of(AAPL),
                                                       key=lambda e: e.event_time))
    last_day = max(e.session_date for e in records.of(TOYOTA))
    tied = [e for e in records.of(TOYOTA) if e.session_date == last_day]
    assert {e.source for e in tied} == {"chart0", "yfinance", "mlbot"}
    assert store.get_quote(TOYOTA) == expected_quote(next(e for e in tied
                                                          if e.source == "chart0"))
    trades = records.of(IBM, "tick")
    newest = max(e.event_time for e in trades)
    assert store.get_quote(IBM) == expected_quote([e for e in trades
                                                   if e.event_time == newest][-1])
    assert store.get_quote("XNAS:NONE") is None
    assert store.sources(TOYOTA) == ["chart0", "mlbot", "yfinance"]
    assert store.sources(AAPL) == ["sp500_5yr"]


def test_predictions_by_as_of_date_then_model(store, records):
    start, end = dt.date(2018, 1, 10), dt.date(2018, 1, 31)
    want = sorted((p for p in records.predictions if p.instrument_id == AAPL
                   and start <= p.as_of_date <= end),
                  key=lambda p: (p.as_of_date, p.model_name, p.model_version))
    assert want and store.get_predictions(AAPL, start=start, end=end) == want
    assert len(store.get_predictions(TOYOTA, limit=7)) == 7


def test_alerts_newest_first_with_since_and_instrument(store, records):
    since = dt.datetime(2017, 1, 1, tzinfo=UTC)
    want = sorted((a for a in records.alerts if a.instrument_id == AAPL
                   and a.event_time >= since), key=lambda a: a.event_time, reverse=True)
    assert want and store.get_alerts(instrument_id=AAPL, since=since) == want
    everything = sorted(records.alerts, key=lambda a: (-a.event_time.timestamp(), a.alert_id))
    assert store.get_alerts(limit=5) == everything[:5]
    assert {a.instrument_id for a in store.get_alerts(limit=10_000)} == {AAPL, TOYOTA}


def test_dead_letters_and_instruments(store, records):
    got = store.get_dead_letters()
    assert sorted(got, key=lambda d: d.dead_letter_id) == sorted(
        records.dead_letters, key=lambda d: d.dead_letter_id)
    reason = records.dead_letters[0].reason
    assert {d.dead_letter_id for d in store.get_dead_letters(reason=reason)} == {
        d.dead_letter_id for d in records.dead_letters if d.reason == reason}
    assert store.list_instruments() == sorted(records.instruments,
                                              key=lambda i: i.instrument_id)
    assert store.get_instrument("aapl").instrument_id == AAPL
    assert store.get_instrument("7203.t").instrument_id == TOYOTA
    assert store.get_instrument("xnys:ibm").instrument_id == IBM
    assert store.get_instrument("NOPE") is None
    assert store.ping()
    assert isinstance(store, ServingStore)


def test_counts(store, records):
    counts = store.counts()
    bars = {(rowkeys.event_key(e), e.source) for e in records.events}
    flags = {(rowkeys.event_key(e), e.source, f) for e in records.events for f in e.flags} | {
        (f.row_key, f.source, f.flag) for f in records.flags}
    assert {k: counts[k] for k in ("instruments", "bars", "bar_flags", "quotes", "predictions",
                                   "alerts", "dead_letters")} == {
        "instruments": 3, "bars": len(bars), "bar_flags": len(flags), "quotes": 3,
        "predictions": len(records.predictions), "alerts": len(records.alerts),
        "dead_letters": len(records.dead_letters)}


def test_bigtable_agrees_with_sqlite(stores):
    sq, bt = stores["sqlite"], stores["bigtable"]
    for inst in (AAPL, TOYOTA):
        assert bt.get_bars(inst) == sq.get_bars(inst)
        assert bt.get_quote(inst) == sq.get_quote(inst)
        assert bt.get_predictions(inst) == sq.get_predictions(inst)
        assert bt.get_alerts(instrument_id=inst) == sq.get_alerts(instrument_id=inst)
        assert bt.sources(inst) == sq.sources(inst)
    assert bt.get_bars(IBM, interval="tick") == sq.get_bars(IBM, interval="tick")
    assert bt.get_quote(IBM) == sq.get_quote(IBM)
    assert bt.get_alerts(since=dt.datetime(2018, 1, 1, tzinfo=UTC)) == sq.get_alerts(
        since=dt.datetime(2018, 1, 1, tzinfo=UTC))
    assert bt.list_instruments() == sq.list_instruments()
    sq_counts = {k: v for k, v in sq.counts().items() if k != "outbox"}
    assert bt.counts() == sq_counts


# -- Bigtable layout -----------------------------------------------------------------------------
def test_row_keys_families_qualifiers_and_timestamps(stores, records):
    bt = stores["bigtable"]
    prices = bt.table("prices")
    e = next(e for e in records.of(AAPL) if e.session_date == dt.date(2018, 2, 7))
    row = prices.read_row(b"XNAS:AAPL#1d#20180207")
    assert set(row.cells) == {"bar"} | ({"flag"} if e.flags else set())
    fields = ("open", "high", "low", "close", "volume", "adj_close", "currency", "event_id",
              "event_time", "session_date")
    assert set(row.cells["bar"]) == {f"sp500_5yr:{f}".encode() for f in fields}
    assert {c.timestamp for c in row.cells["bar"].values() for c in c} == {
        dt.datetime(2018, 2, 7, 21, 0, tzinfo=UTC)}  # session close, New York
    assert row.cells["bar"][b"sp500_5yr:close"][0].value == repr(e.close).encode()
    assert row.cells["bar"][b"sp500_5yr:adj_close"][0].value == b""  # None
    assert row.cells["bar"][b"sp500_5yr:event_id"][0].value == e.event_id.encode()

    flag = records.flags[0]
    flagged = prices.read_row(flag.row_key.encode())
    cell = flagged.cells["flag"][f"{flag.source}:large_move".encode()][0]
    assert cell.value == flag.detail.encode()
    day = rowkeys.parse_bar_key(flag.row_key)[2]
    assert cell.timestamp == dt.datetime(day.year, day.month, day.day, tzinfo=UTC)

    latest = prices.read_row(b"XTKS:7203#latest")
    assert set(latest.cells) == {"quote"}
    assert {q.split(b":")[0] for q in latest.cells["quote"]} == {b"chart0", b"yfinance",
                                                                b"mlbot"}
    for src in ("chart0", "yfinance", "mlbot"):
        last = max(records.of(TOYOTA, source=src), key=lambda x: x.event_time)
        assert latest.cells["quote"][f"{src}:event_time".encode()][0].timestamp == \
            last.event_time
        assert latest.cells["quote"][f"{src}:row_key".encode()][0].value == \
            rowkeys.event_key(last).encode()

    trade = records.of(IBM, "tick")[41]
    key = rowkeys.trade_key(IBM, trade.event_time, trade.sequence)
    assert key == f"XNYS:IBM#tick#{trade.event_time:%Y%m%dT%H%M%S}." \
                  f"{trade.event_time.microsecond // 1000:03d}#{trade.sequence:06d}"
    trow = prices.read_row(key.encode())
    assert {c.timestamp for col in trow.cells["bar"].values() for c in col} == {
        cell_timestamp(trade.event_time)}
    assert trow.cells["bar"][b"lean:close"][0].value == repr(trade.close).encode()

    p = next(p for p in records.predictions if p.instrument_id == AAPL)
    prow = prices.read_row(rowkeys.prediction_key(AAPL, "1d", p.as_of_date).encode())
    assert set(prow.cells) == {"pred"}
    assert {q.rsplit(b":", 1)[0] for q in prow.cells["pred"]} == {b"lstm_daily:1",
                                                                 b"lstm_daily:2"}
    assert prow.cells["pred"][b"lstm_daily:1:predicted_price"][0].timestamp == p.as_of_time

    a = records.alerts[0]
    assert alert_key(a) == f"{a.instrument_id}#{a.session_date:%Y%m%d}#{a.alert_id}"
    arow = bt.table("alerts").read_row(alert_key(a).encode())
    assert arow.cells["alert"][b"alert_id"][0].timestamp == a.event_time
    d = records.dead_letters[0]
    assert dead_letter_key(d) == f"{d.reason}#{d.step}#{d.dead_letter_id}"
    drow = bt.table("dead_letters").read_row(dead_letter_key(d).encode())
    assert drow.cells["dl"][b"payload"][0].value == d.payload.encode()
    assert bt.table("instruments").read_row(b"XNAS:AAPL").cells["ref"][b"symbol"][0].value \
        == b"AAPL"
    assert bt.table("instruments").read_row(alias_key("7203.T", TOYOTA).encode()) is not None


def test_to_direct_rows_is_pure_and_names_the_tables(records):
    e = records.of(AAPL)[-1]
    rows = to_direct_rows(e)
    assert [(t, r.row_key) for t, r in rows] == [
        ("prices", rowkeys.event_key(e).encode()),
        ("prices", rowkeys.latest_key(AAPL).encode())]
    prefixed = to_direct_rows(records.alerts[0], table_resolver=lambda name: f"t_{name}")
    assert [t for t, _ in prefixed] == ["t_alerts"]
    kinds = {t for r in records.all[:5] + records.dead_letters + records.predictions[:1]
             + records.flags[:1] for t, _ in to_direct_rows(r)}
    assert kinds <= set(TABLES)
    with pytest.raises(TypeError):
        to_direct_rows(object())
    for _, row in rows:  # Beam moves rows between steps by pickling them
        copy = pickle.loads(pickle.dumps(row))
        assert (copy.row_key, copy._get_mutations()) == (row.row_key, row._get_mutations())


# -- idempotency and late events -----------------------------------------------------------------
def test_rewrite_is_idempotent_on_both_write_paths(bigtable_emulator, records):
    sample = [*records.instruments, *records.events[-200:], *records.of(TOYOTA)[-60:],
              *records.flags, *records.predictions[:20], *records.alerts, *records.dead_letters]
    batched = new_bigtable_store()
    batched.write_batch(sample)
    first, counts = count_cells(batched), batched.counts()
    batched.write_batch(sample)
    assert count_cells(batched) == first
    assert batched.counts() == counts

    direct = new_bigtable_store()  # the rows Beam's WriteToBigTable writes, one record at a time

    def write_direct():
        for record in sample:
            for table_id, row in to_direct_rows(record):
                statuses = direct.table(table_id).mutate_rows([row])
                assert [s.code for s in statuses] == [0]

    write_direct()
    first_direct = count_cells(direct)
    write_direct()
    assert count_cells(direct) == first_direct
    assert direct.counts() == counts
    for inst in (AAPL, TOYOTA):
        assert direct.get_bars(inst) == batched.get_bars(inst)
        assert direct.get_quote(inst) == batched.get_quote(inst)


@pytest.mark.parametrize("path", ["write_batch", "to_direct_rows"])
def test_latest_quote_survives_an_older_late_event(bigtable_emulator, records, tmp_path, path):
    bars = sorted(records.of(AAPL), key=lambda e: e.event_time)
    newest, older, oldest = bars[-1], bars[-2], bars[0]
    bt = new_bigtable_store()
    sq = SqliteServingStore(tmp_path / "serving.db", source_priority=PRIORITY)

    def write(event):
        sq.write_batch([event])
        if path == "write_batch":
            bt.write_batch([event])
        else:
            for table_id, row in to_direct_rows(event):
                assert [s.code for s in bt.table(table_id).mutate_rows([row])] == [0]

    write(older)
    write(newest)
    write(oldest)  # arrives late
    assert bt.get_quote(AAPL) == sq.get_quote(AAPL) == expected_quote(newest)
    latest = bt.table("prices").read_row(rowkeys.latest_key(AAPL).encode())
    column = latest.cells["quote"][b"sp500_5yr:close"]
    assert column[0].timestamp == newest.event_time  # newest cell first, whatever the GC did
    write(newest)  # a replay changes nothing
    assert bt.get_quote(AAPL) == expected_quote(newest)


def test_a_failed_mutation_raises_and_a_bad_record_writes_nothing(bigtable_emulator, records):
    from google.cloud import bigtable

    instance = f"it-{uuid.uuid4().hex[:12]}"
    client = bigtable.Client(project=PROJECT, admin=True)
    client.instance(instance).table("prices").create(
        column_families={"bar": TABLES["prices"]["bar"].to_gc_rule()})  # no quote family
    client.close()
    broken = BigtableServingStore(PROJECT, instance, retry_deadline=2.0)
    with pytest.raises(RuntimeError, match="row mutations to Bigtable table 'prices' failed"):
        broken.write_batch([records.events[0]])

    bt = new_bigtable_store()
    with pytest.raises(TypeError):
        bt.write_batch([records.events[0], object()])
    assert count_cells(bt) == 0


# -- keyset pagination (issue 5): the ``after`` key, on both stores --------------------------------
def _walk(fetch, key, page: int) -> list:
    """Every row of ``fetch(limit, after)`` page by page, continuing after ``key(last row)``."""
    out, after = [], None
    for _ in range(10_000):  # a store that ignored ``after`` would repeat the first page
        rows = fetch(page, after)
        assert len(rows) <= page
        assert not rows or not out or key(rows[0]) != key(out[-1])
        out.extend(rows)
        if len(rows) < page:
            return out
        after = key(rows[-1])
    raise AssertionError("paging did not end")


def test_keyset_paging_equals_the_unpaged_scan(store, records):
    def bar_key(b):
        return (b.row_key, b.source)

    # Toyota: three sources per row, so pages end in the middle of a row
    for instrument, interval, kwargs in ((TOYOTA, "1d", {}), (AAPL, "1d", {}),
                                         (TOYOTA, "1d", {"source": "mlbot"}),
                                         (IBM, "tick", {})):
        full = store.get_bars(instrument, interval=interval, limit=1_000_000, **kwargs)
        assert len(full) > 100
        for page in (1, 37):
            if page == 1 and len(full) > 400:
                continue
            paged = _walk(lambda n, a, i=instrument, v=interval, k=kwargs: store.get_bars(
                i, interval=v, limit=n, after=a, **k), bar_key, page)
            assert paged == full, (instrument, interval, kwargs, page)
    start, end = dt.date(2018, 1, 1), dt.date(2018, 3, 31)
    ranged = store.get_bars(TOYOTA, start=start, end=end)
    assert _walk(lambda n, a: store.get_bars(TOYOTA, start=start, end=end, limit=n, after=a),
                 bar_key, 10) == ranged

    def pred_key(p):
        return (rowkeys.prediction_key(p.instrument_id, "1d", p.as_of_date, p.role),
                p.model_name, p.model_version)

    preds = store.get_predictions(AAPL)
    assert len({p.model_version for p in preds}) == 2  # two per row: pages split rows
    assert _walk(lambda n, a: store.get_predictions(AAPL, limit=n, after=a), pred_key, 3) == preds

    def alert_key_of(a):
        return (a.event_time, a.alert_id)

    alerts = store.get_alerts(limit=10_000)
    assert _walk(lambda n, a: store.get_alerts(limit=n, after=a), alert_key_of, 4) == alerts
    since = dt.datetime(2018, 1, 1, tzinfo=UTC)
    toyota = store.get_alerts(instrument_id=TOYOTA, since=since)
    assert _walk(lambda n, a: store.get_alerts(instrument_id=TOYOTA, since=since, limit=n,
                                               after=a), alert_key_of, 2) == toyota


def test_api_pages_bars_from_the_bigtable_store(stores, tmp_path):
    from fastapi.testclient import TestClient

    from miraikakaku.settings import Settings
    from serving.app.main import create_app
    from tests.api.tokens import auth_header, make_user_token

    settings = Settings(env="test", data_dir=tmp_path, source_priority=list(PRIORITY),
                        database_url=f"sqlite:///{tmp_path / 'app.db'}",
                        rate_limit_per_minute=100_000, rate_limit_ip_per_minute=100_000)
    app = create_app(settings, store=stores["bigtable"])
    with TestClient(app) as c:
        _, token = make_user_token(app, email="bigtable-pager@example.com")
        headers = auth_header(token)
        for symbol, params in (("AAPL", {}), ("7203.T", {"source": "yfinance"}),
                               ("7203.T", {"start": "2018-01-01", "end": "2018-04-30"})):
            full = c.get(f"/v1/symbols/{symbol}/bars", params={**params, "limit": 10_000},
                         headers=headers).json()
            assert full["count"] > 50 and full["next_cursor"] is None
            items, cursor, pages = [], None, 0
            while True:
                query = {**params, "limit": 40, **({"cursor": cursor} if cursor else {})}
                body = c.get(f"/v1/symbols/{symbol}/bars", params=query, headers=headers).json()
                items.extend(body["data"])
                pages += 1
                cursor = body["next_cursor"]
                if cursor is None:
                    break
            assert items == full["data"], (symbol, params)
            assert pages == -(-full["count"] // 40)
        assert c.get("/v1/symbols/AAPL/bars", params={"cursor": "bm90LWEtY3Vyc29y"},
                     headers=headers).status_code == 422
        assert c.get("/readyz").json()["checks"]["store"] == "ok"


def test_superseded_revisions_read_back_alike_from_both_stores(bigtable_emulator, records,
                                                               tmp_path):
    """A correction's earlier revisions (SupersededRevision) are kept beside the bar and read
    back the same from SQLite (table bar_revisions) and Bigtable (family rev)."""
    from miraikakaku.schema import SupersededRevision

    bars = [e for e in records.of(AAPL) if e.interval == "1d"][:3]
    first = dataclasses.replace(bars[1], close=bars[2].close,
                                provenance=("v1.csv", "line:3", ""))
    second = dataclasses.replace(bars[1], open=bars[0].open,
                                 provenance=("v1.csv", "line:4", ""))
    revisions = [SupersededRevision(first, "v2.csv line:3"),
                 SupersededRevision(second, "v2.csv line:3")]
    sqlite = SqliteServingStore(tmp_path / "s.db", source_priority=PRIORITY)
    bigtable = new_bigtable_store()
    try:
        for s in (sqlite, bigtable):
            assert s.write_batch([*bars, *revisions]) == len(bars) + 2
            assert s.write_batch(revisions) == 2  # a replay adds nothing
        day = bars[1].session_date
        got = {name: s.get_bar_revisions(AAPL, start=day, end=day)
               for name, s in (("sqlite", sqlite), ("bigtable", bigtable))}
        assert sorted(got["sqlite"], key=lambda r: r.payload) == sorted(
            got["bigtable"], key=lambda r: r.payload)
        assert {(r.payload, r.origin, r.position, r.superseded_by, r.event_id)
                for r in got["sqlite"]} == {
            (e.to_json(), "v1.csv", e.provenance[1], "v2.csv line:3", e.event_id)
            for e in (first, second)}
        assert bigtable.get_bar_revisions(AAPL, start=bars[0].session_date,
                                          end=bars[0].session_date) == []
        assert bigtable.get_bar_revisions(AAPL, source="chart0") == []
        assert bigtable.counts()["bar_revisions"] == sqlite.counts()["bar_revisions"] == 2
    finally:
        sqlite.close()
        bigtable.close()
