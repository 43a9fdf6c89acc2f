"""Benchmark: events/s and peak memory of the streaming path at 1×, 4× and 16× input size.

What it measures: for each size, the first ``base × multiple`` real IBM trades of the Lean tick
file (2013-10-07 onwards, in file order; 16× of the default base, 72,000 trades, spans
2013-10-07 to 2013-10-09, so larger inputs cover more event time with the same instrument and
real prices: nothing is replicated or renamed) are published to the Pub/Sub emulator as a
backlog, then ``pipelines.prices.run --subscription … --sink bigtable --skip_inference true``
runs on the DirectRunner in a child process until every event read is stored, dead-lettered or
counted as a duplicate (``RunSummary.reconciled``) and all of them were read. Throughput =
events / seconds from the first event read to the last stored; memory = the child's peak
resident set (``VmHWM`` in ``/proc/self/status``), also shown above its RSS when the pipeline
had started (before any event).

Reference: the 4× run. The goal (issue 8) is peak memory within 10 % from 4× to 16× (state
bounded in event time); events/s should not fall with size either.

Run: ``flock /tmp/bench.lock .venv/bin/python -m benchmarks.scale_streaming [--quick]
[--base 4500] [--multiples 1,4,16]``. Starts its own emulators (``tests/emulators.py``).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from benchmarks._output import now_iso, write_results
from benchmarks.streaming_latency import load_trades

__all__ = ["publish_backlog", "main"]

REPO = Path(__file__).resolve().parent.parent
START = dt.datetime(2013, 10, 7, tzinfo=dt.timezone.utc)


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def publish_backlog(project: str, trades: list) -> float:
    """Publish every trade to ``projects/{project}/topics/prices`` as fast as the client goes.

    Returns:
        Seconds it took until every publish was acknowledged.

    Raises:
        google.api_core.exceptions.GoogleAPICallError: a publish failed.
    """
    from collector.publisher import make_publisher

    publisher = make_publisher()
    topic = f"projects/{project}/topics/prices"
    t0 = time.perf_counter()
    futures = []
    for e in trades:
        t = e.event_time
        futures.append(publisher.publish(
            topic, e.to_json().encode(), ordering_key=e.instrument_id, event_id=e.event_id,
            symbol=e.symbol,
            event_time=t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"))
    for f in futures:
        f.result(timeout=120)
    return time.perf_counter() - t0


def _child(argv: list[str]) -> int:
    """``--child PROJECT N TIMEOUT``: run the pipeline until N events are read and reconciled;
    print one JSON line with the timings and memory."""
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    from miraikakaku.settings import Settings
    from pipelines.prices import run

    project, n, timeout = argv[0], int(argv[1]), float(argv[2])
    rss_before = _status_kb("VmRSS")
    handle = run(["--subscription", f"projects/{project}/subscriptions/prices-streaming",
                  "--sink", "bigtable", "--bigtable_project", project,
                  "--skip_inference", "true"],
                 settings=Settings(data_dir=Path(tempfile.gettempdir()) / f"mk-bench-{project}"))
    rss_started = _status_kb("VmRSS")
    first = done = None
    deadline = time.perf_counter() + timeout
    s = handle.summary()
    try:
        while time.perf_counter() < deadline:
            time.sleep(0.25)
            s = handle.summary()
            if first is None and s.events_read:
                first = time.perf_counter()
            if s.events_read >= n and s.reconciled:
                done = time.perf_counter()
                break
    finally:
        handle.cancel()
    print(json.dumps({
        "events_read": s.events_read, "stored": s.bars_stored, "duplicates": s.duplicates,
        "dead_letters": s.parse_dead_letters + s.validation_dead_letters,
        "seconds": None if done is None or first is None else done - first,
        "rss_before_kb": rss_before, "rss_started_kb": rss_started,
        "peak_rss_kb": _status_kb("VmHWM")}), flush=True)
    return 0


def main(argv=None) -> int:
    """Run the benchmark; see the module docstring."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["--child"]:
        return _child(args_list[1:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="base 100 trades, 1× and 4×")
    parser.add_argument("--base", type=int, default=4500, help="trades at 1×")
    parser.add_argument("--multiples", default="1,4,16")
    parser.add_argument("--timeout", type=float, default=900.0,
                        help="seconds a size may take before it counts as not finished")
    args = parser.parse_args(args_list)
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    from miraikakaku.resources import init_gcp
    from tests.emulators import running_emulator

    base = 100 if args.quick else args.base
    multiples = [1, 4] if args.quick else [int(m) for m in args.multiples.split(",")]
    started = now_iso()
    all_trades = load_trades(base * max(multiples), start=START)
    rows: list[dict] = []
    with contextlib.ExitStack() as stack:
        os.environ["PUBSUB_EMULATOR_HOST"] = stack.enter_context(running_emulator("pubsub"))
        os.environ["BIGTABLE_EMULATOR_HOST"] = stack.enter_context(running_emulator("bigtable"))
        for m in multiples:
            trades = all_trades[:base * m]
            project = f"mk-bench-{uuid.uuid4().hex[:8]}"
            init_gcp(project, instance="miraikakaku", emulator=True)
            publish_s = publish_backlog(project, trades)
            out = subprocess.run(
                [sys.executable, "-m", "benchmarks.scale_streaming", "--child", project,
                 str(len(trades)), str(args.timeout)], cwd=REPO, capture_output=True, text=True,
                env={**os.environ, "TF_USE_LEGACY_KERAS": "1"}, check=True)
            c = json.loads(out.stdout.strip().splitlines()[-1])
            secs = c["seconds"]
            row = {"size": f"{m}x", "events": len(trades),
                   "event_span": f"{trades[0].event_time:%Y-%m-%d %H:%M}.."
                                 f"{trades[-1].event_time:%Y-%m-%d %H:%M} UTC",
                   "publish_s": round(publish_s, 1), "events_read": c["events_read"],
                   "stored": c["stored"], "duplicates": c["duplicates"],
                   "dead_letters": c["dead_letters"], "finished": secs is not None,
                   "seconds": None if secs is None else round(secs, 1),
                   "events_per_s": None if not secs else round(len(trades) / secs, 1),
                   "peak_rss_mb": round(c["peak_rss_kb"] / 1024, 1),
                   "rss_at_start_mb": round(c["rss_started_kb"] / 1024, 1),
                   "peak_above_start_mb": round((c["peak_rss_kb"] - c["rss_started_kb"]) / 1024,
                                                1)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    goals, notes = _goals(rows, multiples)
    write_results("scale_streaming", started, rows, goals, notes, args.quick)
    return 0


def _goals(rows: list[dict], multiples: list[int]) -> tuple[list[dict], list[str]]:
    goals = []
    by = {r["size"]: r for r in rows}
    lo, hi = f"{sorted(multiples)[-2]}x", f"{max(multiples)}x"
    if lo in by and hi in by and lo != hi:
        growth = by[hi]["peak_rss_mb"] / by[lo]["peak_rss_mb"] - 1.0
        goals.append({"goal": f"streaming peak memory within 10 % from {lo} to {hi}",
                      "target": 0.10, "measured": round(growth, 3),
                      "met": bool(growth <= 0.10 and by[hi]["finished"]),
                      "note": f"peak RSS {by[lo]['peak_rss_mb']} MB at {lo}, "
                              f"{by[hi]['peak_rss_mb']} MB at {hi} (above the started "
                              f"pipeline: {by[lo]['peak_above_start_mb']} → "
                              f"{by[hi]['peak_above_start_mb']} MB)"})
    notes = ["input: the first N real IBM trades of the Lean tick file from 2013-10-07 (more "
             "trades = more event time, same instrument; nothing replicated), published as a "
             "backlog before the pipeline starts; pipeline = DirectRunner (in_memory, 1 worker) "
             "in a child process with the Bigtable emulator sink; peak RSS = the child's VmHWM"]
    return goals, notes


if __name__ == "__main__":
    raise SystemExit(main())
