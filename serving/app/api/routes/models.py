"""Routes under ``/v1/models``: model versions and their tracked prediction errors.

``GET /v1/models`` lists the versions of the model registry (``settings.model_dir``: created_at,
training cutoff, validation metrics) merged with the versions that have rows in the store's
``model_performance`` table (written by ``miraikakaku track`` or the stream's tracking step),
each with its overall tracked errors. ``GET /v1/models/{version}/performance`` answers the
errors of one version per instrument and realized day, with per-instrument and overall
summaries; filters ``instrument`` (alias or id; unknown → 404), ``start``/``end`` (target
dates, inclusive) and ``model_name`` (default ``settings.model_name``); a version in neither the
registry nor the table is a 404. Try it:
``curl 'localhost:8000/v1/models/1/performance?instrument=AAPL&start=2018-01-01'``.
"""

import datetime as dt
import logging
import math
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from starlette.concurrency import run_in_threadpool

from miraikakaku.settings import Settings
from miraikakaku.tracking import ModelPerformance, PerformanceStore, PerformanceSummary
from models.registry import ModelVersion, list_versions
from serving.app.api.deps import (
    DateRangeDep,
    SettingsDep,
    StoreProviderDep,
    SymbolQuery,
    lookup_instrument,
)
from serving.app.api.errors import ERROR_RESPONSES, NotFound, StoreUnavailable
from serving.app.schemas import (
    DailyPerformancePublic,
    ModelPerformancePublic,
    ModelPublic,
    ModelsPublic,
    PerformanceSummaryPublic,
)
from serving.app.stores import run_store

__all__ = ["router"]

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/models", tags=["models"], responses=ERROR_RESPONSES)

ModelNameQuery = Annotated[
    str | None,
    Query(pattern=r"^[A-Za-z0-9_.\-]{1,64}$",
          description="Model name; default: the configured model (`lstm_daily`).")]
VersionPath = Annotated[str, Path(pattern=r"^[A-Za-z0-9_.\-]{1,64}$",
                                  description="Model version: the registry's integer version, or "
                                              "`vertex-<deployedModelId>` for predictions a "
                                              "Vertex AI endpoint answered.",
                                  examples=["1"])]


def _registry(settings: Settings) -> list[ModelVersion]:
    try:
        return list_versions(settings.model_dir)
    except (OSError, ValueError) as e:  # an unreadable metadata file must not break the list
        logger.warning("cannot read the model registry %s: %s", settings.model_dir, e)
        return []


def _finite(metrics: Any) -> dict[str, float | int | None] | None:
    if not isinstance(metrics, dict):
        return None
    out: dict[str, float | int | None] = {}
    for k, v in metrics.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        out[str(k)] = v if isinstance(v, int) or math.isfinite(v) else None
    return out


def _created_at(meta: dict[str, Any]) -> dt.datetime | None:
    try:
        value = dt.datetime.fromisoformat(str(meta["created_at"]))
    except (KeyError, ValueError):
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.timezone.utc)


def _cutoff(meta: dict[str, Any]) -> dt.date | None:
    try:
        return dt.date.fromisoformat(str(meta["cutoff_date"]))
    except (KeyError, ValueError):
        return None


def _summary(s: PerformanceSummary) -> PerformanceSummaryPublic:
    return PerformanceSummaryPublic.model_validate(s)


def _daily(r: ModelPerformance) -> DailyPerformancePublic:
    return DailyPerformancePublic(
        instrument_id=r.instrument_id, target_date=r.target_date, currency=r.currency, n=r.n,
        mae=r.mae, rmse=r.rmse, mape=r.mape, directional_accuracy=r.directional_accuracy,
        mean_error=r.mean_error)


async def _performance_store(provider) -> PerformanceStore | None:
    """The store when it is open and keeps ``model_performance``; None otherwise."""
    try:
        store = await provider.get()
    except StoreUnavailable:
        return None
    return store if isinstance(store, PerformanceStore) else None


