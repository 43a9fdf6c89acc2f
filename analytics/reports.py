"""Saved, parameterized analytics reports: a registry of SQL file + parameters + chart.

``REPORTS`` maps a report name to its BigQuery-dialect query (``analytics/sql/queries/*.sql``,
run on the embedded warehouse through ``analytics.warehouse`` (sqlglot → DuckDB) or on BigQuery
as it is), its parameters and a chart spec:

==================  ========================================  ====================================
``performance``     daily performance of ``symbols``          line: cumulative return
``trend``           breadth per exchange (market_trend)       line: share above the 50-day average
``volatility``      rolling volatility of ``symbols``         line: 20-session volatility
``correlation``     correlation matrix of ``symbols``         heatmap
``beta``            beta of ``symbols`` against ``benchmark``  bars
``model_performance`` errors per model version and day        line: MAPE
``data_quality``    flags and dead letters per month          line: count per flag / reason
==================  ========================================  ====================================

Parameters are validated (``resolve_params``: symbols must be in the instrument master and are
passed as instrument ids; dates ISO ``YYYY-MM-DD``) and bound as query parameters (``@symbols``,
``@start``, ...), never formatted into SQL. Outputs: ``to_csv``, ``to_json``, ``to_png`` (a
matplotlib chart, drawn without pyplot so it is safe in the API's threadpool) and ``to_html``
(the chart embedded as a data URI, then the table).

Where the data comes from (``open_warehouse``): the embedded analytics store the pipeline writes
(Parquet files, ``data_dir/warehouse``, read lock-free through ``analytics.sink``), or a DuckDB
file built with ``analytics.Warehouse`` (``--warehouse path.duckdb``, opened read-only).

Run: ``miraikakaku report performance --symbols AAPL,MSFT --start 2017-01-01 --format png
--output perf.png``; the API serves the same reports at ``/v1/reports`` (role analyst/admin).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import dataclasses
import datetime as dt
import html
import io
import json
import math
import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

__all__ = [
    "QUERIES_DIR",
    "FORMATS",
    "ReportParam",
    "ChartSpec",
    "Report",
    "REPORTS",
    "ReportError",
    "UnknownReport",
    "get_report",
    "resolve_params",
    "run_report",
    "open_warehouse",
    "to_csv",
    "to_json",
    "to_png",
    "to_html",
    "render",
    "report_parser",
    "main",
    "run_cli",
]

QUERIES_DIR = Path(__file__).resolve().parent / "sql" / "queries"
FORMATS = ("csv", "json", "html", "png")
MIN_DATE = dt.date(1, 1, 1)
"""``start`` when not given (BigQuery's smallest DATE)."""
MAX_DATE = dt.date(9999, 12, 31)
"""``end`` when not given (BigQuery's largest DATE)."""
_SYMBOL_TEXT = re.compile(r"^[A-Za-z0-9.:^\-]{1,24}$")


class ReportError(ValueError):
    """A parameter that does not validate (the API answers 422, the CLI exits 2).

    Attributes:
        param: the parameter's name.
    """

    def __init__(self, param: str, message: str) -> None:
        super().__init__(f"{param}: {message}")
        self.param = param
        self.message = message


class UnknownReport(KeyError):
    """No report of that name (the API answers 404)."""


@dataclasses.dataclass(frozen=True)
class ReportParam:
    """One report parameter.

    Attributes:
        name: the query parameter (``@name`` in the SQL, ``name`` in the API, ``--name`` in the
            CLI).
        kind: ``symbols`` (comma-separated tickers or ids → ``ARRAY<STRING>`` of instrument ids),
            ``symbol`` (one → ``STRING`` instrument id) or ``date`` (ISO → ``DATE``).
        description: what it means.
        required: True when the report cannot run without it.
        default: the value used when it is not given (text, as a user would type it).
        min_items, max_items: bounds on the number of symbols (``symbols`` only).
    """

    name: str
    kind: str
    description: str
    required: bool = False
    default: str | None = None
    min_items: int = 0
    max_items: int = 50


@dataclasses.dataclass(frozen=True)
class ChartSpec:
    """How a report is drawn.

    Attributes:
        kind: ``line`` (y over x, one line per ``series``), ``bar`` (y per x category) or
            ``heatmap`` (``value`` at (``x``, ``y``)).
        x, y: columns (heatmap: the two category columns).
        series: column that splits lines (``line``) or None.
        value: the heatmap's cell column.
        title: the chart title.
        y_label: the y axis label.
        percent: show y (or the cells) as percentages of a fraction.
        exclude_series: series values left out of the chart (still in the table).
        fill_zero: a series without a row at an x of another series is 0 there (counts of
            sparse events), drawn with markers.
    """

    kind: str
    x: str
    y: str
    title: str
    y_label: str = ""
    series: str | None = None
    value: str | None = None
    percent: bool = False
    exclude_series: tuple[str, ...] = ()
    fill_zero: bool = False


@dataclasses.dataclass(frozen=True)
class Report:
    """A saved report.

    Attributes:
        name: registry key (``miraikakaku report NAME``, ``/v1/reports/NAME``).
        title: a human title.
        description: what the rows are.
        sql_file: the BigQuery-dialect query under ``analytics/sql/queries``.
        params: its parameters.
        chart: how it is drawn.
    """

    name: str
    title: str
    description: str
    sql_file: str
    params: tuple[ReportParam, ...]
    chart: ChartSpec

    @property
    def sql_path(self) -> Path:
        """The query file."""
        return QUERIES_DIR / self.sql_file

    @property
    def sql(self) -> str:
        """The query text (BigQuery dialect)."""
        return self.sql_path.read_text()

    def param(self, name: str) -> ReportParam | None:
        """The parameter called ``name``, or None."""
        return next((p for p in self.params if p.name == name), None)


_START = ReportParam("start", "date", "first date, inclusive (YYYY-MM-DD); default: no bound")
_END = ReportParam("end", "date", "last date, inclusive (YYYY-MM-DD); default: no bound")


def _symbols(min_items: int, max_items: int, what: str) -> ReportParam:
    return ReportParam("symbols", "symbols", what, required=min_items > 0, min_items=min_items,
                       max_items=max_items)


REPORTS: dict[str, Report] = {r.name: r for r in (
    Report("performance", "Performance",
           "Daily price, return, cumulative return since the window's first session and "
           "drawdowns per instrument (adjusted price of the best source, quote currency).",
           "report_performance.sql",
           (_symbols(1, 20, "tickers or instrument ids, comma-separated (1-20)"), _START, _END),
           ChartSpec("line", "session_date", "cumulative_return", "Cumulative return",
                     "cumulative return", series="symbol", percent=True)),
    Report("trend", "Market trend per exchange",
           "Per exchange and session: instruments, share above their 50-session moving "
           "average, advancers, decliners (instruments in the warehouse; indexes left out).",
           "report_trend.sql", (_START, _END),
           ChartSpec("line", "session_date", "share_above_ma_50",
                     "Share of instruments above their 50-session average", "share",
                     series="mic", percent=True)),
    Report("volatility", "Rolling volatility",
           "Annualised 20- and 60-session rolling volatility of daily log returns.",
           "report_volatility.sql",
           (_symbols(1, 20, "tickers or instrument ids, comma-separated (1-20)"), _START, _END),
           ChartSpec("line", "session_date", "volatility_20",
                     "20-session rolling volatility (annualised)", "volatility",
                     series="symbol", percent=True)),
    Report("correlation", "Correlation matrix",
           "Pearson correlation of daily log returns for every pair of instruments (common "
           "sessions only; n = sessions).",
           "correlation_matrix.sql",
           (_symbols(2, 30, "tickers or instrument ids, comma-separated (2-30)"), _START, _END),
           ChartSpec("heatmap", "a_symbol", "b_symbol", "Correlation of daily log returns",
                     value="corr")),
    Report("beta", "Beta against a benchmark",
           "Each instrument's beta, alpha, correlation and R² of daily log returns against the "
           "benchmark over the window (common sessions only).",
           "beta.sql",
           (_symbols(1, 30, "tickers or instrument ids, comma-separated (1-30)"),
            ReportParam("benchmark", "symbol", "the benchmark: an index ETF such as 1321.T "
                        "(Nikkei 225) or an index such as N225", default="1321.T"),
            _START, _END),
           ChartSpec("bar", "symbol", "beta", "Beta against the benchmark", "beta")),
    Report("model_performance", "Model performance",
           "Forecast errors per model version and realized session (MAPE in percent, "
           "directional accuracy), over all instruments or the given ones.",
           "report_model_performance.sql",
           (_symbols(0, 50, "tickers or instrument ids, comma-separated; default: all"),
            _START, _END),
           ChartSpec("line", "target_date", "mape", "Mean absolute percentage error per day",
                     "MAPE (%)", series="model_version")),
    Report("data_quality", "Data quality trend",
           "Per month: bars stored, flagged bars, each quality flag and each dead-letter reason "
           "(the whole platform, or the given instruments' bars).",
           "report_data_quality.sql",
           (_symbols(0, 50, "tickers or instrument ids, comma-separated; default: all"),
            _START, _END),
           ChartSpec("line", "month", "count", "Flags and dead letters per month", "count",
                     series="item", exclude_series=("bars_stored",), fill_zero=True)),
)}
"""Report name → report: the saved reports."""


def get_report(name: str) -> Report:
    """The report called ``name``.

    Raises:
        UnknownReport: no such report.
    """
    try:
        return REPORTS[name]
    except KeyError:
        raise UnknownReport(f"no report {name!r}; reports: {', '.join(REPORTS)}") from None


# -- parameters ------------------------------------------------------------------------------
def _resolve_symbol(text: str, param: str):
    from miraikakaku.instruments import load_master

    text = text.strip()
    if not _SYMBOL_TEXT.fullmatch(text):
        raise ReportError(param, f"{text[:40]!r} is not a ticker or instrument id")
    inst = load_master().lookup(text)
    if inst is None:
        raise ReportError(param, f"unknown symbol {text!r} (not in the instrument master)")
    return inst


def _parse_date(text: str, param: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text.strip())
    except ValueError:
        raise ReportError(param, f"{text[:40]!r} is not a date YYYY-MM-DD") from None


def resolve_params(report: Report, raw: Mapping[str, Any]) -> dict[str, Any]:
    """Validate raw parameter values (text or lists, as the CLI and API get them).

    Args:
        report: the report.
        raw: parameter name → text (``"AAPL,MSFT"``, ``"2018-01-02"``), a list of texts, or
            None/empty for not given. Names the report does not take are refused.

    Returns:
        Query parameters: ``symbols`` a list of instrument ids (in the order given, duplicates
        dropped), ``symbol`` kinds an instrument id, dates ``datetime.date`` (``start``
        defaults to 0001-01-01, ``end`` to 9999-12-31).

    Raises:
        ReportError: an unknown parameter, a missing required one, an unknown symbol, too few
            or too many symbols, a bad date, or start after end.
    """
    unknown = sorted(k for k, v in raw.items() if report.param(k) is None and v not in (None, ""))
    if unknown:
        raise ReportError(unknown[0], f"report {report.name!r} takes no parameter {unknown[0]!r}")
    out: dict[str, Any] = {}
    for p in report.params:
        value = raw.get(p.name)
        if value in (None, "", []):
            value = p.default
        if p.kind == "symbols":
            texts = value if isinstance(value, (list, tuple)) else (value or "").split(",")
            texts = [t for t in (str(t).strip() for t in texts) if t]
            ids = list(dict.fromkeys(_resolve_symbol(t, p.name).instrument_id for t in texts))
            if len(ids) < p.min_items:
                raise ReportError(p.name, f"give at least {p.min_items} symbol(s)")
            if len(ids) > p.max_items:
                raise ReportError(p.name, f"at most {p.max_items} symbols")
            out[p.name] = ids
        elif p.kind == "symbol":
            if value is None:
                raise ReportError(p.name, "required")
            out[p.name] = _resolve_symbol(str(value), p.name).instrument_id
        elif p.kind == "date":
            if value is None:
                out[p.name] = MIN_DATE if p.name == "start" else MAX_DATE
            else:
                out[p.name] = _parse_date(str(value), p.name)
        else:  # pragma: no cover - a registry bug
            raise ValueError(f"unknown parameter kind {p.kind!r}")
    if out.get("start", MIN_DATE) > out.get("end", MAX_DATE):
        raise ReportError("start", "start is after end")
    return out


# -- running ---------------------------------------------------------------------------------
def run_report(report: Report, warehouse, params: Mapping[str, Any]) -> pd.DataFrame:
    """Run a report's query with bound parameters.

    Args:
        report: the report.
        warehouse: an ``analytics.warehouse.Warehouse`` (its ``query`` transpiles and binds).
        params: validated parameters (``resolve_params``).

    Returns:
        The rows (DATE columns as datetime64, floats as float64, NULL as NaN/None).

    Raises:
        duckdb.Error: the warehouse cannot run the query (e.g. missing views).
    """
    return warehouse.query(report.sql, dict(params))


@contextlib.contextmanager
def open_warehouse(*, analytics_dir: str | os.PathLike[str] | None = None,
                   warehouse_path: str | os.PathLike[str] | None = None) -> Iterator[Any]:
    """Open the data a report reads: a DuckDB file read-only, else the Parquet store.

    Args:
        analytics_dir: the embedded analytics store (Parquet; ``data_dir/warehouse``).
        warehouse_path: a DuckDB file built with ``analytics.Warehouse`` (tables and views).

    Yields:
        An ``analytics.warehouse.Warehouse``.

    Raises:
        FileNotFoundError: neither exists.
        ValueError: neither is given.
    """
    if warehouse_path is not None:
        from analytics.warehouse import Warehouse

        if not Path(warehouse_path).exists():
            raise FileNotFoundError(f"no DuckDB warehouse at {warehouse_path}")
        wh = Warehouse(warehouse_path, read_only=True)
        try:
            yield wh
        finally:
            wh.close()
        return
    if analytics_dir is None:
        raise ValueError("give analytics_dir or warehouse_path")
    from analytics.sink import ParquetWarehouse

    with ParquetWarehouse(analytics_dir) as pw:
        yield pw.warehouse()


# -- output ----------------------------------------------------------------------------------
def _cell(value: Any) -> Any:
    """A JSON-ready cell: ISO dates, None for NULL/NaN/inf, plain ints and floats."""
    if value is None or value is pd.NaT or value is pd.NA:
        return None
    if isinstance(value, pd.Timestamp):
        if value.tzinfo is None and value == value.normalize():
            return value.date().isoformat()
        return value.isoformat()
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    if hasattr(value, "item"):  # numpy scalars
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _date_columns(df: pd.DataFrame) -> list[str]:
    return [c for c in df.columns if pd.api.types.is_datetime64_any_dtype(df[c])
            and getattr(df[c].dt, "tz", None) is None
            and bool((df[c].dropna() == df[c].dropna().dt.normalize()).all())]


def _for_output(df: pd.DataFrame) -> pd.DataFrame:
    out = df.copy()
    for c in _date_columns(out):
        out[c] = out[c].dt.strftime("%Y-%m-%d")
    return out


def to_csv(df: pd.DataFrame) -> str:
    """The rows as CSV with a header (dates ISO, floats at full precision, NULL empty)."""
    return _for_output(df).to_csv(index=False, lineterminator="\n")


def _params_json(params: Mapping[str, Any]) -> dict[str, Any]:
    return {k: [_cell(x) for x in v] if isinstance(v, list) else _cell(v)
            for k, v in params.items()}


def to_json(report: Report, params: Mapping[str, Any], df: pd.DataFrame) -> dict[str, Any]:
    """``{"report", "title", "parameters", "columns", "rows", "count"}``: rows as objects,
    dates ISO, NULL and non-finite numbers as null."""
    columns = [str(c) for c in df.columns]
    rows = [{c: _cell(v) for c, v in zip(columns, rec, strict=True)}
            for rec in df.itertuples(index=False, name=None)]
    return {"report": report.name, "title": report.title, "parameters": _params_json(params),
            "columns": columns, "rows": rows, "count": len(rows)}


def _figure(report: Report, df: pd.DataFrame, params: Mapping[str, Any]):
    from matplotlib.figure import Figure
    from matplotlib.ticker import PercentFormatter

    spec = report.chart
    fig = Figure(figsize=(10, 5.5) if spec.kind != "heatmap" else (8, 7), dpi=100)
    ax = fig.add_subplot()
    title = spec.title
    if "start" in params and "end" in params:
        lo = "" if params["start"] == MIN_DATE else f"{params['start']:%Y-%m-%d}"
        hi = "" if params["end"] == MAX_DATE else f"{params['end']:%Y-%m-%d}"
        if lo or hi:
            title += f"  ({lo}..{hi})"
    ax.set_title(title)
    if df.empty:
        ax.text(0.5, 0.5, "no rows for these parameters", ha="center", va="center",
                transform=ax.transAxes)
        ax.set_axis_off()
        return fig
    if spec.kind == "line" and spec.fill_zero and spec.series:
        data = df[~df[spec.series].astype(str).isin(spec.exclude_series)].dropna(subset=[spec.x])
        wide = data.pivot_table(index=spec.x, columns=spec.series, values=spec.y,
                                aggfunc="sum", fill_value=0).sort_index()
        for name in wide.columns:
            ax.plot(wide.index, wide[name], label=str(name), linewidth=1.0, marker=".")
        ax.legend(loc="best", fontsize="small", ncol=2)
        ax.grid(True, alpha=0.3)
        fig.autofmt_xdate()
    elif spec.kind == "line":
        groups = (df.groupby(spec.series, sort=True) if spec.series else [("", df)])
        for name, g in groups:
            if str(name) in spec.exclude_series:
                continue
            g = g.sort_values(spec.x)
            ax.plot(g[spec.x], g[spec.y], label=str(name), linewidth=1.2)
        if spec.series:
            ax.legend(loc="best", fontsize="small", ncol=2)
        ax.grid(True, alpha=0.3)
        fig.autofmt_xdate()
    elif spec.kind == "bar":
        ax.bar(df[spec.x].astype(str), df[spec.y].astype(float), color="#3b75af")
        ax.axhline(0, color="black", linewidth=0.8)
        if spec.y == "beta":
            ax.axhline(1, color="grey", linewidth=0.8, linestyle="--")
        ax.grid(True, axis="y", alpha=0.3)
        if "benchmark" in params:
            ax.set_xlabel(f"against {params['benchmark']}")
    elif spec.kind == "heatmap":
        m = df.pivot(index=spec.y, columns=spec.x, values=spec.value).astype(float)
        order = sorted(set(m.index) | set(m.columns))
        m = m.reindex(index=order, columns=order)
        im = ax.imshow(m.to_numpy(), cmap="RdBu_r", vmin=-1, vmax=1)
        ax.set_xticks(range(len(order)), order, rotation=45, ha="right")
        ax.set_yticks(range(len(order)), order)
        if len(order) <= 12:
            for i in range(len(order)):
                for j in range(len(order)):
                    v = m.iat[i, j]
                    if not math.isnan(v):
                        ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=8,
                                color="white" if abs(v) > 0.6 else "black")
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    else:  # pragma: no cover - a registry bug
        raise ValueError(f"unknown chart kind {spec.kind!r}")
    if spec.kind != "heatmap":
        ax.set_ylabel(spec.y_label or spec.y)
        if spec.percent:
            ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    fig.tight_layout()
    return fig


