"""FastAPI dependencies and shared parameter types of the read API.

``SettingsDep`` and ``StoreDep`` hand routes the application's settings and open serving store;
``InstrumentDep`` resolves the ``{symbol}`` path parameter, an alias (``AAPL``, ``7203.T``) or an
exchange-qualified id (``XNAS:AAPL``, ``XTKS:7203``), case-insensitively, or answers 404.
``DateRangeDep`` parses ``start``/``end`` (ISO ``YYYY-MM-DD``, year 1000 or later; start after
end is a 422). ``SinceQuery`` parses an ISO 8601 datetime and treats a naive one as UTC.
"""

import dataclasses
import datetime as dt
import re
from collections.abc import Callable, Iterator
from typing import Annotated

from fastapi import Depends, Path, Query, Request
from fastapi.security import OAuth2PasswordBearer
from pydantic import AfterValidator, BeforeValidator
from sqlalchemy.orm import Session

from miraikakaku.instruments import Instrument, load_master
from miraikakaku.settings import Settings
from serving.app.api.errors import Forbidden, InvalidRequest, NotFound, Unauthorized
from serving.app.core.security import InvalidToken, decode_access_token
from serving.app.db import Database
from serving.app.models import ROLE_PERMISSIONS, Role, User
from serving.app.stores import StoreProvider, run_store
from stores.base import ServingStore

__all__ = [
    "SettingsDep",
    "SessionDep",
    "DatabaseDep",
    "CurrentUser",
    "TokenDep",
    "require_permission",
    "has_permission",
    "check_permission",
    "DelayCutoffDep",
    "delay_cutoff",
    "get_db",
    "get_session",
    "get_current_user",
    "oauth2_scheme",
    "StoreDep",
    "StoreProviderDep",
    "InstrumentDep",
    "DateRange",
    "DateRangeDep",
    "IsoDate",
    "SinceQuery",
    "SymbolPath",
    "SymbolQuery",
    "SYMBOL_MAX_LENGTH",
    "ID_MAX",
    "get_app_settings",
    "get_store",
    "get_store_provider",
    "find_instrument",
    "lookup_instrument",
    "resolve_instrument",
    "date_range",
]

ID_MAX = 2**31 - 1
"""Largest database id (PostgreSQL ``integer``); larger path ids or cursors are a 422, not a
database overflow."""

SYMBOL_MAX_LENGTH = 64
"""Longest accepted symbol or instrument id (characters); longer input is a 422."""

_ISO_DATE_RE = re.compile(r"[1-9][0-9]{3}-[0-9]{2}-[0-9]{2}")


def _iso_date_text(value: object) -> object:
    # Only the calendar form: no timestamps, no week dates, no unix seconds.
    if isinstance(value, str) and not _ISO_DATE_RE.fullmatch(value):
        raise ValueError("expected an ISO date YYYY-MM-DD (year 1000 or later)")
    return value


def _naive_as_utc(value: dt.datetime) -> dt.datetime:
    try:
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.timezone.utc)
        return value.astimezone(dt.timezone.utc)
    except OverflowError as e:  # e.g. 9999-12-31T23:00-14:00 is past datetime.max in UTC
        raise ValueError("datetime is out of range once converted to UTC") from e


IsoDate = Annotated[dt.date, BeforeValidator(_iso_date_text)]
"""A date given exactly as ``YYYY-MM-DD``."""

SinceQuery = Annotated[
    dt.datetime | None,
    AfterValidator(lambda v: _naive_as_utc(v) if v is not None else None),
    Query(description="Only events at or after this ISO 8601 datetime; a naive value is UTC "
                      "(encode `+` as `%2B` in a query string).",
          examples=["2018-02-01T00:00:00Z"]),
]
"""Optional ISO 8601 datetime, returned as aware UTC."""

SymbolQuery = Annotated[
    str | None,
    Query(min_length=1, max_length=SYMBOL_MAX_LENGTH,
          description="Alias (`AAPL`, `7203.T`) or id (`XNAS:AAPL`), case-insensitive.")]
"""Optional symbol filter in a query string."""


async def get_app_settings(request: Request) -> Settings:
    """The settings the application was created with."""
    settings: Settings = request.app.state.settings
    return settings