@router.get("", response_model=ModelsPublic, summary="Model versions")
async def read_models(*, settings: SettingsDep, provider: StoreProviderDep) -> ModelsPublic:
    """Registry versions and versions with tracked errors, by model name then version.

    Works without a serving store (registry only, ``performance`` null).
    """
    registry = await run_in_threadpool(_registry, settings)
    store = await _performance_store(provider)
    tracked: dict[tuple[str, str], PerformanceSummary] = {}
    if store is not None:
        for s in await run_store(store.list_performance_versions):
            tracked[(s.model_name, s.model_version)] = s
    models: dict[tuple[str, str], ModelPublic] = {}
    for v in registry:
        perf = tracked.get((v.name, v.version))
        models[(v.name, v.version)] = ModelPublic(
            model_name=v.name, version=v.version, in_registry=True,
            created_at=_created_at(v.metadata), cutoff_date=_cutoff(v.metadata),
            validation_metrics=_finite(v.metadata.get("validation_metrics")),
            performance=_summary(perf) if perf is not None else None)
    for key, perf in tracked.items():
        if key not in models:
            models[key] = ModelPublic(model_name=key[0], version=key[1], in_registry=False,
                                      created_at=None, cutoff_date=None, validation_metrics=None,
                                      performance=_summary(perf))

    def order(key: tuple[str, str]):
        return key[0], int(key[1]) if key[1].isdigit() else 0, key[1]

    data = [models[k] for k in sorted(models, key=order)]
    return ModelsPublic(data=data, count=len(data))


@router.get("/{version}/performance", response_model=ModelPerformancePublic,
            summary="Tracked errors of a model version")
async def read_model_performance(
    *,
    version: VersionPath,
    settings: SettingsDep,
    provider: StoreProviderDep,
    dates: DateRangeDep,
    instrument: SymbolQuery = None,
    model_name: ModelNameQuery = None,
    limit: Annotated[int, Query(ge=1, le=10_000, description="Maximum daily rows (1-10000).")
                     ] = 1000,
) -> ModelPerformancePublic:
    """Errors per instrument and realized day with ``start <= target_date <= end``, plus
    per-instrument and overall summaries over the same filter.

    404 when the version is neither in the registry nor in the performance table, or the
    instrument is unknown; 503 when the serving store is missing.
    """
    name = model_name or settings.model_name
    store = await provider.get()
    tracked = (await run_store(store.list_performance_versions)
               if isinstance(store, PerformanceStore) else [])
    known = {(s.model_name, s.model_version) for s in tracked}
    if (name, version) not in known:
        registry = await run_in_threadpool(_registry, settings)
        if not any(v.name == name and v.version == version for v in registry):
            raise NotFound(f"unknown model version {name} {version}")
    instrument_id = None
    if instrument is not None:
        instrument_id = (await lookup_instrument(store, instrument)).instrument_id
    if not isinstance(store, PerformanceStore) or (name, version) not in known:
        return ModelPerformancePublic(model_name=name, model_version=version, overall=None,
                                      instruments=[], data=[], count=0)
    filters = {"instrument_id": instrument_id, "start": dates.start, "end": dates.end}
    per_instrument = await run_store(store.summarize_model_performance, name, version, **filters)
    rows = await run_store(store.get_model_performance, name, version, limit=limit, **filters)
    overall = None
    if per_instrument:
        from miraikakaku.tracking import summary_from_sums

        first = per_instrument[0]
        currencies = {s.currency for s in per_instrument}
        overall = summary_from_sums(
            name, version, instrument_id, first.currency if len(currencies) == 1 else None,
            min(s.first_date for s in per_instrument), max(s.last_date for s in per_instrument),
            *(sum(getattr(s, f) for s in per_instrument)
              for f in ("n", "n_direction", "direction_hits", "sum_error", "sum_abs_error",
                        "sum_squared_error", "sum_abs_pct_error")))
    data = [_daily(r) for r in rows]
    return ModelPerformancePublic(
        model_name=name, model_version=version,
        overall=_summary(overall) if overall is not None else None,
        instruments=[_summary(s) for s in per_instrument], data=data, count=len(data))
