"""SQLAlchemy 2 models of the application database: users, roles, refresh tokens, alert rules,
notifications and their deliveries, and the notifier's consumer offsets.

The schema is created and changed only by Alembic migrations (``serving/app/alembic``;
``miraikakaku db upgrade`` or ``serving.app.db.migrate(url)``), never by ``create_all``. It runs on
SQLite (the embedded default, ``data_dir/app.db``) and PostgreSQL (production). Every row that
belongs to a user references ``users.id`` with ``ON DELETE CASCADE``: deleting an account deletes
its refresh tokens, rules, notifications and deliveries with it. Timestamps are UTC with time
zone (``DateTime(timezone=True)``; SQLite stores them as ISO text and returns naive values, which
``utc()`` reads back as UTC).
"""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

__all__ = [
    "Base",
    "Role",
    "ROLE_PERMISSIONS",
    "RoleRow",
    "User",
    "RefreshToken",
    "RuleKind",
    "AlertRule",
    "Notification",
    "Delivery",
    "DeliveryStatus",
    "ConsumerOffset",
    "utc",
    "utcnow",
]


def utcnow() -> dt.datetime:
    """The current time, UTC with time zone."""
    return dt.datetime.now(dt.timezone.utc)


def utc(value: dt.datetime | None) -> dt.datetime | None:
    """A stored timestamp as aware UTC (SQLite returns naive values that are UTC)."""
    if value is None:
        return None
    return value.replace(tzinfo=dt.timezone.utc) if value.tzinfo is None else value.astimezone(
        dt.timezone.utc)


class Base(DeclarativeBase):
    """Declarative base of every application table (Alembic's ``target_metadata``)."""

    type_annotation_map = {dt.datetime: DateTime(timezone=True), dict[str, Any]: JSON}


class Role(str, enum.Enum):
    """The three roles; a user has exactly one."""

    admin = "admin"
    analyst = "analyst"
    user = "user"


ROLE_PERMISSIONS: dict[Role, frozenset[str]] = {
    Role.user: frozenset({
        "profile:read", "profile:write", "market:read", "alerts:read", "alerts:write",
        "notifications:read", "notifications:write"}),
    Role.analyst: frozenset({
        "profile:read", "profile:write", "market:read", "market:realtime", "analytics:read",
        "alerts:read", "alerts:write", "notifications:read", "notifications:write"}),
    Role.admin: frozenset({
        "profile:read", "profile:write", "market:read", "market:realtime", "analytics:read",
        "alerts:read", "alerts:write", "notifications:read", "notifications:write",
        "users:read", "users:write"}),
}
"""What each role may do; ``require_permission`` checks it. ``market:realtime``: quotes without
the ``quote_delay_minutes`` delay. The ``roles`` table is seeded from this map by migration."""


class RoleRow(Base):
    """A role and its permissions (seeded by the first migration from ``ROLE_PERMISSIONS``)."""

    __tablename__ = "roles"

    name: Mapped[str] = mapped_column(String(16), primary_key=True)
    description: Mapped[str] = mapped_column(String(200))
    permissions: Mapped[list[str]] = mapped_column(JSON)


class User(Base):
    """An account.

    Attributes:
        id: integer primary key (never reused on PostgreSQL; ids are not secrets).
        email: login name, unique, stored lower-case.
        password_hash: Argon2id hash (``pwdlib``), never the password.
        role: ``admin``, ``analyst`` or ``user`` (FK ``roles.name``); only an admin changes it.
        locale: ``en`` or ``ja``: the language of the user's notifications.
        webhook_url, webhook_secret: where signed webhooks go and the HMAC-SHA256 key.
        token_version: bumped on password change and logout-everywhere; access tokens carry
            it, so older ones stop working at once.
    """

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True, index=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    full_name: Mapped[str | None] = mapped_column(String(200), default=None)
    role: Mapped[str] = mapped_column(String(16), ForeignKey("roles.name"), default=Role.user.value)
    locale: Mapped[str] = mapped_column(String(8), default="en")
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    email_notifications: Mapped[bool] = mapped_column(Boolean, default=False)
    webhook_url: Mapped[str | None] = mapped_column(String(2048), default=None)
    webhook_secret: Mapped[str | None] = mapped_column(String(128), default=None)
    token_version: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    rules: Mapped[list[AlertRule]] = relationship(
        back_populates="user", cascade="all, delete-orphan", passive_deletes=True)
    notifications: Mapped[list[Notification]] = relationship(
        back_populates="user", cascade="all, delete-orphan", passive_deletes=True)
    refresh_tokens: Mapped[list[RefreshToken]] = relationship(
        back_populates="user", cascade="all, delete-orphan", passive_deletes=True)


