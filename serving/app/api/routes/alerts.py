"""Route ``GET /v1/alerts``: market-level alert events, newest first.

Filters: ``symbol`` (alias or id, case-insensitive; unknown → 404), ``since`` (ISO 8601 datetime;
a naive value is UTC) and ``limit`` (1-1000, default 100 per page). ``next_cursor`` (null on the
last page) passed back as ``cursor`` with the same filters returns the next page
(``serving.app.pagination``). Try it:
``curl 'localhost:8000/v1/alerts?symbol=AAPL&since=2018-02-01T00:00:00Z'``.
"""

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, Query

from serving.app.api.deps import (
    DelayCutoffDep,
    SinceQuery,
    StoreDep,
    SymbolQuery,
    lookup_instrument,
)
from serving.app.api.errors import ERROR_RESPONSES
from serving.app.pagination import CursorQuery, alerts_after, encode_cursor
from serving.app.schemas import AlertPublic, AlertsPublic
from serving.app.stores import run_store

__all__ = ["router"]

router = APIRouter(prefix="/v1/alerts", tags=["alerts"], responses=ERROR_RESPONSES)


@router.get("", response_model=AlertsPublic, summary="Alert events")
async def read_alerts(
    *,
    store: StoreDep,
    cutoff: DelayCutoffDep,
    symbol: SymbolQuery = None,
    since: SinceQuery = None,
    cursor: CursorQuery = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="Maximum events (1-1000).")] = 100,
) -> AlertsPublic:
    """Alert events with ``event_time >= since`` (UTC), newest first (then by alert id),
    optionally of one symbol; ``limit`` per page, ``next_cursor`` for the next page. Roles
    without ``market:realtime`` do not see alerts newer than the quote delay (such a page can
    be short; ``next_cursor`` still continues after the last event read)."""
    after = alerts_after(cursor)
    instrument_id = None
    if symbol is not None:
        instrument_id = (await lookup_instrument(store, symbol)).instrument_id
    alerts = await run_store(store.get_alerts, instrument_id=instrument_id, since=since,
                             limit=limit + 1, after=after)
    next_cursor = None
    if len(alerts) > limit:
        alerts = alerts[:limit]
        last = alerts[-1]
        next_cursor = encode_cursor((last.event_time.astimezone(dt.timezone.utc).isoformat(),
                                     last.alert_id))
    if cutoff is not None:
        alerts = [a for a in alerts if a.event_time <= cutoff]
    data = [AlertPublic.model_validate(a) for a in alerts]
    return AlertsPublic(data=data, count=len(data), next_cursor=next_cursor)
