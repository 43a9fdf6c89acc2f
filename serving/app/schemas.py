"""Response models of the read API, in families (``XPublic`` for one item, ``XsPublic`` for lists).

Conventions: prices are floats in the instrument's quote currency (``currency``, ISO 4217), on
the basis of the source they came from (see ``miraikakaku.schema.SOURCES``); timestamps are UTC,
serialized as ISO 8601 with an explicit ``+00:00`` offset; dates are ISO ``YYYY-MM-DD``
(exchange-local session dates). List responses carry ``data`` and ``count``.
"""

import datetime as dt
from typing import Annotated, ClassVar, Literal

from pydantic import (
    AfterValidator,
    AnyHttpUrl,
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    PlainSerializer,
    UrlConstraints,
    WithJsonSchema,
    model_validator,
)

__all__ = [
    "UtcDatetime",
    "AliasPublic",
    "InstrumentDetailPublic",
    "InstrumentPublic",
    "InstrumentsPublic",
    "QuotePublic",
    "BarPublic",
    "BarsPublic",
    "PredictionPublic",
    "PredictionsPublic",
    "AlertPublic",
    "AlertsPublic",
    "Health",
    "PerformanceSummaryPublic",
    "ModelPublic",
    "ModelsPublic",
    "DailyPerformancePublic",
    "ModelPerformancePublic",
    "PASSWORD_MIN_LENGTH",
    "PASSWORD_MAX_LENGTH",
    "Locale",
    "UserRegister",
    "UserUpdate",
    "PasswordChange",
    "AccountDelete",
    "RefreshRequest",
    "TokenPublic",
    "UserPublic",
    "UsersPublic",
    "UserAdminUpdate",
    "WebhookSecretPublic",
]


def _as_utc(value: dt.datetime) -> dt.datetime:
    if value.tzinfo is None:
        raise ValueError("timestamps must carry a time zone")
    return value.astimezone(dt.timezone.utc)


UtcDatetime = Annotated[
    dt.datetime,
    AfterValidator(_as_utc),
    PlainSerializer(lambda v: v.isoformat(), return_type=str),
    WithJsonSchema({"type": "string", "format": "date-time",
                    "examples": ["2018-02-07T21:00:00+00:00"]}),
]
"""An aware datetime, normalized to UTC and serialized as ISO 8601 with ``+00:00``."""


class _Public(BaseModel):
    model_config = ConfigDict(from_attributes=True, frozen=True)


class InstrumentPublic(_Public):
    """An instrument of the reference data that the store holds."""

    instrument_id: str = Field(description="Exchange-qualified id `MIC:CODE`.",
                               examples=["XNAS:AAPL"])
    symbol: str = Field(description="Common alias (ticker).", examples=["AAPL"])
    mic: str = Field(description="ISO 10383 market identifier code (empty for an index).")
    calendar: str = Field(description="Exchange calendar code of its sessions.", examples=["XNYS"])
    currency: str = Field(description="ISO 4217 quote currency.", examples=["USD"])
    timezone: str = Field(description="IANA time zone of the exchange.",
                          examples=["America/New_York"])
    kind: str = Field(description="`stock`, `etf` or `index`.")
    name: str = Field(description="Company or index name (may be empty).")
    known: bool = Field(description="False when resolved by rule rather than reference data.")


class AliasPublic(_Public):
    """One ticker of an instrument over a date range (inclusive; null = open)."""

    symbol: str = Field(description="The ticker.", examples=["WMI"])
    valid_from: dt.date | None = Field(description="First date it named the instrument.")
    valid_to: dt.date | None = Field(description="Last date it named the instrument; null while "
                                                 "it still does.")
    source: str = Field(description="Where the range comes from: `lean_map:<file>` (a Lean map "
                                    "file), `data:<file>` (a segment of a data file), `data` "
                                    "(first date in the data), `yahoo` (a vendor's index code).")


class InstrumentDetailPublic(InstrumentPublic):
    """An instrument with its dated reference data (listing dates, tickers over time)."""

    listing_date: dt.date | None = Field(
        description="First session known: a Lean map file's first date, else the first date in "
                    "the data (a lower bound of the real listing); null when not in the master.")
    delisting_date: dt.date | None = Field(description="Last session; null while listed.")
    aliases: list[AliasPublic] = Field(description="Every ticker of the instrument with its "
                                                   "dates, oldest first.")


