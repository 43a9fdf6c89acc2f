"""``miraikakaku quality``: validate history files with the quality suites, in batch.

``miraikakaku quality --input PATH [--input ...] [--out DIR] [--kind price_events]``

Reads each file the way the pipeline does (``transforms.parsing.file_spec`` + ``iter_file``:
normalized CSV(.gz), the raw layouts the parser accepts, Parquet), so a record the parser
dead-letters is reported as a failing, blocked row with the parser's reason (``missing_field``,
``bad_number``, ...), not lost. The parsed events of all inputs form one frame; ``prepare`` adds
the per-instrument columns (time order, return z-scores, session gaps) and ``validate_frame``
runs the suite in one GX call, so the run has one Data Docs page. ``features`` and
``predictions`` inputs are CSV or Parquet tables with the columns of
``quality.validate.features_to_frame`` / ``predictions_to_frame``.

Outputs in ``--out`` (default ``./quality-report``):

* ``index.html``: GX Data Docs for the run's validation result (rendered offline with GX's
  renderer) plus a section listing the parser's dead letters. The page's tables are plain HTML;
  its CSS/JS (Bootstrap, jQuery, Font Awesome, Vega) load from public CDNs, so offline it shows
  unstyled but complete tables;
* ``summary.json``: rows in, passing, blocked (at parse and by the suite), flagged, per-rule and
  per-instrument counts, runtime and peak memory; ``rows_in == rows_passing + rows_blocked``;
* ``failing_rows.csv``: one line per (row, rule): input, record (1-based data record of the file),
  instrument_id, symbol, session_date, event_time, rule, severity, observed values.

Exit code: 1 when any row is blocked (a blocking expectation failed, or the parser dead-lettered
a record), 0 otherwise, 2 on usage errors (bad arguments, a missing or unreadable input).
"""

from __future__ import annotations

import argparse
import csv
import html
import json
import os
import resource
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["add_parser", "run_command", "run_quality", "main", "OBSERVED_COLUMNS"]

_CHUNK = 50_000
OBSERVED_COLUMNS: dict[str, tuple[str, ...]] = {
    "non_positive_price": ("open", "high", "low", "close", "adj_close"),
    "high_below_low": ("high", "low"),
    "negative_volume": ("volume",),
    "zero_volume": ("volume",),
    "ohlc_inconsistent": ("open", "high", "low", "close"),
    "extreme_range": ("high", "low", "close", "hl_ratio"),
    "bad_number": ("open", "high", "low", "close", "volume", "adj_close"),
    "outside_session": ("interval", "event_time"),
    "time_not_increasing": ("event_time",),
    "duplicate_key": ("source", "interval", "start", "sequence"),
    "large_move": ("close", "adj_close", "return_z"),
    "gap": ("session_gap",),
    "intraday_gap": ("intraday_gap_bars",),
}
"""Columns shown in ``failing_rows.csv``'s ``observed`` field per rule (others: the rule's own
columns)."""
_FIELDS = ("input", "record", "instrument_id", "symbol", "session_date", "event_time", "rule",
           "severity", "observed")


class UsageError(Exception):
    """Bad command-line input (exit code 2)."""


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    if hasattr(v, "isoformat"):
        return v.isoformat()
    return str(v)