async def get_store_provider(request: Request) -> StoreProvider:
    """The application's ``StoreProvider`` (for health checks that must not fail)."""
    provider: StoreProvider = request.app.state.store_provider
    return provider


async def get_store(request: Request) -> ServingStore:
    """The open serving store.

    Raises:
        StoreUnavailable: the store is missing or cannot be opened (503).
    """
    provider: StoreProvider = request.app.state.store_provider
    return await provider.get()


def get_db(request: Request) -> Database:
    """The application database (``app.state.db``, opened and migrated by the lifespan)."""
    db: Database = request.app.state.db
    return db


def get_session(db: Annotated[Database, Depends(get_db)]) -> Iterator[Session]:
    """A database session for one request: committed when the route returns (before the
    response is sent: see ``SessionDep``), rolled back when it raises. Routes using it are plain
    ``def`` (FastAPI runs them in its threadpool)."""
    with db.session() as session:
        yield session


oauth2_scheme = OAuth2PasswordBearer(tokenUrl="/v1/auth/login", auto_error=False)
"""Bearer token from ``Authorization``; the OpenAPI "Authorize" button logs in at
``/v1/auth/login`` (OAuth2 password flow)."""

TokenDep = Annotated[str | None, Depends(oauth2_scheme)]


def get_current_user(request: Request, token: TokenDep,
                     session: Annotated[Session, Depends(get_session, scope="function")]
                     ) -> User:
    """The user of a valid access token.

    The role comes from the database, not the token, so a role change applies at once; the
    token's ``tv`` must equal the user's ``token_version`` (password change, logout-all).
    The user id is put on ``request.state.user_id`` (rate limits and logs use it).

    Raises:
        Unauthorized: no token; bad signature or algorithm; expired; revoked; unknown or
            inactive user (401).
    """
    if not token:
        raise Unauthorized("not authenticated: send Authorization: Bearer <access token>")
    settings: Settings = request.app.state.settings
    try:
        claims = decode_access_token(token, secret=settings.secret_key.get_secret_value())
    except InvalidToken as e:
        raise Unauthorized(f"invalid access token: {e}") from e
    user = session.get(User, claims.user_id)
    if user is None or not user.is_active:
        raise Unauthorized("invalid access token: unknown or inactive user")
    if claims.token_version != user.token_version:
        raise Unauthorized("invalid access token: revoked")
    request.state.user_id = user.id
    return user


CurrentUser = Annotated[User, Depends(get_current_user)]


def has_permission(user: User, permission: str) -> bool:
    """Whether ``user``'s role grants ``permission`` (``ROLE_PERMISSIONS``)."""
    return permission in ROLE_PERMISSIONS.get(Role(user.role), frozenset())


def check_permission(user: User, permission: str) -> User:
    """``user`` when its role grants ``permission``.

    Raises:
        Forbidden: the role lacks ``permission`` (403).
    """
    if not has_permission(user, permission):
        raise Forbidden(f"role {user.role!r} lacks permission {permission!r}")
    return user


def require_permission(permission: str) -> Callable[..., User]:
    """A dependency that returns the current user when the user's role has ``permission``.

    Example: ``user: Annotated[User, Depends(require_permission("alerts:write"))]``.

    Raises:
        Unauthorized: as ``get_current_user`` (401).
        Forbidden: the role lacks ``permission`` (403).
    """

    def dependency(user: CurrentUser) -> User:
        return check_permission(user, permission)

    dependency.__name__ = f"require_{permission.replace(':', '_')}"
    return dependency


def delay_cutoff(request: Request, user: CurrentUser) -> dt.datetime | None:
    """The entitlement cut-off of market data for the current user.

    Returns:
        None for roles with ``market:realtime`` (analyst, admin); otherwise now minus
        ``settings.quote_delay_minutes`` (aware UTC): quotes, bars, predictions and alerts with
        a later event time are not shown to the ``user`` role.
    """
    if has_permission(user, "market:realtime"):
        return None
    settings: Settings = request.app.state.settings
    return dt.datetime.now(dt.timezone.utc) - dt.timedelta(
        minutes=float(settings.quote_delay_minutes))