class InstrumentsPublic(_Public):
    """All instruments, sorted by id."""

    data: list[InstrumentPublic]
    count: int


class QuotePublic(_Public):
    """The latest daily bar of an instrument (best source when several have that session)."""

    instrument_id: str
    symbol: str
    source: str = Field(description="Source of the bar (see the source priority).")
    session_date: dt.date = Field(description="Exchange-local session date.")
    event_time: UtcDatetime = Field(description="UTC close of the session.")
    open: float
    high: float
    low: float
    close: float
    volume: float | None = Field(description="Shares traded; null when the source has none.")
    adj_close: float | None = Field(description="Adjusted close; null when the source has none.")
    currency: str = Field(description="ISO 4217 currency of every price field.")
    delayed: bool = Field(
        default=False,
        description="True when the caller's role has no real-time entitlement: the quote is "
                    "the latest bar whose `event_time` is at least `delay_minutes` old.")
    delay_minutes: float = Field(
        default=0.0, description="The delay applied (minutes; 0 for a real-time quote).")


class BarPublic(_Public):
    """One daily OHLCV bar; prices in ``currency`` on the source's basis."""

    session_date: dt.date
    event_time: UtcDatetime
    open: float
    high: float
    low: float
    close: float
    volume: float | None
    adj_close: float | None
    currency: str
    flags: list[str] = Field(description="Quality flags (stored but suspicious).")


class BarsPublic(_Public):
    """Daily bars of one instrument from one source, in time order."""

    instrument_id: str
    symbol: str
    source: str | None = Field(description="Source of every bar; null when the instrument has "
                                           "no bars at all.")
    currency: str = Field(description="The instrument's quote currency.")
    data: list[BarPublic]
    count: int
    next_cursor: str | None = Field(
        default=None, description="Cursor of the next page (pass as `cursor`); null at the end.")


class RevisionPublic(_Public):
    """A superseded revision of a bar (the correction policy: the later revision of an event id
    is served; the earlier ones are kept and listed here)."""

    row_key: str
    source: str
    event_id: str
    payload: dict = Field(description="The superseded revision as it was read (its JSON).")
    origin: str = Field(description="Where it was read: a file, a subscription, or "
                                    "'serving store' for a bar a later run replaced.")
    position: str = Field(description="Where in origin: line:<n>, row:<n>, message:<id>.")
    superseded_by: str = Field(description="Where the served revision was read.")


class RevisionsPublic(_Public):
    """Superseded revisions of one instrument's bars, in time order."""

    instrument_id: str
    symbol: str
    data: list[RevisionPublic]
    count: int


class PredictionPublic(_Public):
    """A forecast of the next session's close."""

    source: str = Field(description="Source whose bars fed the features.")
    model_name: str
    model_version: str
    as_of_date: dt.date = Field(description="Session date of the last bar in the input window.")
    as_of_time: UtcDatetime = Field(description="UTC close of that session.")
    target_date: dt.date = Field(description="The session the forecast is for.")
    base_price: float = Field(description="Adjusted close at `as_of_date`, quote currency.")
    predicted_log_return: float = Field(description="Forecast ln(P_target / P_as_of).")
    predicted_price: float = Field(description="`base_price * exp(predicted_log_return)`, "
                                               "quote currency.")


class PredictionsPublic(_Public):
    """Predictions of one instrument by as-of date."""

    instrument_id: str
    symbol: str
    currency: str
    data: list[PredictionPublic]
    count: int
    next_cursor: str | None = Field(
        default=None, description="Cursor of the next page (pass as `cursor`); null at the end.")


class AlertPublic(_Public):
    """A market-level alert event produced by a rule."""

    alert_id: str
    rule_id: str
    kind: str = Field(description="`price_cross`, `pct_move` or `predicted_move`.")
    instrument_id: str
    event_time: UtcDatetime = Field(description="UTC time of the event that fired the rule.")
    session_date: dt.date
    value: float = Field(description="Value that crossed: a price in quote currency or a "
                                     "return as a fraction.")
    threshold: float = Field(description="The rule's level (same unit as `value`).")
    message: str


