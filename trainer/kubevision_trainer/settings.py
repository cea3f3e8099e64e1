"""Trainer settings from the environment (``KUBEVISION_`` prefix)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class TrainerSettings(BaseSettings):
    """Process-level settings; what to train comes from the TrainingPlan alone."""

    model_config = SettingsConfigDict(env_prefix="KUBEVISION_")

    cache_dir: Path = Field(
        default=Path.home() / ".cache" / "kubevision" / "images",
        description="Local content-addressed image cache (KUBEVISION_CACHE_DIR).",
    )
    io_threads: int = Field(default=8, ge=1, le=256, description="Concurrent image reads.")
