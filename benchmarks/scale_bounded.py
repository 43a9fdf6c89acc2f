"""Benchmark: events/s and peak memory of the bounded pipeline at 1×, 4× and 16× input size.

Input: the first ``--tickers`` symbols of the real S&P 500 five-year file in ../shared/data
(1× = 20 symbols, ~25,000 daily bars). The 4× and 16× inputs replicate those rows under renamed
symbols (``AAPL`` → ``AAPL-R1`` … ``AAPL-R15``; the ``-`` keeps them valid tickers, resolved by
rule as XNYS stocks), so every row is a real price and each replica is a distinct instrument:
the pipeline's per-instrument work grows with the input, as it does with more symbols.

Each size runs in its own subprocess (``python -m benchmarks.scale_bounded --child FILE``) that
calls ``pipelines.prices.run(["--input", FILE, "--skip_inference", "true", ...])`` on the
DirectRunner (after a warm-up run on 2 symbols) and prints its ``RunSummary``; the parent
measures the child's peak RSS (the kernel's ``ru_maxrss`` from ``os.wait4`` on that child) and
its wall time. Events/s is ``RunSummary.events_read / wall_seconds`` (from ``p.run()`` to the
end, so Python and Beam start-up are left out). The sizes run back to back in one invocation,
so their ratios hold.

Run: ``flock /tmp/bench.lock .venv/bin/python -m benchmarks.scale_bounded [--quick]
[--tickers 20] [--factors 1,4,16]``. Writes ``benchmarks/results/scale_bounded.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

from benchmarks._output import now_iso, write_results
from benchmarks.pipeline_throughput import write_subset

NAME = "scale_bounded"
REPO = Path(__file__).resolve().parent.parent


def _child(path: str, work: str, warmup: str | None) -> int:
    """Run the bounded pipeline once on ``path`` and print its summary as JSON (last line);
    first once on ``warmup`` (a 2-symbol file) so one-off set-up stays out of the rate."""
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    from miraikakaku.settings import Settings
    from pipelines.prices import run

    if warmup:
        run(["--input", warmup, "--skip_inference", "true",
             "--store_path", str(Path(work) / "warmup.db")], settings=Settings(data_dir=Path(work)))
    s = run(["--input", path, "--skip_inference", "true",
             "--store_path", str(Path(work) / "serving.db")],
            settings=Settings(data_dir=Path(work)))
    print(json.dumps(s.to_dict()))
    return 0


def measure(path: Path, work: Path, warmup: Path | None = None) -> dict:
    """Run one size in a subprocess; return its summary, wall time and peak RSS (MiB)."""
    work.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1")
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "benchmarks.scale_bounded", "--child",
                             str(path), "--work", str(work),
                             *(["--warmup", str(warmup)] if warmup else [])], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"child failed ({proc.returncode}) on {path}")
    summary = json.loads(out.strip().splitlines()[-1])
    return {"summary": summary, "process_seconds": wall,
            "peak_rss_mib": usage.ru_maxrss / 1024}  # ru_maxrss is in KiB on Linux


def main(argv: Iterable[str] | None = None) -> int:
    """Run the benchmark; see the module docstring."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 tickers, 1x and 2x (seconds)")
    parser.add_argument("--tickers", type=int, default=20, help="symbols at 1x")
    parser.add_argument("--factors", default="1,4,16")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--work", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--warmup", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(list(argv) if argv is not None else None)
    if args.child:
        return _child(args.child, args.work, args.warmup)
    if args.quick:
        args.tickers, args.factors = 2, "1,2"
    factors = [int(f) for f in args.factors.split(",")]
    started = now_iso()
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="mk-bench-scale-") as tmp:
        warmup = Path(tmp) / "warmup.csv"
        write_subset(warmup, 2)
        for f in factors:
            path = Path(tmp) / f"sp500_first{args.tickers}_x{f}.csv"
            info = write_subset(path, args.tickers, replicas=f)
            m = measure(path, Path(tmp) / f"run-x{f}", warmup)
            s = m["summary"]
            rows.append({"size": f"{f}x", "input_rows": info["rows"],
                         "instruments": info["symbols"], "events_read": s["events_read"],
                         "pipeline_seconds": round(s["wall_seconds"], 2),
                         "events_per_s": round(s["events_per_second"], 1),
                         "process_seconds": round(m["process_seconds"], 2),
                         "peak_rss_mib": round(m["peak_rss_mib"], 1),
                         "reconciled": s["reconciled"]})
            print(rows[-1], file=sys.stderr)
            path.unlink()
    base = rows[0]
    for r in rows:
        r["rate_vs_1x"] = round(r["events_per_s"] / base["events_per_s"], 3)
        r["rss_vs_1x"] = round(r["peak_rss_mib"] / base["peak_rss_mib"], 3)
    notes = [
        f"1x = first {args.tickers} symbols of the S&P 500 five-year file (real daily bars); "
        "larger sizes replicate them under renamed symbols (SYM-R1 ...), real prices",
        "each size in its own subprocess; peak RSS = ru_maxrss of that child (os.wait4); "
        "events/s over the pipeline's run (RunSummary.wall_seconds) after a 2-symbol warm-up "
        "run in the same child (start-up excluded); "
        "DirectRunner (FnApiRunner, in_memory, 1 worker), SQLite sink, no inference",
        "the streaming path (state bounded in event time) is measured by scale_streaming",
    ]
    if len(rows) >= 2:
        last, prev = rows[-1], rows[-2]
        growth = last["peak_rss_mib"] / prev["peak_rss_mib"]
        speed = last["events_per_s"] / prev["events_per_s"]
        notes.append(f"{prev['size']} → {last['size']}: rate x{speed:.2f}, peak RSS x{growth:.2f} "
                     f"({prev['peak_rss_mib']:.0f} → {last['peak_rss_mib']:.0f} MiB)")
    write_results(NAME, started, rows, [], notes, args.quick)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