class AlertsPublic(_Public):
    """Alert events, newest first."""

    data: list[AlertPublic]
    count: int
    next_cursor: str | None = Field(
        default=None, description="Cursor of the next page (pass as `cursor`); null at the end.")


class Health(_Public):
    """Liveness and store state."""

    status: Literal["ok", "unavailable"]
    store: Literal["ok", "missing", "error"] = Field(
        description="`missing`: no store file yet; `error`: it cannot be opened or queried.")


class PerformanceSummaryPublic(_Public):
    """Errors of a model version over several days (one instrument, or all of them).

    Price errors are in ``currency``; across several currencies ``currency``, ``mae``, ``rmse``
    and ``mean_error`` are null (only the unit-free ``mape`` and ``directional_accuracy`` add up).
    """

    instrument_id: str | None = Field(description="Null when the summary spans instruments.")
    currency: str | None
    first_date: dt.date = Field(description="First realized (target) session.")
    last_date: dt.date = Field(description="Last realized (target) session.")
    n: int = Field(description="Predictions scored against the realized price.")
    mae: float | None = Field(description="Mean |predicted - realized price|, in `currency`.")
    rmse: float | None = Field(description="Root mean squared price error, in `currency`.")
    mape: float = Field(description="Mean |error| / realized price, in percent.")
    directional_accuracy: float | None = Field(
        description="Share of sessions with a nonzero realized return whose sign the forecast "
                    "got right (a zero forecast is a miss); null when there is none.")
    mean_error: float | None = Field(description="Mean predicted - realized price (bias).")


class ModelPublic(_Public):
    """A model version: from the registry, the performance table, or both."""

    model_name: str
    version: str = Field(description="Integer version, as text.", examples=["3"])
    in_registry: bool = Field(description="Its SavedModel is in the model directory.")
    created_at: UtcDatetime | None = Field(description="When it was saved (null if unknown).")
    cutoff_date: dt.date | None = Field(description="Training cutoff: no training target after "
                                                    "this session.")
    validation_metrics: dict[str, float | int | None] | None = Field(
        description="Held-out metrics recorded at training (log-return units); null if "
                    "unknown. Non-finite values are null.")
    performance: PerformanceSummaryPublic | None = Field(
        description="Tracked errors of its stored predictions over all instruments and days "
                    "(null until `miraikakaku track` or the stream has scored some).")


class ModelsPublic(_Public):
    """Model versions, by name then version number."""

    data: list[ModelPublic]
    count: int


class DailyPerformancePublic(_Public):
    """Errors of one model version on one instrument for one realized session."""

    instrument_id: str
    target_date: dt.date = Field(description="The realized session.")
    currency: str
    n: int
    mae: float
    rmse: float
    mape: float = Field(description="Percent.")
    directional_accuracy: float | None
    mean_error: float


class ModelPerformancePublic(_Public):
    """Tracked errors of one model version: overall, per instrument, and per instrument-day."""

    model_name: str
    model_version: str
    overall: PerformanceSummaryPublic | None = Field(
        description="All rows in the filter (null when there are none).")
    instruments: list[PerformanceSummaryPublic] = Field(
        description="One summary per instrument over the whole filter (not cut by `limit`).")
    data: list[DailyPerformancePublic] = Field(
        description="Per instrument and day, by instrument then date; at most `limit` rows.")
    count: int = Field(description="Rows in `data`.")


# -- users and auth (issue 5) ------------------------------------------------------------------
# Request bodies forbid unknown fields (``extra="forbid"``): a client that sends ``role``, ``id``,
# ``token_version`` or ``is_active`` to register or to ``PATCH /v1/users/me`` gets a 422 instead
# of a silently ignored (or, worse, applied) field: no mass assignment.

PASSWORD_MIN_LENGTH = 10
"""Shortest accepted password (characters)."""
PASSWORD_MAX_LENGTH = 256
"""Longest accepted password (characters; bounds the Argon2 work an attacker can ask for)."""

