"""Shared test fixtures: real price data from ../shared/data and marker enforcement.

Every test must carry one of the markers in pytest.ini (unit, pipeline, api, e2e); an unmarked
test fails collection. Tests never skip for missing data: ../shared/data is part of the
environment, and its absence is an error.
"""

from __future__ import annotations

import csv
import gzip
import os
import secrets
from pathlib import Path

import pytest

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# A random JWT key per test session: Settings(env="test") refuses the development placeholder.
os.environ.setdefault("MIRAIKAKAKU_SECRET_KEY", secrets.token_urlsafe(48))

from miraikakaku.settings import Settings  # noqa: E402

_MARKERS = {"unit", "pipeline", "api", "e2e", "integration", "tfx"}
SHARED = Settings().shared_data_dir
SP500 = SHARED / "normalized" / "us_daily_sp500_5yr_2013_2018.normalized.csv.gz"
JP = SHARED / "normalized" / "jp_daily.normalized.csv.gz"


def pytest_collection_modifyitems(config, items):
    unmarked = [i.nodeid for i in items if not _MARKERS & {m.name for m in i.iter_markers()}]
    if unmarked:
        raise pytest.UsageError(f"tests without a marker ({sorted(_MARKERS)}): {unmarked}")


def read_rows(path: Path, symbols: set[str] | None = None, source: str | None = None
              ) -> tuple[list[str], list[list[str]]]:
    """Header and data rows (as text) of a normalized file, filtered by symbol and source."""
    if not path.exists():
        raise FileNotFoundError(f"{path} missing: the tests need ../shared/data")
    with gzip.open(path, "rt", newline="") as f:
        reader = csv.reader(f)
        header = next(reader)
        rows = [r for r in reader
                if (symbols is None or r[0] in symbols)
                and (source is None or "source" not in header
                     or r[header.index("source")] == source)]
    return header, rows


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    """Write rows as a CSV file with a header; returns ``path``."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)
    return path


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings with a private data dir."""
    return Settings(data_dir=tmp_path / "var")


def _emulator(kind: str, env: str):
    from tests.emulators import running_emulator, wait_for_port

    host = os.environ.get(env)
    if host:
        wait_for_port(host, timeout=30)
        yield host
        return
    with running_emulator(kind) as host:
        os.environ[env] = host
        try:
            yield host
        finally:
            os.environ.pop(env, None)


@pytest.fixture(scope="session")
def pubsub_emulator():
    """``host:port`` of a running Pub/Sub emulator (``PUBSUB_EMULATOR_HOST`` is set)."""
    yield from _emulator("pubsub", "PUBSUB_EMULATOR_HOST")


@pytest.fixture(scope="session")
def bigtable_emulator():
    """``host:port`` of a running Bigtable emulator (``BIGTABLE_EMULATOR_HOST`` is set)."""
    yield from _emulator("bigtable", "BIGTABLE_EMULATOR_HOST")


# -- application database (issue 5): every API test that uses it runs on SQLite and PostgreSQL --
POSTGRES_URL = os.environ.get("MIRAIKAKAKU_TEST_POSTGRES_URL",
                              "postgresql+psycopg://postgres@localhost:5432/miraikakaku_test")
"""The PostgreSQL test database; `.ci/run` recreates it fresh. The fixtures create it when it is
missing and fail (never skip) when the server does not answer."""
REDIS_URL = os.environ.get("MIRAIKAKAKU_TEST_REDIS_URL", "redis://localhost:6379/15")
"""The Redis database the rate-limit tests use (`.ci/run` makes sure Redis is up)."""


def _ensure_postgres_database(url: str) -> None:
    import psycopg
    from sqlalchemy.engine import make_url

    u = make_url(url)
    admin = dict(host=u.host or "localhost", port=u.port or 5432, user=u.username or "postgres",
                 dbname="postgres", autocommit=True, connect_timeout=5)
    if u.password:
        admin["password"] = u.password
    try:
        conn = psycopg.connect(**admin)
    except psycopg.OperationalError as e:
        raise RuntimeError(f"PostgreSQL at {u.host}:{u.port} does not answer ({e}); start it "
                           "(`.ci/run` does) - the API tests run on PostgreSQL too") from e
    with conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                            (u.database,)).fetchone():
            conn.execute(f'CREATE DATABASE "{u.database}"')


@pytest.fixture(params=["sqlite", "postgresql"])
def app_db_url(request, tmp_path: Path):
    """A fresh, empty application database URL: a SQLite file, or a new PostgreSQL schema
    (dropped afterwards) in the test database. Migrate it with ``serving.app.db.migrate``
    (``create_app``'s lifespan does)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'app.db'}"
        return
    import uuid

    import sqlalchemy as sa

    _ensure_postgres_database(POSTGRES_URL)
    schema = f"t_{uuid.uuid4().hex[:12]}"
    engine = sa.create_engine(POSTGRES_URL)
    with engine.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    sep = "&" if "?" in POSTGRES_URL else "?"
    try:
        yield f"{POSTGRES_URL}{sep}options=-csearch_path%3D{schema}"
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        engine.dispose()
