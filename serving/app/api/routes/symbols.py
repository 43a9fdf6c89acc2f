"""Routes under ``/v1/symbols``: instruments, latest quote, daily bars and predictions.

``{symbol}`` is an alias (``AAPL``, ``7203.T``) or an exchange-qualified id (``XNAS:AAPL``,
``XTKS:7203``), case-insensitive; an unknown one answers 404. Bars come from one source at a time:
by default the best source the instrument has, per ``settings.source_priority``; ``?source=``
picks another, and a source the instrument has no bars from answers 404 (code ``not_found``),
while a malformed source name is a 422. Try it: ``curl localhost:8000/v1/symbols/AAPL/quote``.
"""

import dataclasses
import json
from collections.abc import Sequence
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel

from miraikakaku import grammar, rowkeys
from miraikakaku.instruments import load_master
from serving.app.api.deps import (
    DateRangeDep,
    DelayCutoffDep,
    InstrumentDep,
    IsoDate,
    SettingsDep,
    StoreDep,
    SymbolPath,
    lookup_instrument,
)
from serving.app.api.errors import ERROR_RESPONSES, NotFound
from serving.app.pagination import CursorQuery, bars_after, encode_cursor, predictions_after
from serving.app.schemas import (
    AliasPublic,
    BarPublic,
    BarsPublic,
    InstrumentDetailPublic,
    InstrumentPublic,
    InstrumentsPublic,
    PredictionPublic,
    PredictionsPublic,
    QuotePublic,
    RevisionPublic,
    RevisionsPublic,
)
from serving.app.stores import run_store
from stores.base import BarRow

__all__ = ["router", "best_source", "json_response"]

router = APIRouter(prefix="/v1/symbols", tags=["symbols"], responses=ERROR_RESPONSES)

LimitQuery = Annotated[int, Query(ge=1, le=10_000, description="Maximum rows (1-10000).")]
IntervalQuery = Annotated[
    Literal["1d", "1h", "1m", "1s"],
    Query(description="Bar interval: `1d` daily (default); `1h`, `1m`, `1s` intraday bars "
                      "(streaming mode).")]
SourceQuery = Annotated[
    str | None,
    Query(pattern=r"^[A-Za-z0-9_.\-]{1,32}$",
          description="Source name (`chart0`, `mlbot`, ...); default: the best source present "
                      "per the configured source priority. A source without bars for the "
                      "instrument is a 404.")]


def json_response(model: BaseModel) -> Response:
    """``model`` serialized once by pydantic-core (the route's ``response_model`` documents it).

    FastAPI would validate the returned model against ``response_model`` again, convert it to
    Python objects and ``json.dumps`` them: for a year of bars (252 rows) that was ~2.5 ms of
    the route's ~9 ms CPU per request (benchmarks/api_latency.py, the bars_1y row); this path
    takes ~1.2 ms.
    """
    return Response(content=model.model_dump_json(), media_type="application/json")


def best_source(available: Sequence[str], priority: Sequence[str]) -> str | None:
    """Pick the source that feeds the features: the first of ``priority`` that is available.

    Args:
        available: sources that have bars for the instrument.
        priority: source names, best first (``settings.source_priority``).

    Returns:
        The best source; an unranked one (alphabetically first) when none is in ``priority``;
        None when ``available`` is empty.
    """
    present = set(available)
    for name in priority:
        if name in present:
            return name
    return min(present) if present else None


@router.get("", response_model=InstrumentsPublic, summary="List instruments")
async def read_symbols(*, store: StoreDep) -> InstrumentsPublic:
    """All instruments in the serving store, sorted by id."""
    instruments = await run_store(store.list_instruments)
    data = [InstrumentPublic.model_validate(i) for i in instruments]
    return InstrumentsPublic(data=data, count=len(data))


AsOfQuery = Annotated[
    IsoDate | None,
    Query(description="Read the ticker as of this date (YYYY-MM-DD): a reused ticker names "
                      "the company that had it then (`FB` on 2000-01-03 is `XNYS:FB-1999`), an "
                      "old ticker its instrument (`WMI` → `XNYS:WM`). Default: today's listing.")]


@router.get("/{symbol}", response_model=InstrumentDetailPublic, summary="One instrument")
async def read_symbol(*, symbol: SymbolPath, store: StoreDep,
                      as_of: AsOfQuery = None) -> InstrumentDetailPublic:
    """Reference data of one instrument (alias or id): MIC, currency, time zone, calendar,
    listing dates and its tickers over time.

    The instrument master resolves the symbol (on ``as_of``); the store's row wins when it has
    one, else the master's (an instrument of the reference data without bars in this store).
    A symbol neither knows is a 404.
    """
    master = load_master()
    ref = master.lookup(symbol, as_of)
    if ref is None:
        instrument = await lookup_instrument(store, symbol)
    else:
        instrument = await run_store(store.get_instrument, ref.instrument_id) or ref
    dated = master.get(instrument.instrument_id)
    base = InstrumentPublic.model_validate(instrument).model_dump()
    if dated is None:
        return InstrumentDetailPublic(**base, listing_date=None, delisting_date=None, aliases=[])
    return InstrumentDetailPublic(
        **base, listing_date=dated.listing_date, delisting_date=dated.delisting_date,
        aliases=[AliasPublic.model_validate(a) for a in master.history(dated.instrument_id)])