class RefreshToken(Base):
    """One issued refresh token (opaque; only its SHA-256 is stored).

    Tokens of one login form a family (``family_id``). Using a token rotates it: it gets
    ``used_at`` and ``replaced_by``, and a new token of the same family is issued. Presenting a
    token that was already used revokes the whole family (RFC 6819 §5.2.2.3; OAuth 2.0 Security
    BCP §4.14): whoever holds a copy, the thief or the user, must log in again.
    """

    __tablename__ = "refresh_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    family_id: Mapped[str] = mapped_column(String(36), index=True)
    issued_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[dt.datetime]
    used_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    replaced_by: Mapped[int | None] = mapped_column(Integer, default=None)

    user: Mapped[User] = relationship(back_populates="refresh_tokens")


class RuleKind(str, enum.Enum):
    """Kinds of user alert rule and their parameters (``AlertRule.params``).

    * ``price_above`` / ``price_below``: ``{"level": float}`` in the quote currency; fires when a
      bar's close crosses the level (the previous close was on the other side).
    * ``pct_move``: ``{"threshold": fraction, "window": sessions}``; fires when
      ``|close / close[window sessions ago] - 1| >= threshold`` (adjusted closes when present).
    * ``volume_spike``: ``{"multiplier": float, "window": sessions}``; fires when a bar's volume
      is at least ``multiplier`` × the mean volume of the previous ``window`` bars.
    * ``predicted_move``: ``{"threshold": fraction}``; fires when a prediction's
      ``|predicted_log_return| >= threshold``.
    * ``market_alert``: ``{"alert_kinds": [..]}`` (optional filter); forwards the pipeline's
      market alert events (``price_cross``, ``pct_move``, ``predicted_move``) for the instrument.
    """

    price_above = "price_above"
    price_below = "price_below"
    pct_move = "pct_move"
    volume_spike = "volume_spike"
    predicted_move = "predicted_move"
    market_alert = "market_alert"


class AlertRule(Base):
    """A user's alert rule on one instrument.

    Attributes:
        instrument_id: exchange-qualified id (``XNAS:AAPL``), resolved from the symbol given.
        kind, params: see ``RuleKind``.
        channels: where notifications go: any of ``inbox`` (always implied), ``email``,
            ``webhook``.
        cooldown_seconds: after firing, the rule stays quiet this long in event time (a
            flapping price does not spam).
        last_fired_at: event time of the last notification (cooldown reference).
    """

    __tablename__ = "alert_rules"
    __table_args__ = (Index("alert_rules_by_instrument", "instrument_id", "enabled"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    instrument_id: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(32))
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    channels: Mapped[list[str]] = mapped_column(JSON, default=list)
    cooldown_seconds: Mapped[int] = mapped_column(Integer, default=3600)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    last_fired_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    user: Mapped[User] = relationship(back_populates="rules")


class Notification(Base):
    """One notification in a user's inbox.

    ``dedup_key`` (``{rule_id}/{event_id}``) is unique per user: a replayed event notifies once.
    """

    __tablename__ = "notifications"
    __table_args__ = (
        UniqueConstraint("user_id", "dedup_key", name="notifications_once_per_event"),
        Index("notifications_by_user", "user_id", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    rule_id: Mapped[int | None] = mapped_column(
        ForeignKey("alert_rules.id", ondelete="SET NULL"), default=None)
    dedup_key: Mapped[str] = mapped_column(String(300))
    instrument_id: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(32))
    title: Mapped[str] = mapped_column(String(300))
    body: Mapped[str] = mapped_column(Text)
    locale: Mapped[str] = mapped_column(String(8))
    value: Mapped[float | None] = mapped_column(Float, default=None)
    event_time: Mapped[dt.datetime]
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    read_at: Mapped[dt.datetime | None] = mapped_column(default=None)

    user: Mapped[User] = relationship(back_populates="notifications")
    deliveries: Mapped[list[Delivery]] = relationship(
        back_populates="notification", cascade="all, delete-orphan", passive_deletes=True)


class DeliveryStatus(str, enum.Enum):
    """``pending`` (to try at ``next_attempt_at``), ``sent``, ``dead`` (gave up: dead letter)."""

    pending = "pending"
    sent = "sent"
    dead = "dead"


class Delivery(Base):
    """One notification's delivery on one external channel (``email`` or ``webhook``)."""

    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint("notification_id", "channel", name="deliveries_once_per_channel"),
        Index("deliveries_due", "status", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    notification_id: Mapped[int] = mapped_column(
        ForeignKey("notifications.id", ondelete="CASCADE"))
    channel: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default=DeliveryStatus.pending.value)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    last_error: Mapped[str | None] = mapped_column(Text, default=None)
    delivered_at: Mapped[dt.datetime | None] = mapped_column(default=None)

    notification: Mapped[Notification] = relationship(back_populates="deliveries")


class ConsumerOffset(Base):
    """How far a consumer has read a source (the notifier's position in the outbox)."""

    __tablename__ = "consumer_offsets"

    consumer: Mapped[str] = mapped_column(String(64), primary_key=True)
    source: Mapped[str] = mapped_column(String(200), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)