def _read_price_files(paths: Sequence[str], console: Any, show_progress: bool):
    """Parse every file; return (frame, record numbers, input names, dead-letter rows, inputs)."""
    import numpy as np
    import pandas as pd
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from miraikakaku.instruments import load_master
    from miraikakaku.schema import DeadLetter
    from quality.validate import events_to_frame
    from transforms.parsing import file_spec, iter_file

    master = load_master()
    specs = []
    for p in paths:
        try:
            specs.append(file_spec(p))
        except (FileNotFoundError, ValueError, OSError) as e:
            raise UsageError(f"cannot read {p}: {e}") from e
    frames: list[pd.DataFrame] = []
    records: list[np.ndarray] = []
    origins: list[str] = []
    dead: list[dict[str, Any]] = []
    inputs: list[dict[str, Any]] = []
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed:,}"),
                  TimeElapsedColumn(), console=console, disable=not show_progress,
                  transient=True) as progress:
        for spec in specs:
            task = progress.add_task(f"read {spec.origin}", total=None)
            chunk: list[Any] = []
            chunk_rec: list[int] = []
            n = n_dead = 0
            for item in iter_file(spec, master):
                n += 1
                if isinstance(item, DeadLetter):
                    n_dead += 1
                    dead.append(_dead_row(spec, n, item, master))
                else:
                    chunk.append(item)
                    chunk_rec.append(n)
                    if len(chunk) >= _CHUNK:
                        _flush(chunk, chunk_rec, spec.origin, frames, records, origins)
                        progress.update(task, completed=n)
            _flush(chunk, chunk_rec, spec.origin, frames, records, origins)
            progress.update(task, completed=n)
            inputs.append({"path": str(spec.path), "records": n, "parse_failures": n_dead,
                           "source": spec.default_source, "interval": spec.interval})
    df = pd.concat(frames, ignore_index=True) if frames else events_to_frame([])
    rec = np.concatenate(records) if records else np.zeros(0, np.int64)
    return df, rec, origins, dead, inputs


def _flush(chunk: list[Any], chunk_rec: list[int], origin: str, frames: list[Any],
           records: list[Any], origins: list[str]) -> None:
    import numpy as np

    from quality.validate import events_to_frame

    if chunk:
        frames.append(events_to_frame(chunk).drop(columns=["flags", "event_id"]))
        records.append(np.asarray(chunk_rec, np.int64))
        origins.extend([origin] * len(chunk))
        chunk.clear()
        chunk_rec.clear()


def _dead_row(spec: Any, record: int, d: Any, master: Any) -> dict[str, Any]:
    symbol = instrument = ""
    date = ""
    try:
        if spec.columns is not None:
            values = next(csv.reader([d.payload]))
            fields = dict(zip(spec.columns, values, strict=False))
        else:
            fields = {}
        symbol = (fields.get("symbol") or "").strip()
        date = (fields.get("date") or "").strip()
        if symbol:
            instrument = master.resolve(symbol).instrument_id
    except (csv.Error, StopIteration, ValueError):
        pass
    return {"input": spec.origin, "record": record, "instrument_id": instrument,
            "symbol": symbol, "session_date": date[:10], "event_time": "",
            "rule": d.reason, "severity": "block",
            "observed": f"{d.detail}; payload={d.payload[:200]}"}


def _read_table(path: str):
    import pandas as pd

    if not os.path.exists(path):
        raise UsageError(f"cannot read {path}: no such file")
    try:
        if path.endswith(".parquet"):
            return pd.read_parquet(path)
        return pd.read_csv(path)
    except Exception as e:  # noqa: BLE001 - any reader error is a usage error here
        raise UsageError(f"cannot read {path}: {e}") from e


def _failing_rows(df: Any, result: Any, rec: Any, origins: Sequence[str], suite: Any
                  ) -> list[dict[str, Any]]:
    rows = []
    cols = set(df.columns)
    own = {r.name: r.columns for r in suite.rules}
    for pos in sorted(result.row_failures):
        row = df.iloc[pos]
        base = {
            "input": origins[pos] if pos < len(origins) else "",
            "record": int(rec[pos]) if pos < len(rec) else pos + 1,
            "instrument_id": row.get("instrument_id", ""),
            "symbol": row.get("symbol", ""),
            "session_date": _fmt(row["session_date"])[:10] if "session_date" in cols else
            _fmt(row.get("as_of_date", ""))[:10],
            "event_time": _fmt(row["event_time"]) if "event_time" in cols else
            _fmt(row.get("as_of_time", "")),
        }
        for name, sev in result.row_failures[pos]:
            shown = [c for c in OBSERVED_COLUMNS.get(name, own.get(name, ())) if c in cols]
            observed = ";".join(f"{c}={_fmt(row[c])}" for c in shown)
            rows.append({**base, "rule": name, "severity": sev, "observed": observed})
    return rows