def to_png(report: Report, params: Mapping[str, Any], df: pd.DataFrame) -> bytes:
    """The report's chart as PNG bytes (matplotlib's Agg canvas, no pyplot: thread-safe)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig = _figure(report, df, params)
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


HTML_MAX_ROWS = 2_000
"""Rows shown in the HTML table (the CSV and JSON outputs have all)."""


def to_html(report: Report, params: Mapping[str, Any], df: pd.DataFrame) -> str:
    """A standalone HTML page: title, parameters, the chart (PNG data URI), the table."""
    png = base64.b64encode(to_png(report, params, df)).decode("ascii")
    shown = _for_output(df.head(HTML_MAX_ROWS))
    table = shown.to_html(index=False, escape=True, na_rep="", border=0, classes="rows",
                          float_format=lambda v: f"{v:.6g}")
    note = (f"<p>First {HTML_MAX_ROWS:,} of {len(df):,} rows (the CSV has all).</p>"
            if len(df) > HTML_MAX_ROWS else f"<p>{len(df):,} rows.</p>")
    plist = "".join(
        f"<li><b>{html.escape(k)}</b>: {html.escape(json.dumps(v))}</li>"
        for k, v in _params_json(params).items())
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>{html.escape(report.title)} - MiraiKakaku report</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table.rows {{ border-collapse: collapse; font-size: 0.85em; }}
table.rows th, table.rows td {{ padding: 2px 8px; border-bottom: 1px solid #ddd;
  text-align: right; }}
img {{ max-width: 100%; }}
</style></head><body>
<h1>{html.escape(report.title)}</h1>
<p>{html.escape(report.description)}</p>
<ul>{plist}</ul>
<img alt="{html.escape(report.chart.title)}" src="data:image/png;base64,{png}">
{note}
{table}
<p><small>Generated {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC from
analytics/sql/queries/{html.escape(report.sql_file)}.</small></p>
</body></html>
"""