DelayCutoffDep = Annotated[dt.datetime | None, Depends(delay_cutoff)]
"""``delay_cutoff`` as a dependency: None = real-time."""

SettingsDep = Annotated[Settings, Depends(get_app_settings)]
SessionDep = Annotated[Session, Depends(get_session, scope="function")]
"""The request's session. ``scope="function"``: the commit runs when the route returns, before
the response is sent (FastAPI's default for yield dependencies, ``"request"``, commits after the
response: a client could read before its own write was committed, and a failed commit would
follow a success answer)."""
DatabaseDep = Annotated[Database, Depends(get_db)]
StoreDep = Annotated[ServingStore, Depends(get_store)]
StoreProviderDep = Annotated[StoreProvider, Depends(get_store_provider)]


def find_instrument(store: ServingStore, symbol: str,
                    as_of: dt.date | None = None) -> Instrument | None:
    """Find an instrument of the store by alias or id, case-insensitively (blocking).

    The instrument master (``miraikakaku.instruments``) turns a ticker into an id first, so an
    old ticker (``WMI``) finds its instrument (``XNYS:WM``) and a reused one (``FB``, ``VXX``)
    the company that had it on ``as_of`` (default: today's listing), not whichever id the store
    sorts first; a symbol the master does not know is looked up in the store as it is
    (instruments the pipeline resolved by rule).

    Args:
        store: the serving store.
        symbol: ``AAPL``, ``aapl``, ``7203.T``, ``XNAS:AAPL`` or ``xtks:7203``.
        as_of: the date the ticker is read at; None: today's listing.

    Returns:
        The instrument as the store holds it; None when the store has none for the symbol.
    """
    ref = load_master().lookup(symbol, as_of)
    instrument = None
    if ref is not None:
        instrument = store.get_instrument(ref.instrument_id)
    if instrument is None and (ref is None or as_of is None):
        instrument = store.get_instrument(symbol)
    return instrument


async def lookup_instrument(store: ServingStore, symbol: str,
                            as_of: dt.date | None = None) -> Instrument:
    """``find_instrument`` in the threadpool; a missing instrument is a 404.

    Raises:
        NotFound: no instrument in the store has that alias or id (on ``as_of``) (404).
    """
    instrument = await run_store(find_instrument, store, symbol, as_of)
    if instrument is None:
        raise NotFound(f"unknown symbol {symbol!r}")
    return instrument


SymbolPath = Annotated[str, Path(min_length=1, max_length=SYMBOL_MAX_LENGTH,
                                 description="Alias (`AAPL`, `7203.T`) or exchange-qualified id "
                                             "(`XNAS:AAPL`, `XTKS:7203`), case-insensitive.",
                                 examples=["AAPL"])]
"""The ``{symbol}`` path parameter."""


async def resolve_instrument(*, symbol: SymbolPath, store: StoreDep) -> Instrument:
    """Resolve the ``{symbol}`` path parameter (see ``lookup_instrument``; unknown → 404)."""
    return await lookup_instrument(store, symbol)


InstrumentDep = Annotated[Instrument, Depends(resolve_instrument)]


@dataclasses.dataclass(frozen=True)
class DateRange:
    """An inclusive range of session dates; either bound may be open (None)."""

    start: dt.date | None
    end: dt.date | None


async def date_range(
    *,
    start: Annotated[IsoDate | None, Query(description="First session date, inclusive "
                                                       "(YYYY-MM-DD).")] = None,
    end: Annotated[IsoDate | None, Query(description="Last session date, inclusive "
                                                     "(YYYY-MM-DD).")] = None,
) -> DateRange:
    """Parse the ``start``/``end`` query parameters.

    Raises:
        InvalidRequest: ``start`` is after ``end`` (422).
    """
    if start is not None and end is not None and start > end:
        raise InvalidRequest(
            f"start {start.isoformat()} is after end {end.isoformat()}",
            details=[{"loc": ["query", "start"], "msg": "start must be on or before end",
                      "type": "value_error"}])
    return DateRange(start, end)


DateRangeDep = Annotated[DateRange, Depends(date_range)]