def _data_docs(result: Any, dead: Sequence[dict[str, Any]], summary: dict[str, Any],
               path: Path) -> None:
    """Render the GX validation result as the run's Data Docs page, plus the parser's rejects."""
    extra = [f"<h3>miraikakaku quality: {summary['rows_in']:,} rows in, "
             f"{summary['rows_passing']:,} passing, {summary['rows_blocked']:,} blocked "
             f"({summary['rows_blocked_at_parse']:,} by the parser), "
             f"{summary['rows_flagged']:,} flagged</h3>"]
    extra.append("<h4>Rules (expectation severities)</h4><table class='table table-sm'>"
                 "<tr><th>rule</th><th>severity</th><th>rows failing</th><th>rows evaluated"
                 "</th><th>expectation</th><th>checks</th></tr>")
    for r in summary["rules"]:
        o = summary["per_rule"].get(r["rule"], {})
        extra.append("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in (
            r["rule"], r["severity"], o.get("failed", "not run"), o.get("evaluated", ""),
            r["expectation"], r["description"])) + "</tr>")
    extra.append("</table>")
    if dead:
        extra.append("<h4>Records the parser dead-lettered (blocked before the suite)</h4>"
                     "<table class='table table-sm'><tr><th>input</th><th>record</th>"
                     "<th>symbol</th><th>date</th><th>reason</th><th>detail</th></tr>")
        for d in dead[:1000]:
            extra.append("<tr>" + "".join(
                f"<td>{html.escape(str(d[k]))}</td>"
                for k in ("input", "record", "symbol", "session_date", "rule", "observed"))
                + "</tr>")
        extra.append("</table>")
    style = ("<style>/* readable without the CDN stylesheets (offline) */ table{border-collapse:"
             "collapse} td,th{border:1px solid #ccc;padding:2px 6px;vertical-align:top} "
             "body{font-family:sans-serif}</style>")
    block = (style + "<div class='container-fluid' id='miraikakaku-summary'>" + "".join(extra)
             + "</div>")
    if result is not None:
        from great_expectations.render.renderer import ValidationResultsPageRenderer
        from great_expectations.render.view import DefaultJinjaPageView

        page = DefaultJinjaPageView().render(ValidationResultsPageRenderer().render(result))
        marker = "<body"
        i = page.find(marker)
        j = page.find(">", i) + 1 if i >= 0 else 0
        page = page[:j] + block + page[j:]
    else:
        page = f"<!doctype html><html><body>{block}<p>No rows to validate.</p></body></html>"
    path.write_text(page, encoding="utf-8")


