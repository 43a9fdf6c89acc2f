"""Runtime settings from the environment (prefix ``MIRAIKAKAKU_``) and an optional ``.env`` file.

Only locations and names live here; credentials never do (Google Cloud uses ADC). Example:
``MIRAIKAKAKU_DATA_DIR=/tmp/mk miraikakaku run``. See ``.env.example`` for every setting.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings", "get_settings", "REPO_ROOT", "DEFAULT_SECRET"]

REPO_ROOT = Path(__file__).resolve().parents[1]

DEFAULT_INPUTS = (
    "normalized/us_daily_sp500_5yr_2013_2018.normalized.csv.gz",
    "normalized/jp_daily.normalized.csv.gz",
)


DEFAULT_SECRET = "change-me-development-only"
"""Placeholder JWT key; accepted only with ``env=development``."""


class Settings(BaseSettings):
    """Platform settings.

    Attributes:
        env: ``development``, ``test`` or ``production``.
        data_dir: where the embedded stores and models live (created on demand).
        shared_data_dir: the real price data shipped beside the repo (``../shared/data``).
        source_priority: source names, best first; the best source present feeds the features.
        alert_rules_path: YAML file of market alert rules.
        model_name: name of the model family under ``data_dir/models``.
        api_host, api_port: where ``miraikakaku serve`` listens.
        database_url: SQLAlchemy URL of the application database (users, refresh tokens, alert
            rules, notifications); default SQLite ``data_dir/app.db``; production:
            ``postgresql+psycopg://user@host/db``.
        secret_key: HMAC key of the JWTs (HS256). The default placeholder is refused outside
            ``development`` (set ``MIRAIKAKAKU_SECRET_KEY``, e.g. from Secret Manager).
        access_token_minutes: lifetime of an access token (minutes).
        refresh_token_days: lifetime of a refresh token (days; each use rotates it).
        quote_delay_minutes: how old a quote must be before the ``user`` role may see it
            (real-time for ``analyst`` and ``admin``).
        redis_url: Redis for rate limits (``redis://localhost:6379/0``); None: in memory.
        rate_limit_per_minute: requests per minute per user (or per IP when anonymous).
        rate_limit_ip_per_minute: requests per minute per client IP, whoever is logged in.
        cors_origins: origins allowed by CORS (empty: no CORS headers).
        smtp_host, smtp_port, smtp_sender: where the notifier sends email.
        webhook_max_attempts: webhook deliveries tried this often before the dead letter.
        webhook_backoff_seconds: first retry delay; doubles per attempt.
        notify_poll_seconds: how often the notifier polls the outbox and reloads rules.
        freshness_minutes: minutes of open exchange time without an event after which a
            streaming run raises a ``stale_feed`` system alert for an instrument (> 0).
        future_tolerance_daily_hours: how far a daily bar's event time (its session close)
            may lie beyond now before it is dead-lettered ``future_timestamp`` (hours, ≥ 0).
        future_tolerance_intraday_seconds: the same for intraday bars and trades (seconds).
    """

    model_config = SettingsConfigDict(env_prefix="MIRAIKAKAKU_", env_file=".env", extra="ignore",
                                      protected_namespaces=())

    env: Literal["development", "test", "production"] = "development"
    data_dir: Path = REPO_ROOT / "var"
    shared_data_dir: Path = REPO_ROOT.parent / "shared" / "data"
    source_priority: list[str] = Field(
        default_factory=lambda: ["chart0", "sp500_5yr", "yfinance", "mlbot", "user"])
    alert_rules_path: Path = REPO_ROOT / "config" / "alert_rules.yaml"
    model_name: str = "lstm_daily"
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    database_url: str | None = None
    secret_key: SecretStr = SecretStr(DEFAULT_SECRET)
    access_token_minutes: float = 15.0
    refresh_token_days: float = 30.0
    quote_delay_minutes: float = 20.0
    redis_url: str | None = None
    rate_limit_per_minute: int = 600
    rate_limit_ip_per_minute: int = 1200
    cors_origins: list[str] = Field(default_factory=list)
    smtp_host: str = "localhost"
    smtp_port: int = 8025
    smtp_sender: str = "alerts@miraikakaku.local"
    webhook_max_attempts: int = 5
    webhook_backoff_seconds: float = 1.0
    notify_poll_seconds: float = 1.0
    freshness_minutes: float = Field(15.0, gt=0)
    future_tolerance_daily_hours: float = Field(24.0, ge=0)
    future_tolerance_intraday_seconds: float = Field(300.0, ge=0)

    @model_validator(mode="after")
    def _refuse_default_secret(self) -> Settings:
        """Outside ``development`` the JWT key must be set and not the placeholder.

        Raises:
            ValueError: ``env`` is ``test`` or ``production`` and ``secret_key`` is the
                placeholder or shorter than 32 characters.
        """
        if self.env != "development":
            secret = self.secret_key.get_secret_value()
            if secret == DEFAULT_SECRET or len(secret) < 32:
                raise ValueError(
                    f"MIRAIKAKAKU_SECRET_KEY must be set to a random value of at least 32 "
                    f"characters when MIRAIKAKAKU_ENV={self.env} (the default is a placeholder)")
        return self

    @property
    def app_database_url(self) -> str:
        """``database_url``, or SQLite ``data_dir/app.db`` when unset."""
        return self.database_url or f"sqlite:///{self.data_dir / 'app.db'}"

    @property
    def store_path(self) -> Path:
        """The embedded serving store (SQLite)."""
        return self.data_dir / "serving.db"

    @property
    def model_dir(self) -> Path:
        """Versioned SavedModels: ``model_dir/<version>/`` (integer versions, as TF Serving)."""
        return self.data_dir / "models" / self.model_name

    @property
    def default_inputs(self) -> list[Path]:
        """The real daily price files the main job reads by default."""
        return [self.shared_data_dir / p for p in DEFAULT_INPUTS]


@functools.lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (read once)."""
    return Settings()
