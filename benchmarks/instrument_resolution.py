"""Benchmark: what resolving symbols by date costs the parser (the dated instrument master).

Parses real files outside Beam (``transforms.parsing.iter_file``) twice per round, alternating:

* **dated**: the packaged master (``load_master()``): a reused ticker (FB, WM, GOOG, ...) is
  resolved with the row's date (``InstrumentMaster.needs_date`` then ``resolve(symbol, on)``);
* **undated**: the same instruments without aliases, so every ticker names one instrument and
  ``needs_date`` is always False (the cost before the dated master, plus one dict look-up).

Files: the Lean daily file (19 symbols, 8 of them reused or renamed: the worst case) and the
S&P 500 five-year file (404 symbols, 2 reused: GOOG and NWSA). Rows/s is the best of
``--repeat`` rounds; the overhead is ``1 - dated / undated``. Also times ``resolve`` alone per
call for a plain ticker (AAPL) and a reused one (FB) with and without a date.

Run: ``flock /tmp/bench.lock .venv/bin/python -m benchmarks.instrument_resolution [--repeat 3]``.
Writes ``benchmarks/results/instrument_resolution.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import time
import timeit
from pathlib import Path

from miraikakaku.instruments import InstrumentMaster, load_master
from miraikakaku.settings import Settings
from transforms.parsing import file_spec, iter_file

RESULTS = Path(__file__).resolve().parent / "results" / "instrument_resolution.json"
FILES = ("us_daily_lean.normalized.csv.gz", "us_daily_sp500_5yr_2013_2018.normalized.csv.gz")


def _undated(master: InstrumentMaster) -> InstrumentMaster:
    """The same instruments, each with only its own symbol (no dated aliases)."""
    return InstrumentMaster([dataclasses.replace(i, aliases=()) for i in master],
                            default_mic=master.default_mic, symbology=master.symbology)


def _rate(path: Path, master: InstrumentMaster) -> tuple[float, int]:
    spec = file_spec(path)
    start = time.perf_counter()
    n = sum(1 for _ in iter_file(spec, master))
    return n / (time.perf_counter() - start), n


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="Rounds (best of). Default: 3.")
    args = parser.parse_args(argv)
    dated = load_master()
    undated = _undated(dated)
    out: dict[str, object] = {"measured_at": dt.datetime.now(dt.timezone.utc).isoformat()}
    for name in FILES:
        path = Settings().shared_data_dir / "normalized" / name
        best = {"dated": 0.0, "undated": 0.0}
        rows = 0
        for _ in range(args.repeat):
            for label, master in (("undated", undated), ("dated", dated)):
                rate, rows = _rate(path, master)
                best[label] = max(best[label], rate)
        out[name] = {"rows": rows, "rows_per_s_dated": round(best["dated"]),
                     "rows_per_s_undated": round(best["undated"]),
                     "overhead": round(1 - best["dated"] / best["undated"], 4)}
        print(name, out[name])
    day = dt.date(2010, 1, 4)
    n = 200_000
    calls = {}
    for sym in ("AAPL", "FB"):
        calls[f"resolve({sym})_us"] = timeit.timeit(lambda s=sym: dated.resolve(s), number=n) \
            / n * 1e6
        calls[f"resolve({sym}, on)_us"] = timeit.timeit(
            lambda s=sym: dated.resolve(s, day), number=n) / n * 1e6
    out["per_call"] = {k: round(v, 3) for k, v in calls.items()}
    print(out["per_call"])
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
