"""Fixtures for the read-API tests: a serving store filled with real rows from ../shared/data.

``api_data`` (session) writes a SQLite serving store in a temp dir with the AAPL and MSFT daily
bars of the S&P 500 5-year file and the 7203.T bars of the Tokyo file from sources ``chart0`` and
``mlbot`` (rows whose fields do not parse, e.g. ``#VALUE!``, are skipped), converted to
``PriceEvent`` with exchange-calendar session closes, plus instruments from the reference data and
a few predictions and alert events. ``client`` is a ``TestClient`` over ``create_app(settings)``
that opens that store read-only through the app's lifespan, logged in as an analyst
(``authorize(client, role)`` logs any entered TestClient in; ``ensure_user``/``bearer`` create
accounts and tokens directly). ``build_store`` writes further stores
(e.g. a source-priority scenario) from any events.

Run: ``TF_USE_LEGACY_KERAS=1 .venv/bin/python -m pytest tests/api -q``.
"""

import csv
import dataclasses
import datetime as dt
import gzip
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from miraikakaku.calendars import get_calendar
from miraikakaku.instruments import Instrument, load_master
from miraikakaku.schema import SCHEMA_VERSION, AlertEvent, Prediction, PriceEvent, make_event_id
from miraikakaku.settings import Settings
from serving.app import accounts
from serving.app.core.security import create_access_token
from serving.app.db import Database
from serving.app.main import create_app
from serving.app.models import Role, User
from stores.sqlite import SqliteServingStore

SHARED_DATA = Settings().shared_data_dir
US_FILE = SHARED_DATA / "normalized" / "us_daily_sp500_5yr_2013_2018.normalized.csv.gz"
JP_FILE = SHARED_DATA / "normalized" / "jp_daily.normalized.csv.gz"
US_SYMBOLS = ("AAPL", "MSFT")
US_SOURCE = "sp500_5yr"
JP_SYMBOL = "7203.T"
JP_SOURCES = ("chart0", "mlbot")


# -- building events from the real files ---------------------------------------------------------

def _num(text: str | None) -> float | None:
    """Parse a numeric field: None when empty; ValueError when it is not a finite number."""
    if text is None or text.strip() == "":
        return None
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"not finite: {text!r}")
    return value


def read_rows(path: Path, symbols: Sequence[str],
              sources: Sequence[str] | None = None) -> Iterator[dict[str, str]]:
    """Yield the CSV rows of ``symbols`` (and ``sources`` when the file has a source column)."""
    with gzip.open(path, "rt", newline="") as f:
        for row in csv.DictReader(f):
            if row["symbol"] not in symbols:
                continue
            if sources is not None and row.get("source") not in sources:
                continue
            yield row


def to_price_event(row: dict[str, str], instrument: Instrument, source: str) -> PriceEvent | None:
    """Convert one normalized CSV row to a ``PriceEvent``; None when a field does not parse."""
    try:
        session_date = dt.date.fromisoformat(row["date"])
        o, h, lo, c = (_num(row[k]) for k in ("open", "high", "low", "close"))
        volume = _num(row.get("volume"))
        adj_close = _num(row.get("adj_close"))
    except (ValueError, KeyError):
        return None
    if o is None or h is None or lo is None or c is None:
        return None
    event_time, flags = get_calendar(instrument.calendar).session_close(session_date)
    return PriceEvent(
        schema_version=SCHEMA_VERSION,
        event_id=make_event_id(source, instrument.instrument_id, "1d", f"{session_date:%Y%m%d}", 0),
        instrument_id=instrument.instrument_id, symbol=row["symbol"], source=source, sequence=0,
        interval="1d", session_date=session_date, event_time=event_time, open=o, high=h, low=lo,
        close=c, volume=volume, adj_close=adj_close, currency=instrument.currency, flags=flags)


def instrument(symbol: str) -> Instrument:
    """The reference-data instrument of ``symbol`` (must be known)."""
    found = load_master().lookup(symbol)
    assert found is not None, symbol
    return found


def load_real_events() -> list[PriceEvent]:
    """PriceEvents of AAPL, MSFT (sp500_5yr) and 7203.T (chart0, mlbot) from the real files."""
    events: list[PriceEvent] = []
    for row in read_rows(US_FILE, US_SYMBOLS):
        ev = to_price_event(row, instrument(row["symbol"]), US_SOURCE)
        if ev is not None:
            events.append(ev)
    jp = instrument(JP_SYMBOL)
    for row in read_rows(JP_FILE, (JP_SYMBOL,), JP_SOURCES):
        ev = to_price_event(row, jp, row["source"])
        if ev is not None:
            events.append(ev)
    return events


