"""Shared test fixtures: real price data from ../shared/data and marker enforcement.

Every test must carry one of the markers in pytest.ini (unit, pipeline, api, e2e); an unmarked
test fails collection. Tests never skip for missing data: ../shared/data is part of the
environment, and its absence is an error.
"""

from __future__ import annotations

import csv
import gzip
import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

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
