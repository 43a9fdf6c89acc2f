"""Benchmark: publish → stored latency of the streaming pipeline on the emulators.

Starts its own Pub/Sub and Bigtable emulators, creates the resources, then for each offered
rate publishes real IBM trades (Lean tick file, 2013-10-07) paced at that rate with the
collector while ``miraikakaku run --subscription … --sink bigtable`` runs on the DirectRunner.
Latency per message = the time its Bigtable row was written (recorded by wrapping the sink's
``finish_bundle``) minus the time the publish was acknowledged. Prints p50/p95/p99 per rate,
whether the pipeline kept up (everything stored within 30 s after publishing ended), and
writes ``benchmarks/results/streaming_latency.json``.

Run: ``make bench`` or ``TF_USE_LEGACY_KERAS=1 .venv/bin/python -m benchmarks.streaming_latency
[--rates 100,200,500,1000] [--seconds 20]``. A benchmark, not a test: numbers depend on the
machine; compare rates within one run.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import threading
import time
import uuid
from pathlib import Path

import numpy as np


def _percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    a = np.asarray(values)
    return {f"p{q}": round(float(np.percentile(a, q)), 3) for q in (50, 95, 99)}


def measure(rate: int, seconds: float, project: str, trades: list) -> dict:
    """Publish ``rate * seconds`` trades paced at ``rate``/s and measure publish → stored."""
    from collector.publisher import make_publisher
    from miraikakaku import rowkeys
    from miraikakaku.settings import Settings
    from pipelines.prices import run
    from transforms import sinks

    written: dict[bytes, float] = {}
    lock = threading.Lock()
    original = sinks._WriteBigtableRowsFn.finish_bundle

    def finish_bundle(self):
        keys = [r.row_key for rows in self._rows.values() for r in rows]
        result = original(self)
        now = time.time()
        with lock:
            for k in keys:
                written.setdefault(k, now)
        return result

    sinks._WriteBigtableRowsFn.finish_bundle = finish_bundle
    n = int(rate * seconds)
    batch = trades[:n]
    topic = f"projects/{project}/topics/prices"
    handle = run(["--subscription", f"projects/{project}/subscriptions/prices-streaming",
                  "--sink", "bigtable", "--bigtable_project", project,
                  "--skip_inference", "true"],
                 settings=Settings(data_dir=Path("/tmp") / f"mk-bench-{project}"))
    published: dict[bytes, float] = {}
    try:
        time.sleep(3)  # let the reader start
        publisher = make_publisher()
        t0 = time.time()
        for i, e in enumerate(batch):
            due = t0 + i / rate
            delay = due - time.time()
            if delay > 0:
                time.sleep(delay)
            t = e.event_time
            fut = publisher.publish(
                topic, e.to_json().encode(), ordering_key=e.instrument_id, event_id=e.event_id,
                symbol=e.symbol,
                event_time=t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z")
            key = rowkeys.event_key(e).encode()
            fut.add_done_callback(lambda f, k=key: published.setdefault(k, time.time()))
        publish_seconds = time.time() - t0
        deadline = time.time() + 30
        while time.time() < deadline and len(written) < n:
            time.sleep(0.5)
    finally:
        handle.cancel()
        sinks._WriteBigtableRowsFn.finish_bundle = original
    lat = [written[k] - published[k] for k in published if k in written]
    return {"offered_rate": rate, "messages": n, "stored": len(lat),
            "achieved_publish_rate": round(n / publish_seconds, 1),
            "kept_up": len(lat) == n, **_percentiles(lat)}


def main(argv=None) -> int:
    """Run the benchmark; see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", default="100,200,500,1000")
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    from collector.files import events_from_file
    from miraikakaku.resources import init_gcp
    from miraikakaku.schema import PriceEvent
    from miraikakaku.settings import Settings
    from tests.emulators import running_emulator

    ticks = Settings().shared_data_dir / "normalized" / "us_tick_trades_lean.normalized.csv.gz"
    start = dt.datetime(2013, 10, 7, 13, 30, tzinfo=dt.timezone.utc)
    trades = [e for e in events_from_file(ticks, symbols=["IBM"], start=start, source="lean",
                                          sorted_input=True) if isinstance(e, PriceEvent)]
    results = []
    with contextlib.ExitStack() as stack:
        os.environ["PUBSUB_EMULATOR_HOST"] = stack.enter_context(running_emulator("pubsub"))
        os.environ["BIGTABLE_EMULATOR_HOST"] = stack.enter_context(running_emulator("bigtable"))
        for rate in (int(r) for r in args.rates.split(",")):
            project = f"mk-bench-{uuid.uuid4().hex[:8]}"
            init_gcp(project, instance="miraikakaku", emulator=True)
            r = measure(rate, args.seconds, project, trades)
            results.append(r)
            print(json.dumps(r), flush=True)
    sustained = [r["offered_rate"] for r in results if r["kept_up"] and r.get("p99", 1e9) < 2.0]
    summary = {"results": results, "highest_rate_with_p99_under_2s": max(sustained, default=None)}
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "streaming_latency.json").write_text(json.dumps(summary, indent=2))
    print("| offered msg/s | stored | p50 s | p95 s | p99 s | kept up |")
    print("|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['offered_rate']} | {r['stored']}/{r['messages']} | {r.get('p50')} | "
              f"{r.get('p95')} | {r.get('p99')} | {r['kept_up']} |")
    print("highest rate with p99 < 2 s:", summary["highest_rate_with_p99_under_2s"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