def make_predictions(events: Sequence[PriceEvent], instrument_id: str, source: str,
                     log_returns: Sequence[float]) -> list[Prediction]:
    """One prediction per trailing bar of ``instrument_id``/``source`` (last len(log_returns))."""
    bars = sorted((e for e in events if e.instrument_id == instrument_id and e.source == source),
                  key=lambda e: e.session_date)[-len(log_returns):]
    out = []
    for bar, r in zip(bars, log_returns):
        cal = get_calendar(instrument(bar.symbol).calendar)
        out.append(Prediction(
            instrument_id=instrument_id, source=source, as_of_date=bar.session_date,
            as_of_time=bar.event_time, target_date=cal.next_session(bar.session_date),
            base_price=bar.feature_price, predicted_log_return=r,
            predicted_price=bar.feature_price * math.exp(r), model_name="lstm_daily",
            model_version="1"))
    return out


def make_alert(bar: PriceEvent, rule_id: str, kind: str, value: float,
               threshold: float) -> AlertEvent:
    """An alert fired by ``bar`` (id ``{rule_id}/{instrument_id}/{yyyymmdd}``)."""
    return AlertEvent(
        alert_id=f"{rule_id}/{bar.instrument_id}/{bar.session_date:%Y%m%d}", rule_id=rule_id,
        kind=kind, instrument_id=bar.instrument_id, event_time=bar.event_time,
        session_date=bar.session_date, value=value, threshold=threshold,
        message=f"{bar.symbol} {kind} {value:g} vs {threshold:g}")


def write_store(path: Path, records: Iterable[object], priority: Sequence[str]) -> Path:
    """Write ``records`` to a new SQLite serving store at ``path`` and close it."""
    store = SqliteServingStore(path, source_priority=priority)
    try:
        store.write_batch(records)
    finally:
        store.close()
    return path


# -- fixtures ------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class ApiData:
    """What the session store holds, for tests to compare responses against.

    Attributes:
        settings: settings whose ``store_path`` is the filled store.
        events: every PriceEvent written.
        predictions: the Prediction records written.
        alerts: the AlertEvent records written.
    """

    settings: Settings
    events: tuple[PriceEvent, ...]
    predictions: tuple[Prediction, ...]
    alerts: tuple[AlertEvent, ...]

    def bars(self, instrument_id: str, source: str) -> list[PriceEvent]:
        """The written bars of one instrument and source, by session date."""
        return sorted((e for e in self.events
                       if e.instrument_id == instrument_id and e.source == source),
                      key=lambda e: e.session_date)


@pytest.fixture(scope="session")
def api_data(tmp_path_factory: pytest.TempPathFactory) -> ApiData:
    """A serving store in a temp dir filled with real bars, predictions and alerts."""
    settings = Settings(env="test", data_dir=tmp_path_factory.mktemp("api-store"))
    events = load_real_events()
    aapl = sorted((e for e in events if e.instrument_id == "XNAS:AAPL"),
                  key=lambda e: e.session_date)
    toyota = sorted((e for e in events if e.instrument_id == "XTKS:7203" and e.source == "chart0"),
                    key=lambda e: e.session_date)
    predictions = (make_predictions(events, "XNAS:AAPL", US_SOURCE, [0.004, -0.012, 0.007])
                   + make_predictions(events, "XTKS:7203", "chart0", [0.003]))
    alerts = [
        make_alert(aapl[-3], "aapl_pct_move", "pct_move", -0.025, 0.02),
        make_alert(aapl[-2], "aapl_above_160", "price_cross", aapl[-2].close, 160.0),
        make_alert(aapl[-1], "aapl_below_160", "price_cross", aapl[-1].close, 160.0),
        make_alert(toyota[-1], "toyota_above_3750", "price_cross", toyota[-1].close, 3750.0),
    ]
    instruments = [instrument(s) for s in (*US_SYMBOLS, JP_SYMBOL)]
    write_store(settings.store_path, [*instruments, *events, *predictions, *alerts],
                settings.source_priority)
    return ApiData(settings, tuple(events), tuple(predictions), tuple(alerts))


TEST_PASSWORD = "correct horse battery staple"
"""Password of the accounts the helpers below create."""


def ensure_user(db: Database, email: str, role: Role | str = Role.user,
                password: str = TEST_PASSWORD) -> User:
    """The account ``email`` in ``db``, created with ``role`` when missing (role reset when it
    exists), through ``serving.app.accounts``."""
    with db.session() as session:
        user = session.scalar(select(User).where(User.email == accounts.normalize_email(email)))
        if user is None:
            user = accounts.create_user(session, email=email, password=password, role=role)
        else:
            user.role = Role(role).value
        return user