def run_quality(inputs: Sequence[str], out_dir: str | Path, kind: str = "price_events", *,
                console: Any = None, show_progress: bool = True) -> dict[str, Any]:
    """Validate ``inputs`` with the ``kind`` suite and write the report to ``out_dir``.

    Returns:
        The summary (also written as ``summary.json``); ``summary["exit_code"]`` is 1 when a
        row is blocked, else 0.

    Raises:
        UsageError: an input that does not exist or cannot be read; an unknown kind.
    """
    import numpy as np
    from rich.console import Console

    from quality.suites import KINDS, LARGE_MOVE_K, LARGE_MOVE_WINDOW, get_suite
    from quality.validate import (
        PRICE_KINDS,
        add_row_columns,
        prepare,
        validate_frame,
    )

    if kind not in KINDS:
        raise UsageError(f"unknown kind {kind!r}; expected one of {KINDS}")
    console = console or Console(stderr=True)
    t0 = time.perf_counter()
    suite = get_suite(kind)
    if kind in PRICE_KINDS:
        df, rec, origins, dead, input_info = _read_price_files(inputs, console, show_progress)
    else:
        import pandas as pd

        tables = [_read_table(p) for p in inputs]
        df = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
        rec = np.concatenate([np.arange(1, len(t) + 1) for t in tables]) if tables else \
            np.zeros(0, np.int64)
        origins = [os.path.basename(p) for p, t in zip(inputs, tables, strict=True)
                   for _ in range(len(t))]
        dead = []
        input_info = [{"path": p, "records": len(t), "parse_failures": 0}
                      for p, t in zip(inputs, tables, strict=True)]
        for c in df.columns:
            if c.endswith("_date") or c in ("as_of_time", "event_time"):
                df[c] = pd.to_datetime(df[c], utc=c.endswith("time"))
    t_read = time.perf_counter()
    with console.status("prepare and validate", spinner="dots") if show_progress else _Null():
        df = prepare(df, kind)
        add_row_columns(df, kind)
        result = validate_frame(df, kind)
    t_val = time.perf_counter()
    failing = _failing_rows(df, result, rec, origins, suite)
    rows_in = int(len(df) + len(dead))
    per_rule: dict[str, dict[str, Any]] = {}
    for name, o in result.per_rule.items():
        per_rule[name] = {"severity": o.severity, "failed": o.failed, "evaluated": o.evaluated,
                          "success": o.success}
    for reason, count in Counter(d["rule"] for d in dead).items():
        entry = per_rule.setdefault(reason, {"severity": "block", "failed": 0, "evaluated": 0,
                                             "success": True})
        entry["failed"] += count
        entry["parse_failures"] = count
        entry["success"] = False
    per_inst: dict[str, dict[str, Any]] = defaultdict(
        lambda: {"rows": 0, "blocked": 0, "flagged": 0, "rules": Counter()})
    if "instrument_id" in df.columns:
        for iid, n in df["instrument_id"].value_counts().items():
            per_inst[str(iid)]["rows"] = int(n)
        iids = df["instrument_id"].to_numpy()
        flagged = result.flagged
        for pos, fails in result.row_failures.items():
            e = per_inst[str(iids[pos])]
            e["blocked"] += pos in result.blocked
            e["flagged"] += pos in flagged
            e["rules"].update(n for n, _ in fails)
    for d in dead:
        e = per_inst[d["instrument_id"] or d["symbol"] or "?"]
        e["rows"] += 1
        e["blocked"] += 1
        e["rules"][d["rule"]] += 1
    rows_blocked = len(result.blocked) + len(dead)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {
        "kind": kind,
        "inputs": input_info,
        "rows_in": rows_in,
        "rows_passing": rows_in - rows_blocked,
        "rows_blocked": rows_blocked,
        "rows_blocked_at_parse": len(dead),
        "rows_blocked_by_suite": len(result.blocked),
        "rows_flagged": len(result.flagged),
        "rows_clean": rows_in - rows_blocked - len(result.flagged),
        "per_rule": per_rule,
        "per_instrument": {k: {**v, "rules": dict(v["rules"])}
                           for k, v in sorted(per_inst.items())},
        "rules": [{"rule": r.name, "severity": r.severity, "description": r.description,
                   "expectation": r.expectation.expectation_type} for r in suite.rules],
        "large_move": {"k": LARGE_MOVE_K, "window": LARGE_MOVE_WINDOW},
        "outputs": {"data_docs": str(out / "index.html"),
                    "failing_rows": str(out / "failing_rows.csv"),
                    "summary": str(out / "summary.json")},
    }
    fail_rows = sorted(dead + failing, key=lambda r: (r["input"], r["record"]))
    with open(out / "failing_rows.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=_FIELDS)
        w.writeheader()
        w.writerows(fail_rows)
    blocked_rows = [r for r in fail_rows if r["severity"] == "block"]
    summary["blocked_rows"] = blocked_rows[:_BLOCKED_LISTED]  # all of them: failing_rows.csv
    _data_docs(result.gx_result, dead, summary, out / "index.html")
    t_end = time.perf_counter()
    summary["timings_seconds"] = {"read": round(t_read - t0, 2),
                                  "validate": round(t_val - t_read, 2),
                                  "write": round(t_end - t_val, 2),
                                  "total": round(t_end - t0, 2)}
    summary["peak_rss_mb"] = round(_rss_mb(), 1)
    summary["exit_code"] = 1 if rows_blocked else 0
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n",
                                      encoding="utf-8")
    return summary


