"""Process-wide settings, read from the environment (prefix ``EVOREC_``) with safe defaults."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Where evorec keeps downloaded and prepared data.

    ``EVOREC_DATA_DIR`` moves the cache (default ``~/.cache/evorec``); raw downloads live under
    ``datasets/`` and prepared datasets under ``prepared/``.
    """

    model_config = SettingsConfigDict(env_prefix="EVOREC_")

    data_dir: Path = Field(default_factory=lambda: Path.home() / ".cache" / "evorec")

    @property
    def raw_dir(self) -> Path:
        return self.data_dir / "datasets"

    @property
    def prepared_dir(self) -> Path:
        return self.data_dir / "prepared"


def get_settings(data_dir: Path | None = None) -> Settings:
    """Settings from the environment, with ``data_dir`` overriding it when given."""
    return Settings(data_dir=data_dir) if data_dir is not None else Settings()