def render(report: Report, params: Mapping[str, Any], df: pd.DataFrame,
           fmt: str) -> tuple[bytes, str]:
    """The report in ``fmt`` as ``(body, media type)``.

    Raises:
        ValueError: an unknown format.
    """
    if fmt == "csv":
        return to_csv(df).encode(), "text/csv; charset=utf-8"
    if fmt == "json":
        return (json.dumps(to_json(report, params, df), allow_nan=False).encode(),
                "application/json")
    if fmt == "png":
        return to_png(report, params, df), "image/png"
    if fmt == "html":
        return to_html(report, params, df).encode(), "text/html; charset=utf-8"
    raise ValueError(f"unknown format {fmt!r}; formats: {', '.join(FORMATS)}")


def run_cli(args) -> int:
    """``miraikakaku report NAME ...`` (parsed by ``report_parser``); returns the exit code."""
    import sys

    from miraikakaku.settings import get_settings

    try:
        report = get_report(args.name)
    except UnknownReport as e:
        print(f"miraikakaku report: {e.args[0]}", file=sys.stderr)
        return 2
    try:
        params = resolve_params(report, {"symbols": args.symbols, "start": args.start,
                                         "end": args.end, "benchmark": args.benchmark})
    except ReportError as e:
        print(f"miraikakaku report {report.name}: {e}", file=sys.stderr)
        return 2
    analytics_dir = args.analytics_dir or get_settings().data_dir / "warehouse"
    try:
        with open_warehouse(analytics_dir=analytics_dir, warehouse_path=args.warehouse) as wh:
            df = run_report(report, wh, params)
    except FileNotFoundError as e:
        print(f"miraikakaku report: {e}", file=sys.stderr)
        return 2
    fmt = args.format or (Path(args.output).suffix.lstrip(".").lower() if args.output else "csv")
    if fmt not in FORMATS:
        print(f"miraikakaku report: unknown format {fmt!r} ({', '.join(FORMATS)})",
              file=sys.stderr)
        return 2
    body, _ = render(report, params, df, fmt)
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_bytes(body)
        print(f"{report.name}: {len(df):,} rows → {args.output} ({fmt})", file=sys.stderr)
    elif fmt in ("png",):
        print("miraikakaku report: --format png needs --output FILE", file=sys.stderr)
        return 2
    else:
        sys.stdout.write(body.decode())
        sys.stdout.flush()
    return 0


