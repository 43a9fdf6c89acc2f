"""Routes ``/v1/notifications``: the user's inbox, read marks, and a live Server-Sent Events
stream.

The notifier (``miraikakaku notify``, a separate process) writes notifications to the
application database; the stream polls it (``id > last`` every ``STREAM_POLL_SECONDS``), so the
database is the channel. ``GET /v1/notifications/stream`` sends ``event: notification`` with
``id: <notification id>`` and the notification JSON as ``data``, honours ``Last-Event-ID`` on
reconnect (without it only notifications created after connecting are sent), and pings every
``STREAM_PING_SECONDS``. Browsers' ``EventSource`` cannot set headers, so this route (only this
one) also accepts the access token as ``?access_token=``. Try it::

    curl -N "localhost:8000/v1/notifications/stream?access_token=$TOKEN"
    curl -H "Authorization: Bearer $TOKEN" "localhost:8000/v1/notifications?unread_only=true"
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Path, Query, Request
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session
from sse_starlette.sse import EventSourceResponse
from starlette.concurrency import run_in_threadpool

from serving.app.api.deps import (
    ID_MAX,
    DatabaseDep,
    SessionDep,
    TokenDep,
    check_permission,
    get_current_user,
    require_permission,
)
from serving.app.api.errors import ERROR_RESPONSES, NotFound
from serving.app.db import Database
from serving.app.models import Notification, User, utcnow
from serving.app.notification_schemas import (
    NotificationPublic,
    NotificationsPublic,
    ReadAllPublic,
    UnreadCountPublic,
)

__all__ = ["router", "STREAM_POLL_SECONDS", "STREAM_PING_SECONDS"]

router = APIRouter(prefix="/v1/notifications", tags=["notifications"],
                   responses=ERROR_RESPONSES)

STREAM_POLL_SECONDS = 0.5
"""How often the stream asks the database for new notifications."""
STREAM_PING_SECONDS = 15
"""Keep-alive comment interval of the stream (proxies drop idle connections)."""

Reader = Annotated[User, Depends(require_permission("notifications:read"))]
Writer = Annotated[User, Depends(require_permission("notifications:write"))]


def _mine(user: User):
    return select(Notification).where(Notification.user_id == user.id)


@router.get("", response_model=NotificationsPublic, summary="My notifications")
def read_notifications(
    *,
    session: SessionDep,
    user: Reader,
    cursor: Annotated[int | None, Query(
        ge=1, le=ID_MAX,
        description="Only notifications with a smaller id (the previous page's `next_cursor`)."
    )] = None,
    limit: Annotated[int, Query(ge=1, le=200, description="Page size (1-200).")] = 50,
    unread_only: Annotated[bool, Query(description="Only unread ones.")] = False,
) -> NotificationsPublic:
    """The user's notifications, newest first, a page at a time."""
    stmt = _mine(user)
    if cursor is not None:
        stmt = stmt.where(Notification.id < cursor)
    if unread_only:
        stmt = stmt.where(Notification.read_at.is_(None))
    rows = list(session.scalars(stmt.order_by(Notification.id.desc()).limit(limit + 1)))
    more = len(rows) > limit
    data = [NotificationPublic.model_validate(n) for n in rows[:limit]]
    return NotificationsPublic(data=data, count=len(data),
                               next_cursor=data[-1].id if more else None)


@router.get("/unread-count", response_model=UnreadCountPublic, summary="Unread count")
def read_unread_count(*, session: SessionDep, user: Reader) -> UnreadCountPublic:
    """How many of the user's notifications are unread."""
    n = session.scalar(select(func.count(Notification.id)).where(
        Notification.user_id == user.id, Notification.read_at.is_(None)))
    return UnreadCountPublic(count=n or 0)


@router.post("/read-all", response_model=ReadAllPublic, summary="Mark all read")
def update_read_all(*, session: SessionDep, user: Writer) -> ReadAllPublic:
    """Mark every unread notification of the user read."""
    result = session.execute(
        update(Notification).where(Notification.user_id == user.id,
                                   Notification.read_at.is_(None))
        .values(read_at=utcnow()).execution_options(synchronize_session=False))
    return ReadAllPublic(updated=result.rowcount or 0)


@router.post("/{notification_id}/read", response_model=NotificationPublic,
             summary="Mark one read")
def update_read(
    *,
    session: SessionDep,
    user: Writer,
    notification_id: Annotated[int, Path(ge=1, le=ID_MAX)],
) -> NotificationPublic:
    """Mark the notification read (idempotent: the first read time is kept).

    Raises:
        NotFound: no such notification of the user (404).
    """
    n = session.get(Notification, notification_id)
    if n is None or n.user_id != user.id:
        raise NotFound(f"no notification {notification_id}")
    if n.read_at is None:
        n.read_at = utcnow()
        session.flush()
    return NotificationPublic.model_validate(n)


# -- the stream -----------------------------------------------------------------------------------

def _stream_user(request: Request, token: TokenDep, db: DatabaseDep,
                 access_token: Annotated[str | None, Query(
                     description="Access token, for EventSource clients that cannot set "
                                 "Authorization (this route only).")] = None) -> User:
    """The user of the header or ``?access_token=`` token, with ``notifications:read``; the
    database session is closed before the stream starts."""
    with db.session() as session:
        user = get_current_user(request, token or access_token, session)
        check_permission(user, "notifications:read")
        session.expunge(user)
    return user


def _newer(db: Database, user_id: int, after: int, limit: int = 100) -> list[NotificationPublic]:
    with db.session() as s:
        rows = s.scalars(select(Notification).where(Notification.user_id == user_id,
                                                    Notification.id > after)
                         .order_by(Notification.id).limit(limit))
        return [NotificationPublic.model_validate(n) for n in rows]


def _last_id(session: Session, user_id: int) -> int:
    return session.scalar(select(func.max(Notification.id)).where(
        Notification.user_id == user_id)) or 0


@router.get("/stream", summary="Live notifications (Server-Sent Events)",
            response_class=EventSourceResponse,
            responses={200: {"content": {"text/event-stream": {}},
                             "description": "`event: notification`, `id`, JSON `data`."}})
async def read_stream(
    *,
    request: Request,
    db: DatabaseDep,
    user: Annotated[User, Depends(_stream_user)],
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
) -> EventSourceResponse:
    """New notifications of the user as they are created (see the module docstring)."""
    user_id = user.id
    after: int | None = None
    if last_event_id is not None and last_event_id.strip().isdigit():
        after = int(last_event_id.strip())
    if after is None:
        def current() -> int:
            with db.session() as s:
                return _last_id(s, user_id)

        after = await run_in_threadpool(current)

    async def events(last: int) -> AsyncIterator[dict]:
        while True:
            if await request.is_disconnected():
                return
            for n in await run_in_threadpool(_newer, db, user_id, last):
                last = n.id
                yield {"event": "notification", "id": str(n.id), "data": n.model_dump_json()}
            await asyncio.sleep(STREAM_POLL_SECONDS)

    return EventSourceResponse(events(after), ping=STREAM_PING_SECONDS,
                               headers={"Cache-Control": "no-store"})