Locale = Literal["en", "ja"]
"""Language of a user's notifications."""

Password = Annotated[str, Field(min_length=PASSWORD_MIN_LENGTH, max_length=PASSWORD_MAX_LENGTH,
                                description=f"At least {PASSWORD_MIN_LENGTH} characters.")]


def _printable(value: str | None) -> str | None:
    if value is not None and any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValueError("control characters are not allowed")
    return value


FullName = Annotated[str | None, Field(max_length=200), AfterValidator(_printable)]
"""Display name: up to 200 characters, no control characters (PostgreSQL refuses NUL)."""
WebhookUrl = Annotated[AnyHttpUrl,
                       UrlConstraints(max_length=2048, allowed_schemes=["http", "https"])]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")

    not_null: ClassVar[tuple[str, ...]] = ()
    """Optional fields that may be left out but not sent as ``null``."""

    @model_validator(mode="after")
    def _refuse_nulls(self) -> "_Request":
        nulls = [f for f in self.not_null
                 if f in self.model_fields_set and getattr(self, f) is None]
        if nulls:
            raise ValueError(f"{', '.join(nulls)} may not be null")
        return self


class UserRegister(_Request):
    """``POST /v1/auth/register``: a new account (role ``user``)."""

    email: EmailStr = Field(max_length=254, examples=["hanako@example.com"])
    password: Password
    full_name: FullName = None
    locale: Locale = "en"


class UserUpdate(_Request):
    """``PATCH /v1/users/me``: only the fields sent change; ``null`` clears ``full_name`` and
    ``webhook_url``."""

    full_name: FullName = None
    locale: Locale | None = Field(default=None, description="`en` or `ja` (not null).")
    email_notifications: bool | None = Field(default=None, description="Not null.")
    webhook_url: WebhookUrl | None = Field(
        default=None, description="http(s) URL that receives signed notification webhooks.")

    not_null = ("locale", "email_notifications")


class PasswordChange(_Request):
    """``POST /v1/users/me/password``: signs out every session (tokens revoked)."""

    current_password: str = Field(max_length=PASSWORD_MAX_LENGTH)
    new_password: Password


class AccountDelete(_Request):
    """``DELETE /v1/users/me`` body: the password confirms the deletion."""

    password: str = Field(max_length=PASSWORD_MAX_LENGTH)


class RefreshRequest(_Request):
    """``POST /v1/auth/refresh`` and ``/v1/auth/logout`` body."""

    refresh_token: str = Field(min_length=1, max_length=512)


class TokenPublic(_Public):
    """Tokens of a login or refresh (OAuth2 token response)."""

    access_token: str = Field(description="JWT (HS256); send as `Authorization: Bearer ...`.")
    token_type: Literal["bearer"] = "bearer"
    expires_in: int = Field(description="Seconds until the access token expires.")
    refresh_token: str = Field(description="Opaque; single use: each refresh returns a new one. "
                                           "Reusing a spent one signs out that login.")


class UserPublic(_Public):
    """An account as its owner (or an admin) sees it; never the password hash or secrets."""

    id: int
    email: str
    full_name: str | None
    role: Literal["admin", "analyst", "user"]
    locale: str
    is_active: bool
    email_notifications: bool
    webhook_url: str | None
    has_webhook_secret: bool = Field(description="A webhook signing secret exists (it is shown "
                                                 "only once, when generated).")
    created_at: UtcDatetime


class UsersPublic(_Public):
    """A page of accounts, by id; pass ``next_cursor`` as ``cursor`` for the next page."""

    data: list[UserPublic]
    count: int = Field(description="Rows in `data`.")
    next_cursor: str | None = Field(description="null on the last page.")


class UserAdminUpdate(_Request):
    """``PATCH /v1/admin/users/{id}``: role and active flag (only the fields sent change)."""

    role: Literal["admin", "analyst", "user"] | None = Field(default=None, description="Not null.")
    is_active: bool | None = Field(default=None, description="Not null.")

    not_null = ("role", "is_active")


class WebhookSecretPublic(_Public):
    """A new webhook signing secret (HMAC-SHA256 key), shown this once."""

    webhook_secret: str