def report_parser() -> argparse.ArgumentParser:
    """The parser of ``miraikakaku report`` (built only when the command runs: the CLI stays
    light)."""
    lines = [f"  {r.name:<18} {r.title}: "
             + ", ".join(("" if p.required else "[") + f"--{p.name}" + ("" if p.required else "]")
                         for p in r.params)
             for r in REPORTS.values()]
    p = argparse.ArgumentParser(
        prog="miraikakaku report",
        description="Run a saved, parameterized analytics report over the embedded analytics "
                    "store (the Parquet files `miraikakaku run` writes to "
                    "$MIRAIKAKAKU_DATA_DIR/warehouse) or a DuckDB warehouse file.\n\nReports:\n"
                    + "\n".join(lines),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name", help="Report name: " + ", ".join(REPORTS) + ".")
    p.add_argument("--symbols", default=None,
                   help="Comma-separated tickers or instrument ids (AAPL,MSFT or XNAS:AAPL).")
    p.add_argument("--benchmark", default=None,
                   help="beta: the benchmark ticker or id. Default: 1321.T.")
    p.add_argument("--start", default=None, help="First date YYYY-MM-DD. Default: no bound.")
    p.add_argument("--end", default=None, help="Last date YYYY-MM-DD. Default: no bound.")
    p.add_argument("--format", choices=FORMATS, default=None,
                   help="Output format. Default: from --output's suffix, else csv.")
    p.add_argument("--output", default=None,
                   help="Write here instead of standard output (needed for png).")
    p.add_argument("--analytics-dir", dest="analytics_dir", default=None,
                   help="Embedded analytics store. Default: $MIRAIKAKAKU_DATA_DIR/warehouse.")
    p.add_argument("--warehouse", default=None,
                   help="Read this DuckDB warehouse file (analytics.Warehouse, read-only) "
                        "instead of the Parquet store.")
    return p


def main(argv: list[str]) -> int:
    """``miraikakaku report ARGS``: parse ``argv`` (after ``report``) and run; the exit code."""
    return run_cli(report_parser().parse_args(argv))
