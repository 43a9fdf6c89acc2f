"""What an outside attack on the batch path found, each on real rows and counted in the store:
a ``sequence`` column on daily bars, trades sharing a millisecond, a corrupt Parquet page.
"""

from __future__ import annotations

import csv
import gzip
import sqlite3

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from miraikakaku.settings import Settings
from pipelines.prices import run
from tests.conftest import SHARED, SP500, read_rows, write_csv
from transforms.parsing import file_spec, iter_file

pytestmark = pytest.mark.pipeline
ARGS = ["--skip_inference", "true"]
TICKS = SHARED / "normalized" / "us_tick_trades_lean.normalized.csv.gz"


def _counts(path) -> dict[str, int]:
    conn = sqlite3.connect(path)
    return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
            for t in ("bars", "dead_letters", "bar_revisions")}


def test_a_bar_with_a_nonzero_sequence_is_a_dead_letter_not_a_silent_overwrite(tmp_path):
    """A daily bar's row key has no sequence: two rows of one session with sequences 0 and 1
    were two events in the counts and one row in the store (the first print lost, no
    history, "reconciled")."""
    header, rows = read_rows(SP500, {"A"})
    a, b = rows[:2]
    data = [[*a, "0"], [*a, "1"], [*b, "7"], [*b, str(2**63 - 1)]]
    path = write_csv(tmp_path / "seq.csv", [*header, "sequence"], data)
    settings = Settings(data_dir=tmp_path / "var")
    summary = run(["--input", str(path), "--source", "sp500_5yr", *ARGS], settings=settings)
    counts = _counts(settings.store_path)
    assert counts == {"bars": 1, "dead_letters": 3, "bar_revisions": 0}
    assert summary.dead_letters_by_reason == {"ParseEvents:bad_sequence": 3}
    assert summary.events_read == 4 == counts["bars"] + counts["dead_letters"] + \
        summary.duplicates


def test_trades_sharing_a_millisecond_are_all_stored(tmp_path):
    """The Lean tick file has 53,211 (symbol, millisecond) keys with more than one trade; the
    pipeline gave them all sequence 0 (one event id: 6 of 9 trades dropped as "corrections"),
    while iter_file numbered them."""
    with gzip.open(TICKS, "rt", newline="") as f:
        reader = csv.reader(f)
        header = next(reader)
        rows, last, shared = [], None, 0
        for row in reader:
            if row[0] != "SPY":
                continue
            shared += row[1] == last
            last = row[1]
            rows.append(row)
            if len(rows) == 400:
                break
    assert shared > 20  # real trades that share a timestamp
    path = write_csv(tmp_path / "trades.csv", header, rows)
    settings = Settings(data_dir=tmp_path / "var")
    summary = run(["--input", str(path), "--source", "lean", *ARGS], settings=settings)
    conn = sqlite3.connect(settings.store_path)
    stored = {r[0]: r[1] for r in conn.execute(
        "SELECT event_id, volume FROM bars WHERE interval = 'tick'")}
    assert summary.duplicates == 0 and summary.conflicting_duplicates == 0
    expected = {e.event_id: e.volume for e in iter_file(file_spec(path, "lean"))}
    assert len(expected) == 400 and stored == expected
    assert sum(stored.values()) == sum(float(r[3]) for r in rows)  # no shares lost


def test_a_corrupt_parquet_page_fails_the_file_before_anything_runs(tmp_path):
    header, rows = read_rows(SP500, {"A"})
    rows = rows[:10]
    cols = {name: [r[i] for r in rows] for i, name in enumerate(header)}
    table = pa.table({"symbol": cols["symbol"] if "symbol" in cols else cols[header[0]],
                      "date": cols["date"],
                      **{k: [float(x) for x in cols[k]] for k in ("open", "high", "low",
                                                                 "close", "volume")}})
    path = tmp_path / "corrupt.parquet"
    pq.write_table(table, path, row_group_size=5, compression="snappy")
    col = pq.ParquetFile(path).metadata.row_group(1).column(5)  # close, second row group
    data = bytearray(path.read_bytes())
    for i in range(col.data_page_offset + 20, col.data_page_offset + 40):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="not a readable Parquet file"):
        file_spec(str(path), "sp500_5yr")
    good = write_csv(tmp_path / "good.csv", header, rows[:3])
    settings = Settings(data_dir=tmp_path / "var")
    with pytest.raises(ValueError, match="corrupt.parquet"):
        run(["--input", str(good), "--input", str(path), "--source", "sp500_5yr", *ARGS],
            settings=settings)
    assert not settings.store_path.exists() or _counts(settings.store_path)["bars"] == 0
