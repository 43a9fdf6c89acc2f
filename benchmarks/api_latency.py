"""Benchmark: latency of the read API under open-loop load at fixed offered rates.

What it measures: p50/p99 latency, achieved rate and errors of ``/v1/symbols/AAPL/quote``,
``/v1/symbols/AAPL/bars`` (one year of daily bars, ~251), ``/v1/symbols/AAPL/predictions`` (one
year of a model's predictions) and the reference, the trivial ``/healthz`` of the same app, at
offered rates of 100, 200 and 500 requests/s, endpoints interleaved per rate in one run.

Set-up (real data, real pipeline): the daily S&P 500 file (2013-2018) for 14 US tickers
including AAPL and the Tokyo file for 6 Japanese ones (the e2e test's symbols), a tiny LSTM
(``models.training.train``, 1 epoch, 20,000 examples) and ``pipelines.prices.run`` into a SQLite
serving store in a temporary data dir. The server is ``python -m serving.app.server`` (what
``miraikakaku serve`` runs: uvicorn, one worker, access log on) in its own process; the load
generator is another process (asyncio + aiohttp on uvloop) that sends request i at
``t0 + i / rate`` whatever happened before (open loop) and measures each latency from that
scheduled time, so a slow server cannot hide behind a slowed client (no coordinated omission).
Both share the machine's cores with each other.

Reference: ``/healthz`` on the same server is the floor (uvicorn + FastAPI + one store ping);
the goal is p99 < 50 ms at 200 requests/s for quote, bars and predictions.

Authentication: the market routes need a login, so the benchmark creates an ``analyst`` and a
``user`` account in the server's application database (``data_dir/app.db``) through
``serving.app.accounts`` and sends their signed access tokens (``Authorization: Bearer``); every
data request therefore includes the JWT check and the user's database lookup. ``quote`` is the
analyst's real-time quote, ``quote_delayed`` the user's delayed one (the latest bar at least
``quote_delay_minutes`` old: a key-range query instead of the latest-quote row). The per-user
and per-IP rate limits are raised out of the way (they are still evaluated on every request).

Run: ``flock /tmp/bench.lock .venv/bin/python -m benchmarks.api_latency [--quick]
[--rates 100,200,500] [--seconds 15]``. ``--profile`` runs the server under pyinstrument and
writes ``benchmarks/results/api_latency_profile.txt``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from benchmarks._output import RESULTS, now_iso, percentiles, write_results

__all__ = ["ENDPOINTS", "ROLES", "build_store", "create_tokens", "drive", "main"]

REPO = Path(__file__).resolve().parent.parent
US = ("AAPL", "MSFT", "IBM", "JPM", "XOM", "GE", "KO", "NVDA", "AMZN", "GOOG", "LNT", "NWL",
      "CHD", "DHR")
JPS = ("7203.T", "6758.T", "9984.T", "8306.T", "1321.T", "N225")
ENDPOINTS = {
    "healthz": "/healthz",
    "quote": "/v1/symbols/AAPL/quote",
    "quote_delayed": "/v1/symbols/AAPL/quote",
    "bars_1y": "/v1/symbols/AAPL/bars?start=2017-02-08&end=2018-02-07",
    "predictions_1y": "/v1/symbols/AAPL/predictions?start=2017-02-08&end=2018-02-07",
}
"""Endpoint label → path; the data ends 2018-02-07, so the ranges are its last year."""
ROLES = {"quote_delayed": "user"}
"""Endpoint label → role of the account that calls it (default ``analyst``)."""
TOKENS_ENV = "MIRAIKAKAKU_BENCH_TOKENS"
"""Environment variable that hands the load generator the access tokens (JSON role → token)."""


def create_tokens(data_dir: Path, secret: str, minutes: float = 240.0) -> dict[str, str]:
    """Create an ``analyst`` and a ``user`` account in the application database of
    ``data_dir`` (migrated first) and sign access tokens for them under ``secret``.

    Returns:
        Role → access token (valid ``minutes``).
    """
    from miraikakaku.settings import Settings
    from serving.app import accounts
    from serving.app.core.security import create_access_token
    from serving.app.db import Database

    settings = Settings(data_dir=data_dir)
    db = Database.connect(settings.app_database_url)
    tokens = {}
    try:
        for role in ("analyst", "user"):
            with db.session() as session:
                user = accounts.create_user(session, email=f"bench-{role}@example.com",
                                            password=f"bench {role} password", role=role)
                tokens[role], _ = create_access_token(
                    user_id=user.id, role=role, token_version=user.token_version, secret=secret,
                    minutes=minutes)
    finally:
        db.close()
    return tokens


def _auth(tokens: dict[str, str], label: str) -> dict[str, str]:
    if label == "healthz":
        return {}
    return {"Authorization": f"Bearer {tokens[ROLES.get(label, 'analyst')]}"}


def build_store(data_dir: Path, quick: bool) -> dict:
    """Train a tiny model and run the batch pipeline into ``data_dir`` (real daily files).

    Args:
        data_dir: the ``MIRAIKAKAKU_DATA_DIR`` of the server (store at ``serving.db``).
        quick: 3 symbols and 2,000 examples instead of 20 symbols and 20,000.

    Returns:
        ``{"events": n, "bars": n, "predictions": n, "seconds": s}`` of the pipeline run.
    """
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    from miraikakaku.settings import Settings
    from models.training import train
    from pipelines.prices import run
    from tests.conftest import JP, SP500, read_rows, write_csv

    settings = Settings(data_dir=data_dir)
    us, jps = (("AAPL", "MSFT"), ("7203.T",)) if quick else (US, JPS)
    uh, ur = read_rows(SP500, set(us))
    jh, jr = read_rows(JP, set(jps))
    jr = [r for r in jr if r[1] >= "2012-01-01"]
    data_dir.mkdir(parents=True, exist_ok=True)
    inputs = [write_csv(data_dir / "us_daily_sp500_5yr_2013_2018.csv", uh, ur),
              write_csv(data_dir / "jp_daily.csv", jh, jr)]
    t0 = time.perf_counter()
    train(inputs, settings=settings, epochs=1, max_train_examples=2_000 if quick else 20_000,
          progress=False)
    argv = [a for p in inputs for a in ("--input", str(p))] + ["--source", "sp500_5yr"]
    s = run(argv, settings=settings)
    return {"symbols": len(us) + len(jps), "events": s.events_read, "bars": s.bars_stored,
            "predictions": s.predictions,
            "seconds": round(time.perf_counter() - t0, 1)}


async def drive(url: str, rate: float, seconds: float, timeout: float = 10.0,
                headers: dict[str, str] | None = None) -> dict:
    """Open-loop load: GET ``url`` at ``t0 + i / rate`` for ``seconds``; latencies from the
    scheduled times. The client is aiohttp (C HTTP parser): httpx needed more CPU than the
    server per 252-bar response and became the bottleneck. ``headers`` go with every request
    (the bearer token).

    Returns:
        ``offered_rps``, ``requests``, ``ok``, ``errors``, ``achieved_rps`` (answers / span from
        the first scheduled send to the last answer), ``p50_ms``, ``p99_ms``, ``max_ms`` (of the
        200 answers), ``send_lag_p99_ms`` (how late the generator itself sent: its own limit).
    """
    import aiohttp

    n = max(1, int(rate * seconds))
    clock = time.perf_counter  # uvloop's loop.time() has millisecond resolution
    lat: list[float] = []
    lag: list[float] = []
    errors: dict[str, int] = {}
    ends: list[float] = []
    connector = aiohttp.TCPConnector(limit=512)
    client_timeout = aiohttp.ClientTimeout(total=timeout)
    async with aiohttp.ClientSession(connector=connector, timeout=client_timeout,
                                     headers=headers) as session:
        warm_until = clock() + 60.0  # the server may still answer an earlier overload
        warmed = 0
        while warmed < 5 and clock() < warm_until:  # warm the connection and the route
            with contextlib.suppress(Exception):
                async with session.get(url) as r:
                    await r.read()
                    warmed += r.status == 200

        async def one(due: float) -> None:
            lag.append(clock() - due)
            try:
                async with session.get(url) as r:
                    await r.read()
                    kind = None if r.status == 200 else f"http_{r.status}"
            except Exception as e:  # noqa: BLE001 - every failure is counted by its type
                kind = type(e).__name__
            end = clock()
            ends.append(end)
            if kind is None:
                lat.append(end - due)
            else:
                errors[kind] = errors.get(kind, 0) + 1

        t0 = clock() + 0.1
        tasks = []
        for i in range(n):
            due = t0 + i / rate
            delay = due - clock()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(due)))
        await asyncio.gather(*tasks)
    span = max(ends) - t0 if ends else 0.0
    pct = percentiles(lat, (50, 99), scale=1000.0, digits=1)
    return {"offered_rps": rate, "requests": n, "ok": len(lat),
            "errors": sum(errors.values()), "error_kinds": ",".join(sorted(errors)) or None,
            "achieved_rps": round(len(lat) / span, 1) if span else None,
            "p50_ms": pct["p50"], "p99_ms": pct["p99"],
            "max_ms": round(max(lat) * 1000, 1) if lat else None,
            "send_lag_p99_ms": percentiles(lag, (99,), scale=1000.0, digits=1)["p99"]}


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (``/proc/<pid>/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _loadgen(argv: list[str]) -> int:
    """Child process: ``--loadgen BASE SERVER_PID RATE SECONDS LABEL...``; prints one JSON line
    per label, with the CPU milliseconds per request of the server and of this generator."""
    import uvloop

    base, server_pid, rate, seconds, *labels = argv
    tokens = json.loads(os.environ.get(TOKENS_ENV, "{}"))
    for label in labels:
        s0, c0 = _cpu_seconds(int(server_pid)), time.process_time()
        r = uvloop.run(drive(base + ENDPOINTS[label], float(rate), float(seconds),
                             headers=_auth(tokens, label)))
        s1, c1 = _cpu_seconds(int(server_pid)), time.process_time()
        r["server_cpu_ms_per_req"] = round((s1 - s0) * 1000 / r["requests"], 2)
        r["client_cpu_ms_per_req"] = round((c1 - c0) * 1000 / r["requests"], 2)
        print(json.dumps({"endpoint": label, **r}), flush=True)
    return 0


def _wait_healthy(base: str, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the API server exited with {proc.returncode}")
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(base + "/healthz", timeout=1) as r:
                if r.status == 200:
                    return
        time.sleep(0.3)
    raise TimeoutError(f"{base}/healthz not healthy after {timeout:.0f} s")


def _check_data(base: str, tokens: dict[str, str]) -> dict:
    counts = {}
    for label, path in ENDPOINTS.items():
        request = urllib.request.Request(base + path, headers=_auth(tokens, label))
        with urllib.request.urlopen(request, timeout=10) as r:
            body = json.loads(r.read())
        counts[label] = body.get("count", 1)
        if label != "healthz" and not counts[label]:
            raise RuntimeError(f"{path} returned no data: {body}")
        if label.startswith("quote") and body["delayed"] != (label == "quote_delayed"):
            raise RuntimeError(f"{label}: unexpected entitlement {body}")
    return counts


def main(argv=None) -> int:
    """Run the benchmark; see the module docstring."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["--loadgen"]:
        return _loadgen(args_list[1:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny store, 1 s at 50 req/s")
    parser.add_argument("--rates", default="100,200,500", help="offered requests/s")
    parser.add_argument("--seconds", type=float, default=15.0, help="per endpoint and rate")
    parser.add_argument("--profile", action="store_true",
                        help="run the server under pyinstrument (adds overhead)")
    args = parser.parse_args(args_list)
    rates = [50.0] if args.quick else [float(r) for r in args.rates.split(",")]
    seconds = 1.0 if args.quick else args.seconds
    started = now_iso()
    from tests.emulators import free_port

    with tempfile.TemporaryDirectory(prefix="mk-bench-api-") as tmp:
        data_dir = Path(tmp) / "var"
        setup = build_store(data_dir, args.quick)
        print("store:", json.dumps(setup), flush=True)
        secret = secrets.token_urlsafe(48)
        tokens = create_tokens(data_dir, secret)
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        env = {**os.environ, "MIRAIKAKAKU_DATA_DIR": str(data_dir),
               "MIRAIKAKAKU_API_HOST": "127.0.0.1", "MIRAIKAKAKU_API_PORT": str(port),
               "TF_USE_LEGACY_KERAS": "1", "MIRAIKAKAKU_SECRET_KEY": secret,
               "MIRAIKAKAKU_RATE_LIMIT_PER_MINUTE": "100000000",
               "MIRAIKAKAKU_RATE_LIMIT_IP_PER_MINUTE": "100000000",
               TOKENS_ENV: json.dumps(tokens)}
        env.pop("MIRAIKAKAKU_DATABASE_URL", None)  # the app database is data_dir/app.db
        profile_out = RESULTS / "api_latency_profile.txt"
        cmd = [sys.executable, "-m", "serving.app.server"]
        if args.profile:
            RESULTS.mkdir(exist_ok=True)
            cmd = [sys.executable, "-m", "pyinstrument", "-r", "text", "-o", str(profile_out),
                   "-m", "serving.app.server"]
        log = open(Path(tmp) / "server.log", "w")
        server = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        rows: list[dict] = []
        try:
            _wait_healthy(base, server)
            counts = _check_data(base, tokens)
            for rate in rates:
                out = subprocess.run(
                    [sys.executable, "-m", "benchmarks.api_latency", "--loadgen", base,
                     str(server.pid), str(rate), str(seconds), *ENDPOINTS], cwd=REPO, env=env,
                    capture_output=True, text=True)
                if out.returncode:
                    print(out.stderr[-3000:], file=sys.stderr)
                    rows.append({"endpoint": "load generator failed", "offered_rps": rate,
                                 "errors": 1, "error_kinds": out.stderr.strip()[-200:]})
                for line in out.stdout.splitlines():
                    r = json.loads(line)
                    r["items"] = counts[r["endpoint"]]
                    rows.append(r)
                    print(json.dumps(r), flush=True)
        finally:
            server.send_signal(2)  # SIGINT: uvicorn shuts down, pyinstrument writes its report
            try:
                server.wait(timeout=60)
            except subprocess.TimeoutExpired:
                server.kill()
            log.close()
    goals, notes = _goals(rows, setup)
    write_results("api_latency", started, rows, goals, notes, args.quick)
    return 0


def _goals(rows: list[dict], setup: dict) -> tuple[list[dict], list[str]]:
    at200 = [r for r in rows if r["offered_rps"] == 200 and r["endpoint"] != "healthz"]
    worst = max(at200, key=lambda r: r.get("p99_ms") or 1e9, default=None)
    goals = []
    if worst is not None:
        measured = worst.get("p99_ms")
        goals.append({"goal": "API p99 < 50 ms at 200 requests/s (quote, bars 1y, predictions 1y)",
                      "target": 50.0, "measured": measured,
                      "met": bool(measured is not None and measured < 50.0
                                  and all(r["errors"] == 0 for r in at200)),
                      "note": f"worst endpoint: {worst['endpoint']}; per endpoint: "
                              + ", ".join(f"{r['endpoint']} {r.get('p99_ms')} ms"
                                          for r in at200)})
    notes = [f"store: real pipeline run on {setup['symbols']} daily tickers "
             f"({setup['events']} events, {setup['bars']} bars, {setup['predictions']} "
             "predictions, tiny 1-epoch LSTM); "
             "server: uvicorn 1 worker (as `miraikakaku serve`, access log on); data requests "
             "carry a bearer token (JWT check + user lookup in the SQLite app database; "
             "quote_delayed: a `user` account, delayed-quote query); load: open-loop "
             "aiohttp/uvloop client in a separate process, latency from the scheduled send time",
             "server and load generator share the machine's cores: at high rates part of the "
             "latency is the client's own CPU (send_lag_p99_ms shows how late it sent)"]
    cpu = {}
    for r in rows:
        if r.get("server_cpu_ms_per_req") is not None:
            cpu.setdefault(r["endpoint"], []).append(
                f"{r['server_cpu_ms_per_req']} ms at {r['offered_rps']:g}/s")
    if cpu:
        notes.append("where the time goes: server CPU per request (one uvicorn process; one core "
                     "saturates at 1000 / ms requests/s): "
                     + "; ".join(f"{k}: {', '.join(v)}" for k, v in cpu.items()))
    return goals, notes


if __name__ == "__main__":
    raise SystemExit(main())
