"""Request and response schemas of ``/v1/alert-rules`` and ``/v1/notifications``.

A rule's ``params`` are validated per ``kind`` (a discriminated union on ``kind``; see
``serving.app.models.RuleKind`` for what each kind means). Prices are in the instrument's quote
currency; thresholds are fractions (``0.05`` = 5 %); windows count sessions; timestamps are UTC
ISO 8601 with offset.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, TypeAdapter, field_validator

from serving.app.models import utc

__all__ = [
    "Channel",
    "LevelParams",
    "PctMoveParams",
    "VolumeSpikeParams",
    "PredictedMoveParams",
    "MarketAlertParams",
    "PARAMS_BY_KIND",
    "AlertRuleCreate",
    "AlertRuleUpdate",
    "AlertRulePublic",
    "AlertRulesPublic",
    "NotificationPublic",
    "NotificationsPublic",
    "UnreadCountPublic",
    "ReadAllPublic",
    "validate_params",
]

Channel = Literal["inbox", "email", "webhook"]
UtcDatetime = Annotated[dt.datetime, AfterValidator(utc)]
MAX_WINDOW = 250
"""Longest ``window`` in sessions (the notifier keeps 260 bars per instrument)."""

_FORBID = ConfigDict(extra="forbid")


class LevelParams(BaseModel):
    """``price_above`` / ``price_below``: the price level, quote currency."""

    model_config = _FORBID
    level: float = Field(gt=0, allow_inf_nan=False, examples=[170.0])


class PctMoveParams(BaseModel):
    """``pct_move``: ``|p / p[window sessions ago] - 1| >= threshold``."""

    model_config = _FORBID
    threshold: float = Field(gt=0, le=10, allow_inf_nan=False, examples=[0.05])
    window: int = Field(default=1, ge=1, le=MAX_WINDOW)


class VolumeSpikeParams(BaseModel):
    """``volume_spike``: ``volume >= multiplier * mean(previous window volumes)``."""

    model_config = _FORBID
    multiplier: float = Field(gt=1, le=1000, allow_inf_nan=False, examples=[3.0])
    window: int = Field(default=20, ge=1, le=MAX_WINDOW)


class PredictedMoveParams(BaseModel):
    """``predicted_move``: ``|predicted_log_return| >= threshold``."""

    model_config = _FORBID
    threshold: float = Field(gt=0, le=10, allow_inf_nan=False, examples=[0.02])


class MarketAlertParams(BaseModel):
    """``market_alert``: forward the pipeline's alerts, optionally only of these kinds."""

    model_config = _FORBID
    alert_kinds: list[Literal["price_cross", "pct_move", "predicted_move"]] | None = None


PARAMS_BY_KIND: dict[str, type[BaseModel]] = {
    "price_above": LevelParams, "price_below": LevelParams, "pct_move": PctMoveParams,
    "volume_spike": VolumeSpikeParams, "predicted_move": PredictedMoveParams,
    "market_alert": MarketAlertParams,
}


def validate_params(kind: str, params: dict[str, Any]) -> dict[str, Any]:
    """Validate ``params`` for ``kind``; returns them normalized (defaults filled).

    Raises:
        pydantic.ValidationError: invalid params.
    """
    return PARAMS_BY_KIND[kind].model_validate(params).model_dump(exclude_none=True)


def _channels(value: list[str]) -> list[str]:
    return sorted(set(value) | {"inbox"})


class _RuleCommon(BaseModel):
    model_config = _FORBID
    symbol: str = Field(min_length=1, max_length=64, examples=["AAPL"],
                        description="Alias (`AAPL`, `7203.T`) or id (`XNAS:AAPL`).")
    name: str | None = Field(default=None, min_length=1, max_length=100)
    channels: list[Channel] = Field(default_factory=lambda: ["inbox"],
                                    description="`inbox` is always implied.")
    cooldown_seconds: int = Field(default=3600, ge=0, le=30 * 86_400,
                                  description="Quiet time after firing, in event time.")
    enabled: bool = True

    _norm_channels = field_validator("channels")(_channels)


class PriceAboveCreate(_RuleCommon):
    kind: Literal["price_above"]
    params: LevelParams


class PriceBelowCreate(_RuleCommon):
    kind: Literal["price_below"]
    params: LevelParams


class PctMoveCreate(_RuleCommon):
    kind: Literal["pct_move"]
    params: PctMoveParams


class VolumeSpikeCreate(_RuleCommon):
    kind: Literal["volume_spike"]
    params: VolumeSpikeParams


class PredictedMoveCreate(_RuleCommon):
    kind: Literal["predicted_move"]
    params: PredictedMoveParams


class MarketAlertCreate(_RuleCommon):
    kind: Literal["market_alert"]
    params: MarketAlertParams = Field(default_factory=MarketAlertParams)


AlertRuleCreate = Annotated[
    PriceAboveCreate | PriceBelowCreate | PctMoveCreate | VolumeSpikeCreate
    | PredictedMoveCreate | MarketAlertCreate,
    Field(discriminator="kind"),
]
"""Body of ``POST /v1/alert-rules``: ``params`` validated per ``kind``."""

ALERT_RULE_CREATE = TypeAdapter(AlertRuleCreate)


class AlertRuleUpdate(BaseModel):
    """Body of ``PATCH /v1/alert-rules/{id}``: any subset; ``params`` are validated for the
    rule's kind (kind and symbol cannot change: create another rule)."""

    model_config = _FORBID
    name: str | None = Field(default=None, min_length=1, max_length=100)
    params: dict[str, Any] | None = None
    channels: list[Channel] | None = None
    cooldown_seconds: int | None = Field(default=None, ge=0, le=30 * 86_400)
    enabled: bool | None = None

    @field_validator("channels")
    @classmethod
    def _norm(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else _channels(value)


class AlertRulePublic(BaseModel):
    """A rule as the API returns it."""

    model_config = ConfigDict(from_attributes=True)
    id: int
    name: str
    instrument_id: str
    kind: str
    params: dict[str, Any]
    channels: list[str]
    cooldown_seconds: int
    enabled: bool
    last_fired_at: UtcDatetime | None
    created_at: UtcDatetime
    updated_at: UtcDatetime


class AlertRulesPublic(BaseModel):
    """A page of rules."""

    data: list[AlertRulePublic]
    count: int


class NotificationPublic(BaseModel):
    """A notification in the inbox.

    Attributes:
        value: what crossed (a price in quote currency, a fraction, a volume).
        event_time: UTC time of the market event.
        payload: the event's fields and the rendering context.
    """

    model_config = ConfigDict(from_attributes=True)
    id: int
    rule_id: int | None
    instrument_id: str
    kind: str
    title: str
    body: str
    locale: str
    value: float | None
    event_time: UtcDatetime
    created_at: UtcDatetime
    read_at: UtcDatetime | None
    payload: dict[str, Any]


class NotificationsPublic(BaseModel):
    """A page of notifications, newest first; pass ``next_cursor`` as ``cursor`` for the
    next page (None: no more)."""

    data: list[NotificationPublic]
    count: int
    next_cursor: int | None


class UnreadCountPublic(BaseModel):
    """Unread notifications of the user."""

    count: int


class ReadAllPublic(BaseModel):
    """How many notifications ``read-all`` marked read."""

    updated: int
