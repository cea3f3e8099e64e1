"""Trainer settings from the environment (``contract.ENV_PREFIX``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from kubevision_api import contract


class TrainerSettings(BaseSettings):
    """Process-level settings; what to train comes from the TrainingPlan alone."""

    model_config = SettingsConfigDict(env_prefix=contract.ENV_PREFIX, populate_by_name=True)

    cache_dir: Path = Field(
        default=Path.home() / ".cache" / "kubevision" / "images",
        validation_alias=contract.ENV_CACHE_DIR,
        description="Local content-addressed image cache (contract.ENV_CACHE_DIR).",
    )
    io_threads: int = Field(default=8, ge=1, le=256, description="Concurrent image reads.")
