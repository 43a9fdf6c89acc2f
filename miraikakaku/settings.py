"""Runtime settings from the environment (prefix ``MIRAIKAKAKU_``) and an optional ``.env`` file.

Only locations and names live here; credentials never do (Google Cloud uses ADC). Example:
``MIRAIKAKAKU_DATA_DIR=/tmp/mk miraikakaku run``. See ``.env.example`` for every setting.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings", "get_settings", "REPO_ROOT"]

REPO_ROOT = Path(__file__).resolve().parents[1]

DEFAULT_INPUTS = (
    "normalized/us_daily_sp500_5yr_2013_2018.normalized.csv.gz",
    "normalized/jp_daily.normalized.csv.gz",
)


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
