"""Routes under ``/v1/reports``: the saved analytics reports (``analytics.reports``).

``GET /v1/reports`` lists the reports with their parameters and chart kind;
``GET /v1/reports/{name}?symbols=AAPL,MSFT&start=2017-01-01&end=2017-12-29&format=json``
runs one over the embedded analytics store (the Parquet files the pipeline writes to
``data_dir/warehouse``, read through an in-memory DuckDB without any lock, so the pipeline
keeps writing) and answers JSON (``ReportResultPublic``), CSV (``text/csv``) or the chart
(``image/png``). Only roles with permission ``analytics:read`` (analyst, admin) may call them:
no token → 401, role ``user`` → 403. An unknown report → 404; a parameter that does not
validate (an unknown symbol, a bad date, start after end, too many symbols, a parameter the
report does not take) → 422. Parameters are bound as query parameters, never put into SQL text.
DuckDB queries and the chart run in the threadpool. No analytics store yet → 503.

Try it: ``curl -H "Authorization: Bearer $TOKEN" -o c.png
'localhost:8000/v1/reports/correlation?symbols=AAPL,MSFT,IBM&start=2017-01-01&format=png'``.
"""

import threading
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from analytics import reports as rp
from serving.app.api.deps import SettingsDep, require_permission
from serving.app.api.errors import ERROR_RESPONSES, InvalidRequest, NotFound, StoreUnavailable

__all__ = ["router"]

router = APIRouter(prefix="/v1/reports", tags=["reports"], responses=ERROR_RESPONSES,
                   dependencies=[Depends(require_permission("analytics:read"))])


class _Public(BaseModel):
    model_config = ConfigDict(frozen=True)


class ReportParameterPublic(_Public):
    """One parameter of a report (a query parameter of ``GET /v1/reports/{name}``)."""

    name: str = Field(examples=["symbols"])
    kind: Literal["symbols", "symbol", "date"] = Field(
        description="`symbols`: comma-separated tickers or instrument ids; `symbol`: one; "
                    "`date`: YYYY-MM-DD.")
    description: str
    required: bool
    default: str | None = None
    min_items: int | None = Field(None, description="`symbols`: fewest symbols.")
    max_items: int | None = Field(None, description="`symbols`: most symbols.")


class ReportPublic(_Public):
    """A saved report."""

    name: str = Field(examples=["performance"])
    title: str
    description: str
    chart: Literal["line", "bar", "heatmap"] = Field(description="Chart of `format=png`.")
    parameters: list[ReportParameterPublic]


class ReportsPublic(_Public):
    """Every saved report."""

    data: list[ReportPublic]
    count: int


class ReportResultPublic(_Public):
    """A report's rows (``format=json``): one object per row, keyed by ``columns``; dates ISO
    ``YYYY-MM-DD``, fractions as floats (0.05 = 5 %), NULL and non-finite numbers as null."""

    report: str
    title: str
    parameters: dict[str, Any] = Field(
        description="The validated parameters: symbols as instrument ids, dates ISO.")
    columns: list[str]
    rows: list[dict[str, Any]]
    count: int


def _public(report: rp.Report) -> ReportPublic:
    params = [ReportParameterPublic(
        name=p.name, kind=p.kind, description=p.description, required=p.required,
        default=p.default, min_items=p.min_items if p.kind == "symbols" else None,
        max_items=p.max_items if p.kind == "symbols" else None) for p in report.params]
    return ReportPublic(name=report.name, title=report.title, description=report.description,
                        chart=report.chart.kind, parameters=params)


_LOCK = threading.Lock()


def _warehouse(request: Request, root: Path):
    """The app's cached reader of the analytics store (``analytics.sink.ParquetWarehouse``).

    Raises:
        StoreUnavailable: no analytics store at ``root`` yet.
    """
    from analytics.sink import ParquetWarehouse

    with _LOCK:
        cached = getattr(request.app.state, "analytics_reader", None)
        if cached is None or cached.root != root:
            try:
                cached = ParquetWarehouse(root)
            except FileNotFoundError as e:
                raise StoreUnavailable(f"no analytics store yet ({e}); run the pipeline "
                                       "(`miraikakaku run`) first") from e
            request.app.state.analytics_reader = cached
    return cached.warehouse()


def _run(request: Request, root: Path, report: rp.Report, params: dict[str, Any],
         fmt: str) -> tuple[bytes, str, Any]:
    wh = _warehouse(request, root)
    df = rp.run_report(report, wh, params)
    if fmt == "json":
        return b"", "application/json", rp.to_json(report, params, df)
    body, media = rp.render(report, params, df, fmt)
    return body, media, None


@router.get("", response_model=ReportsPublic, summary="Saved reports")
async def read_reports() -> ReportsPublic:
    """The saved reports with their parameters (role analyst or admin)."""
    data = [_public(r) for r in rp.REPORTS.values()]
    return ReportsPublic(data=data, count=len(data))


NamePath = Annotated[str, PathParam(pattern=r"^[a-z_]{1,40}$", examples=["performance"],
                                    description="Report name (`GET /v1/reports` lists them).")]


@router.get("/{name}", response_model=ReportResultPublic, summary="Run a report",
            responses={200: {"content": {"text/csv": {}, "image/png": {}},
                             "description": "JSON rows, CSV or the PNG chart (`format`)."}})
def read_report(
    *,
    request: Request,
    settings: SettingsDep,
    name: NamePath,
    symbols: Annotated[str | None, Query(
        max_length=1000, description="Comma-separated tickers or instrument ids "
                                     "(AAPL,MSFT or XNAS:AAPL).")] = None,
    benchmark: Annotated[str | None, Query(
        max_length=40, description="`beta`: the benchmark ticker or id (default 1321.T).")
    ] = None,
    start: Annotated[str | None, Query(max_length=10,
                                       description="First date YYYY-MM-DD.")] = None,
    end: Annotated[str | None, Query(max_length=10, description="Last date YYYY-MM-DD.")] = None,
    format: Annotated[Literal["json", "csv", "png"], Query(
        description="`json` (rows), `csv` or `png` (the chart).")] = "json",
) -> Any:
    """Run a report with validated, bound parameters (role analyst or admin).

    Runs in the threadpool (a plain ``def`` route): DuckDB and matplotlib block.
    """
    try:
        report = rp.get_report(name)
    except rp.UnknownReport as e:
        raise NotFound(e.args[0]) from e
    raw = {"symbols": symbols, "benchmark": benchmark, "start": start, "end": end}
    try:
        params = rp.resolve_params(report, raw)
    except rp.ReportError as e:
        raise InvalidRequest(str(e), details=[{"loc": ["query", e.param], "msg": e.message,
                                               "type": "value_error"}]) from e
    body, media, result = _run(request, Path(settings.data_dir) / "warehouse", report, params,
                               format)
    if result is not None:
        return ReportResultPublic(**result)
    filename = f"{report.name}.{format}"
    return Response(body, media_type=media,
                    headers={"Content-Disposition": f'inline; filename="{filename}"'})

