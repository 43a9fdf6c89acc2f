"""The hostile daily corpus (``tests/hostile.py``): every row's fate checked in the serving store.

119 physical records built from real AAPL rows, each mutated one way (encodings, line ends,
quoting, field grammar, number and date spellings, extreme magnitudes, collisions, order); the
manifest says what must happen to each. The run must not stop on any of them, and the store
must hold exactly: one bar per ``stored`` row (its source and close), one dead letter per
``dead`` row at that row's position with the manifest's reason, nothing for ``duplicate`` rows
beyond the counter, and ``rows read = bars + dead letters + duplicates`` counted in the store.
"""

from __future__ import annotations

import sqlite3

import pytest

from pipelines.prices import run
from tests import hostile

pytestmark = pytest.mark.pipeline


def test_the_committed_corpus_and_manifest_are_what_the_builder_makes():
    corpus, manifest = hostile.render(hostile.build())
    assert hostile.CORPUS.read_bytes() == corpus
    assert hostile.MANIFEST.read_text(encoding="utf-8") == manifest


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory):
    from miraikakaku.settings import Settings

    settings = Settings(data_dir=tmp_path_factory.mktemp("hostile") / "var")
    summary = run(["--input", str(hostile.CORPUS), "--skip_inference", "true"],
                  settings=settings)
    conn = sqlite3.connect(settings.store_path)
    yield summary, conn, hostile.read_manifest()
    conn.close()


def test_every_dead_row_is_its_own_dead_letter_at_its_position(hostile_run):
    _, conn, manifest = hostile_run
    stored = {pos: (reason, origin) for pos, reason, origin in conn.execute(
        "SELECT position, reason, origin FROM dead_letters")}
    expected = {f"line:{m['line']}": m["reason"] for m in manifest if m["fate"] == "dead"}
    wrong = {pos: (reason, stored.get(pos)) for pos, reason in expected.items()
             if stored.get(pos, ("",))[0] != reason}
    assert not wrong, wrong
    assert set(stored) == set(expected)  # and no row dead-lettered that should not be
    assert {origin for _, origin in stored.values()} == {hostile.CORPUS.name}


def test_every_stored_row_is_in_the_store_with_its_value_and_flags(hostile_run):
    _, conn, manifest = hostile_run
    bars = {(row_key.split("#")[0], sd, src): close for row_key, sd, src, close in conn.execute(
        "SELECT row_key, session_date, source, close FROM bars")}
    flags: dict[tuple[str, str], set[str]] = {}
    for row_key, src, flag in conn.execute("SELECT row_key, source, flag FROM bar_flags"):
        flags.setdefault((row_key, src), set()).add(flag)
    want = [m for m in manifest if m["fate"] == "stored"]
    for m in want:
        inst = "XNYS:ZZZZ" if "unknown ticker" in m["case"] else "XNAS:AAPL"
        key = (inst, m["session_date"], m["source"])
        assert key in bars, m
        assert bars[key] == float(m["close"]), m
        need = set(filter(None, m["reason"].split("|")))
        row_key = f"{inst}#1d#{m['session_date'].replace('-', '')}"
        assert need <= flags.get((row_key, m["source"]), set()), (m, flags.get((row_key,
                                                                                m["source"])))
    assert len(bars) == len(want)  # nothing else was stored


def test_rows_read_reconcile_in_the_store(hostile_run):
    summary, conn, manifest = hostile_run
    rows = [m for m in manifest if m["fate"] != "blank"]
    n_bars = conn.execute("SELECT count(*) FROM bars").fetchone()[0]
    n_dead = conn.execute("SELECT count(*) FROM dead_letters").fetchone()[0]
    n_dup = sum(m["fate"] == "duplicate" for m in manifest)
    assert summary.events_read == len(rows) == n_bars + n_dead + n_dup
    assert summary.duplicates == n_dup and summary.conflicting_duplicates == 0
    assert summary.reconciled


def test_nothing_from_the_future_became_the_latest_quote(hostile_run):
    _, conn, manifest = hostile_run
    latest = max(m["session_date"] for m in manifest
                 if m["fate"] == "stored" and m["session_date"] < "2018-01-01")
    saturday = "2018-02-10"  # the flagged Saturday row is the latest stored AAPL session
    quote = conn.execute("SELECT session_date FROM quotes WHERE instrument_id = 'XNAS:AAPL'"
                         ).fetchone()
    assert quote[0] in (latest, saturday) and quote[0] < "2099"
    assert conn.execute("SELECT count(*) FROM bars WHERE session_date >= '2019'").fetchone()[0] \
        == 0


def test_a_file_of_only_bad_rows_is_a_failed_run(tmp_path):
    from miraikakaku.cli import main

    path = tmp_path / "bad.csv"
    path.write_bytes(b"symbol,date,open,high,low,close,volume\n"
                     b"AAPL,2013-02-08,x,68.4,66.9,67.85,1\nAAPL,2099-01-05,1,1,1,1,1\n")
    env_dir = tmp_path / "var"
    import os

    old = os.environ.get("MIRAIKAKAKU_DATA_DIR")
    os.environ["MIRAIKAKAKU_DATA_DIR"] = str(env_dir)
    try:
        from miraikakaku.settings import get_settings

        get_settings.cache_clear()
        rc = main(["run", "--input", str(path), "--skip_inference", "true", "--no-progress"])
    finally:
        if old is None:
            os.environ.pop("MIRAIKAKAKU_DATA_DIR", None)
        else:
            os.environ["MIRAIKAKAKU_DATA_DIR"] = old
        get_settings.cache_clear()
    assert rc == 1
