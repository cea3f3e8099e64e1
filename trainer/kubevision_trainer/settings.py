"""Trainer settings from the environment (``contract.ENV_PREFIX``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from kubevision_api import contract

#: Default of ``TrainerSettings.prometheus_max_concepts``.
PROMETHEUS_MAX_CONCEPTS = 100


class TrainerSettings(BaseSettings):
    """Process-level settings; what to train comes from the TrainingPlan alone."""

    model_config = SettingsConfigDict(env_prefix=contract.ENV_PREFIX, populate_by_name=True)

    cache_dir: Path = Field(
        default=Path.home() / ".cache" / "kubevision" / "images",
        validation_alias=contract.ENV_CACHE_DIR,
        description="Local content-addressed image cache (contract.ENV_CACHE_DIR).",
    )
    io_threads: int = Field(default=8, ge=1, le=256, description="Concurrent image reads.")
    storage_connect_timeout_seconds: float = Field(
        default=10.0, gt=0, description="Connect timeout of each storage request, in seconds."
    )
    storage_read_timeout_seconds: float = Field(
        default=60.0,
        gt=0,
        description=(
            "Read timeout of each storage request, in seconds: a frozen store fails a request "
            "after this long instead of hanging."
        ),
    )
    storage_attempts: int = Field(
        default=3,
        ge=1,
        le=20,
        description="Tries of each storage request and checkpoint part, the first included.",
    )
    upload_part_mib: int = Field(
        default=64,
        ge=5,
        le=5120,
        description="Checkpoint upload part size in MiB (S3: 5 MiB to 5 GiB per part).",
    )
    rendezvous_timeout_seconds: float = Field(
        default=600.0,
        gt=0,
        description=(
            "Distributed training: how long torchrun's rendezvous waits for every node, in "
            "seconds (docs/distributed.md)."
        ),
    )
    master_wait_seconds: float = Field(
        default=600.0,
        gt=0,
        description=(
            "Several Pods: how long each Pod waits for the master Pod's address "
            "(PET_MASTER_ADDR) to resolve before the rendezvous, in seconds."
        ),
    )
    shutdown_timeout_seconds: int = Field(
        default=100,
        ge=1,
        description=(
            "Distributed training: after a SIGTERM, how long torchrun waits for its workers to "
            "save last.pt and end before it kills them, in seconds; keep it below the Pod's "
            "terminationGracePeriodSeconds (the operator's default 120)."
        ),
    )
    collective_timeout_seconds: float = Field(
        default=600.0,
        gt=0,
        description=(
            "Longest wait of a distributed training's collective (a barrier, the per-batch "
            "all-reduce, gathering the validation predictions), in seconds: a rank that died "
            "or hangs fails the others after this long instead of blocking them forever."
        ),
    )
    prometheus_max_concepts: int = Field(
        default=PROMETHEUS_MAX_CONCEPTS,
        ge=0,
        description=(
            "The final evaluation's Prometheus series: at most this many concepts per evaluated "
            "split get per-concept gauges (the worst by the first indicator's per-concept "
            "figure); the rest are counted in kubevision_evaluation_concepts_omitted and stay "
            "in evaluation.json (docs/metrics.md, Prometheus and Grafana)."
        ),
    )