_BLOCKED_LISTED = 100
"""Blocked rows listed in ``summary.json`` (and the first 20 on the console)."""


class _Null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _print(summary: dict[str, Any], console: Any) -> None:
    from rich.table import Table

    t = Table(title=f"quality ({summary['kind']}): {summary['rows_in']:,} rows in")
    t.add_column("rule")
    t.add_column("severity")
    t.add_column("rows failing", justify="right")
    for name, r in summary["per_rule"].items():
        if r["failed"]:
            t.add_row(name, r["severity"], f"{r['failed']:,}")
    t.add_section()
    t.add_row("passing", "", f"{summary['rows_passing']:,}")
    t.add_row("  of which flagged", "", f"{summary['rows_flagged']:,}")
    t.add_row("blocked", "", f"{summary['rows_blocked']:,}")
    console.print(t)
    blocked = summary.get("blocked_rows") or []
    if blocked:
        b = Table(title="blocked rows (all of them in failing_rows.csv)")
        for c in ("instrument_id", "session_date", "rule", "observed"):
            b.add_column(c)
        for r in blocked[:20]:
            b.add_row(*(str(r.get(c) or "") for c in ("instrument_id", "session_date", "rule",
                                                    "observed")))
        if summary["rows_blocked"] > 20:
            b.add_row(f"... {summary['rows_blocked'] - 20:,} more", "", "", "")
        console.print(b)
    o = summary["outputs"]
    console.print(f"Data Docs: {o['data_docs']}\nfailing rows: {o['failing_rows']}\n"
                  f"summary: {o['summary']}\n{summary['timings_seconds']['total']} s, "
                  f"peak memory {summary['peak_rss_mb']:.0f} MB")


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``quality`` to the CLI."""
    p = subparsers.add_parser(
        "quality", help="Validate history files with the data-quality suites (GX Data Docs).",
        description="Validate price history files (or feature/prediction tables) with the "
                    "Great Expectations quality suites; write Data Docs (index.html), "
                    "summary.json and failing_rows.csv. Exit 1 when a row is blocked.")
    p.add_argument("--input", action="append", required=True,
                   help="File to validate (repeatable): CSV, CSV.gz or Parquet.")
    p.add_argument("--out", type=Path, default=Path("quality-report"),
                   help="Report directory. Default: ./quality-report.")
    p.add_argument("--kind", default="price_events",
                   choices=("price_events", "bars", "features", "predictions"),
                   help="Suite. Default: price_events.")
    p.add_argument("--no-progress", dest="progress", action="store_false",
                   help="No live progress display.")
    return p


def run_command(args: argparse.Namespace) -> int:
    """Run ``quality``; returns the exit code (0 clean or flags only, 1 blocked, 2 usage)."""
    from rich.console import Console

    console = Console(stderr=True)
    try:
        summary = run_quality(args.input, args.out, args.kind, console=console,
                              show_progress=args.progress)
    except UsageError as e:
        console.print(f"[red]miraikakaku quality: {e}[/red]")
        return 2
    _print(summary, Console())
    return int(summary["exit_code"])


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m quality.report``: the same as ``miraikakaku quality``."""
    parser = argparse.ArgumentParser(prog="miraikakaku")
    sub = parser.add_subparsers(dest="command", required=True)
    add_parser(sub)
    args = parser.parse_args(["quality", *(sys.argv[1:] if argv is None else argv)])
    return run_command(args)


if __name__ == "__main__":
    sys.exit(main())
