"""Render every benchmark's JSON in ``benchmarks/results/`` into one markdown report.

Each benchmark (``benchmarks/<name>.py``) writes ``benchmarks/results/<name>.json``::

    {"benchmark": name, "started_at": ISO UTC, "machine": {...},
     "rows": [{...flat measurement...}, ...],
     "goals": [{"goal": text, "target": x, "measured": y, "met": bool, "note": text}, ...],
     "notes": [text, ...]}

This module turns them into ``benchmarks/results/REPORT.md``: a goals table across all
benchmarks first (the numbers a user compares), then each benchmark's rows and notes. Run it
with ``make bench`` (after the benchmarks) or ``.venv/bin/python -m benchmarks.report``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

__all__ = ["ORDER", "load_results", "render", "main"]

RESULTS = Path(__file__).parent / "results"
ORDER = ("pipeline_throughput", "inference", "streaming_latency", "api_latency",
         "scale_bounded", "scale_streaming", "quality_validation")
"""Benchmarks in the order ``make bench`` runs them and the report lists them."""


def load_results(folder: Path = RESULTS) -> list[dict]:
    """The parsed results files in ``folder``, in ``ORDER`` first, then any others by name.

    Raises:
        ValueError: if a file is not valid JSON or lacks ``benchmark``.
    """
    found = {}
    for path in sorted(folder.glob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not JSON ({e})") from e
        if not isinstance(data, dict) or "benchmark" not in data:
            raise ValueError(f"{path}: no 'benchmark' key (see benchmarks/report.py)")
        found[data["benchmark"]] = data
    ordered = [found.pop(n) for n in ORDER if n in found]
    return ordered + [found[n] for n in sorted(found)]


def _cell(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:,.4g}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def _table(rows: list[dict]) -> list[str]:
    if not rows:
        return ["(no rows)"]
    columns: list[str] = []
    for r in rows:
        columns += [k for k in r if k not in columns]
    out = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    out += ["| " + " | ".join(_cell(r.get(c)) for c in columns) + " |" for r in rows]
    return out


def render(results: list[dict]) -> str:
    """Markdown for ``results`` (as ``load_results`` returns them)."""
    lines = ["# Benchmark report", ""]
    if not results:
        return "\n".join(lines + ["No results yet: run `make bench`.", ""])
    lines += ["Each benchmark runs the thing and its reference in the same run; compare ratios,",
              "not absolute numbers, across machines.", "", "## Goals", ""]
    goals = [{"benchmark": r["benchmark"], **g} for r in results for g in r.get("goals", [])]
    lines += _table(goals) + [""]
    for r in results:
        machine = r.get("machine", {})
        lines += [f"## {r['benchmark']}", "",
                  f"Run {r.get('started_at', '?')} on "
                  + ", ".join(f"{k} {v}" for k, v in machine.items()), ""]
        lines += _table(r.get("rows", [])) + [""]
        lines += [f"- {n}" for n in r.get("notes", [])]
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    """Write ``REPORT.md`` and print it; exit 1 if there are no results."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    results = load_results(args.results)
    text = render(results)
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "REPORT.md").write_text(text, encoding="utf-8")
    print(text)
    print(f"written: {args.results / 'REPORT.md'}", file=sys.stderr)
    return 0 if results else 1


if __name__ == "__main__":
    raise SystemExit(main())