@router.get("/{symbol}/quote", response_model=QuotePublic, summary="Latest quote")
async def read_quote(*, instrument: InstrumentDep, store: StoreDep, cutoff: DelayCutoffDep,
                     settings: SettingsDep) -> QuotePublic:
    """The latest bar; when several sources have that time, the best-ranked one.

    Entitlement: roles with ``market:realtime`` (analyst, admin) get the newest bar; others
    (user) get the latest bar whose ``event_time`` is at least ``settings.quote_delay_minutes``
    old, marked ``delayed: true``. Prices are in ``currency``; 404 when there is no such bar.
    """
    if cutoff is None:
        quote = await run_store(store.get_quote, instrument.instrument_id)
        delayed, delay = False, 0.0
    else:
        delay = float(settings.quote_delay_minutes)
        quote = await run_store(store.get_quote_as_of, instrument.instrument_id, cutoff)
        delayed = True
    if quote is None:
        raise NotFound(f"no quote for {instrument.instrument_id}"
                       + (f" older than {delay:g} minutes" if delayed else ""))
    return QuotePublic(symbol=instrument.symbol, delayed=delayed, delay_minutes=delay,
                       **dataclasses.asdict(quote))


@router.get("/{symbol}/bars", response_model=BarsPublic, summary="Daily bars")
async def read_bars(*, instrument: InstrumentDep, store: StoreDep, settings: SettingsDep,
                    dates: DateRangeDep, cutoff: DelayCutoffDep, source: SourceQuery = None,
                    interval: IntervalQuery = "1d", cursor: CursorQuery = None,
                    limit: LimitQuery = 1000) -> Response:
    """Bars of one interval (daily by default) with ``start <= session_date <= end`` from one
    source, oldest first.

    At most ``limit`` bars per page; ``next_cursor`` (null on the last page) passed back as
    ``cursor`` with the same filters returns the next page. Intraday keys hold the bar start's
    UTC date, which ``start``/``end`` select on for intraday intervals. Roles without
    ``market:realtime`` do not see bars whose ``event_time`` is later than the quote delay
    allows (see ``read_quote``).
    """
    after = bars_after(cursor, instrument.instrument_id, interval)
    available = await run_store(store.sources, instrument.instrument_id)
    if source is None:
        chosen = best_source(available, settings.source_priority)
    else:
        chosen = {s.lower(): s for s in available}.get(source.lower())
        if chosen is None:
            raise NotFound(f"no bars from source {source!r} for {instrument.instrument_id}; "
                           f"available: {', '.join(sorted(available)) or 'none'}")
    rows: list[BarRow] = []
    if chosen is not None:
        rows = await run_store(store.get_bars, instrument.instrument_id, interval=interval,
                               start=dates.start, end=dates.end, source=chosen,
                               limit=limit + 1, after=after)
    if cutoff is not None:  # oldest first: what is cut is the end of the series
        rows = [r for r in rows if r.event_time <= cutoff]
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = encode_cursor((rows[-1].row_key, rows[-1].source))
    data = [BarPublic.model_validate(r) for r in rows]
    return json_response(BarsPublic(
        instrument_id=instrument.instrument_id, symbol=instrument.symbol, source=chosen,
        currency=instrument.currency, data=data, count=len(data), next_cursor=next_cursor))


@router.get("/{symbol}/revisions", response_model=RevisionsPublic,
            summary="Superseded revisions of bars")
async def read_revisions(*, instrument: InstrumentDep, store: StoreDep, dates: DateRangeDep,
                         cutoff: DelayCutoffDep, source: SourceQuery = None,
                         interval: IntervalQuery = "1d", limit: LimitQuery = 1000) -> Response:
    """Earlier revisions of this instrument's bars that a correction replaced (``start <=
    session_date <= end``, optionally one source), oldest first: the served bar is the latest
    revision (``/bars``); these are what it replaced, with where each was read and what
    superseded it (README, "Block or flag": the correction policy). Roles without
    ``market:realtime`` do not see revisions of bars later than the quote delay allows."""
    rows = await run_store(store.get_bar_revisions, instrument.instrument_id, interval=interval,
                           start=dates.start, end=dates.end, source=source, limit=limit)
    data = []
    for r in rows:
        payload = json.loads(r.payload)
        if cutoff is not None and grammar.parse_timestamp(payload["event_time"]) > cutoff:
            continue
        data.append(RevisionPublic(row_key=r.row_key, source=r.source, event_id=r.event_id,
                                   payload=payload, origin=r.origin, position=r.position,
                                   superseded_by=r.superseded_by))
    return json_response(RevisionsPublic(instrument_id=instrument.instrument_id,
                                         symbol=instrument.symbol, data=data, count=len(data)))


@router.get("/{symbol}/predictions", response_model=PredictionsPublic, summary="Predictions")
async def read_predictions(*, instrument: InstrumentDep, store: StoreDep, dates: DateRangeDep,
                           cutoff: DelayCutoffDep, cursor: CursorQuery = None,
                           limit: LimitQuery = 1000) -> Response:
    """Next-session forecasts with ``start <= as_of_date <= end``, oldest first (all models).

    At most ``limit`` per page; pass ``next_cursor`` back as ``cursor`` for the next page.
    Roles without ``market:realtime`` see only predictions made from bars the quote delay
    allows (``as_of_time`` at or before the cut-off).
    """
    after = predictions_after(cursor, instrument.instrument_id)
    rows = await run_store(store.get_predictions, instrument.instrument_id, start=dates.start,
                           end=dates.end, limit=limit + 1, after=after)
    if cutoff is not None:
        rows = [r for r in rows if r.as_of_time <= cutoff]
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        last = rows[-1]
        next_cursor = encode_cursor((rowkeys.prediction_key(last.instrument_id, "1d",
                                                             last.as_of_date, last.role),
                                     last.model_name, last.model_version))
    data = [PredictionPublic.model_validate(r) for r in rows]
    return json_response(PredictionsPublic(
        instrument_id=instrument.instrument_id, symbol=instrument.symbol,
        currency=instrument.currency, data=data, count=len(data), next_cursor=next_cursor))