def bearer(settings: Settings, user: User, *, now: dt.datetime | None = None) -> dict[str, str]:
    """``Authorization`` header with an access token of ``user`` signed under ``settings``."""
    token, _ = create_access_token(user_id=user.id, role=user.role,
                                   token_version=user.token_version,
                                   secret=settings.secret_key.get_secret_value(),
                                   minutes=settings.access_token_minutes, now=now)
    return {"Authorization": f"Bearer {token}"}


def authorize(client: TestClient, role: Role | str = Role.analyst,
              email: str | None = None) -> User:
    """Log ``client`` (an entered TestClient over ``create_app``) in as a user of ``role``:
    the account is created in the app's database and its bearer token becomes a default
    header of the client. Returns the user."""
    app = client.app
    user = ensure_user(app.state.db, email or f"{Role(role).value}@example.com", role)
    client.headers.update(bearer(app.state.settings, user))
    return user


@pytest.fixture()
def client(api_data: ApiData) -> Iterator[TestClient]:
    """A TestClient over ``create_app(settings)``, logged in as an analyst (real-time quotes;
    see ``authorize``); the lifespan opens the store read-only and migrates the app database."""
    with TestClient(create_app(api_data.settings)) as c:
        authorize(c, Role.analyst)
        yield c


@pytest.fixture()
def db_settings(app_db_url: str, tmp_path: Path) -> Settings:
    """Test settings whose application database is ``app_db_url`` (SQLite or PostgreSQL)."""
    return Settings(env="test", data_dir=tmp_path / "app", database_url=app_db_url)


@pytest.fixture()
def db_client(db_settings: Settings, api_data: ApiData) -> Iterator[TestClient]:
    """An anonymous TestClient over ``create_app`` on the ``app_db_url`` database (both
    backends) serving the ``api_data`` store (injected, read-only)."""
    store = SqliteServingStore(api_data.settings.store_path, read_only=True)
    try:
        with TestClient(create_app(db_settings, store=store)) as c:
            yield c
    finally:
        store.close()


def register(client: TestClient, email: str, password: str = TEST_PASSWORD,
             **extra: object) -> dict:
    """``POST /v1/auth/register``; asserts 201 and returns the new user's JSON."""
    resp = client.post("/v1/auth/register", json={"email": email, "password": password, **extra})
    assert resp.status_code == 201, resp.text
    return resp.json()


def login(client: TestClient, email: str, password: str = TEST_PASSWORD) -> dict:
    """``POST /v1/auth/login`` (form); asserts 200 and returns the token JSON."""
    resp = client.post("/v1/auth/login", data={"username": email, "password": password})
    assert resp.status_code == 200, resp.text
    return resp.json()


def auth(tokens: dict) -> dict[str, str]:
    """The ``Authorization`` header of a token response."""
    return {"Authorization": f"Bearer {tokens['access_token']}"}


@pytest.fixture()
def build_store(tmp_path: Path) -> Callable[..., Settings]:
    """Return ``build(records, priority=None) -> Settings``: writes a fresh store in tmp_path."""
    counter = iter(range(1_000))

    def build(records: Iterable[object], priority: Sequence[str] | None = None) -> Settings:
        settings = Settings(env="test", data_dir=tmp_path / f"store{next(counter)}")
        if priority is not None:
            settings = settings.model_copy(update={"source_priority": list(priority)})
        write_store(settings.store_path, records, settings.source_priority)
        return settings

    return build


@pytest.fixture(scope="session")
def us_frame() -> pd.DataFrame:
    """The raw S&P 500 file's AAPL and MSFT rows (read independently of the store builder)."""
    df = pd.read_csv(US_FILE, dtype={"symbol": str, "date": str})
    return df[df["symbol"].isin(US_SYMBOLS)].reset_index(drop=True)


@pytest.fixture(scope="session")
def jp_frame() -> pd.DataFrame:
    """The Tokyo file's 7203.T rows of chart0 and mlbot whose OHLC parse as numbers."""
    df = pd.read_csv(JP_FILE, dtype=str)
    df = df[(df["symbol"] == JP_SYMBOL) & df["source"].isin(JP_SOURCES)].copy()
    for col in ("open", "high", "low", "close", "volume", "adj_close"):
        df[col] = pd.to_numeric(df[col], errors="coerce")
    return df.dropna(subset=["open", "high", "low", "close"]).reset_index(drop=True)
