"""Shared output helpers of the streaming, API and streaming-scale benchmarks.

``write_results`` writes the contract's JSON (``benchmarks/results/<name>.json``, see
``benchmarks/report.py``) and prints the rows as a markdown table; ``percentiles`` gives the
p50/p95/p99 used by the latency benchmarks.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["RESULTS", "machine", "now_iso", "percentiles", "markdown_table", "write_results"]

RESULTS = Path(__file__).parent / "results"


def now_iso() -> str:
    """The current UTC time as ISO 8601 with offset, seconds precision."""
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def machine() -> dict:
    """CPU count, Python and Beam versions of this machine."""
    import apache_beam

    return {"cpus": os.cpu_count(), "python": platform.python_version(),
            "beam": apache_beam.__version__}


def percentiles(values: Sequence[float], qs: Sequence[int] = (50, 95, 99),
                scale: float = 1.0, digits: int = 3) -> dict[str, float | None]:
    """``{"p50": ..., "p95": ..., "p99": ...}`` of ``values`` times ``scale`` (numpy's linear
    interpolation); None for every quantile when ``values`` is empty."""
    if len(values) == 0:
        return {f"p{q}": None for q in qs}
    a = np.asarray(values, dtype=float) * scale
    return {f"p{q}": round(float(np.percentile(a, q)), digits) for q in qs}


def markdown_table(rows: Sequence[dict]) -> str:
    """The rows as a markdown table (columns: the union of keys, in first-seen order)."""
    cols: list[str] = []
    for r in rows:
        cols += [k for k in r if k not in cols]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join("" if r.get(c) is None else str(r.get(c))
                                       for c in cols) + " |")
    return "\n".join(lines)


def write_results(name: str, started_at: str, rows: list[dict], goals: list[dict],
                  notes: list[str], quick: bool, extra: dict | None = None) -> Path:
    """Write ``benchmarks/results/<name>.json`` in the contract's shape, print the table.

    Args:
        name: benchmark name (the module name).
        started_at: ISO UTC start time.
        rows: flat measurement dicts (numbers already rounded).
        goals: ``{"goal", "target", "measured", "met", "note"}`` dicts.
        notes: free text (where the time goes, caveats).
        quick: a ``--quick`` smoke run (recorded in the notes so nobody quotes it).
        extra: further top-level keys for the JSON (e.g. the input's description).

    Returns:
        The path written.
    """
    if quick:
        notes = ["--quick smoke run: not a measurement"] + list(notes)
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"benchmark": name, "started_at": started_at,
                                "machine": machine(), "rows": rows, "goals": goals,
                                "notes": notes, **(extra or {})}, indent=2, default=str))
    print(markdown_table(rows))
    for g in goals:
        print(f"goal: {g['goal']}: measured {g['measured']} (target {g['target']}) -> "
              f"{'met' if g['met'] else 'MISSED'}")
    for n in notes:
        print("note:", n)
    return path
