"""Operator settings: one pydantic-settings model, ``KUBEVISION_`` environment prefix.

Precedence is flag > environment > default: the CLI passes flags as init arguments, which
pydantic-settings ranks above the environment.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from kubevision_api import contract
from kubevision_api.modelversion import QUANTITY
from kubevision_api.plan import PlanDefaults

_NAMESPACE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


class OperatorSettings(BaseSettings):
    """Everything the operator is configured with; the ModelVersion's spec is the rest."""

    model_config = SettingsConfigDict(env_prefix=contract.ENV_PREFIX, extra="forbid")

    # NoDecode: a comma-separated list reads better in a Deployment than a JSON array.
    namespaces: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description=(
            "Namespaces to watch, comma-separated (KUBEVISION_NAMESPACES=team-a,team-b); "
            "empty: the whole cluster."
        ),
    )
    trainer_image: str = Field(
        default="ghcr.io/kubevision/trainer:0.1.0",
        min_length=1,
        description="Trainer image of the training Jobs, unless spec.image overrides it.",
    )
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = Field(
        default="IfNotPresent", description="imagePullPolicy of the trainer container."
    )
    gpu_resource_name: str = Field(
        default="nvidia.com/gpu",
        min_length=1,
        description="Extended resource requested for spec.resources.gpus (nvidia.com/gpu).",
    )
    output_base_uri: str = Field(
        default="s3://kubevision",
        min_length=1,
        description=(
            "Base of default output URIs: <base>/<namespace>/<name>/<uid>/ (no trailing slash)."
        ),
    )
    output_credentials_secret: str | None = Field(
        default=None,
        description=(
            "Secret (in each ModelVersion's namespace) with AWS_* keys for writing to the "
            "default output location; used when spec.output names neither URI nor Secret."
        ),
    )
    pushgateway_url: str | None = Field(
        default=None, description="Pushgateway base URL the trainers push to; empty: none."
    )
    pushgateway_retention_seconds: int = Field(
        default=86400,
        ge=0,
        description=(
            "Seconds a finished training's Pushgateway group is kept after its completionTime; "
            "groups of deleted or re-created ModelVersions go at the next sweep."
        ),
    )
    pushgateway_sweep_seconds: float = Field(
        default=60.0, gt=0, description="Seconds between two sweeps of the Pushgateway's groups."
    )
    trainer_metrics_port: int = Field(
        default=9090,
        ge=0,
        le=65535,
        description="Port of the trainer's /metrics (container port 'metrics'); 0: none.",
    )
    status_bind_host: str = Field(
        # Every interface: the endpoint serves trainer Pods on other nodes.
        default="0.0.0.0",
        description="Address the HTTPS status endpoint listens on.",
    )
    status_port: int = Field(
        default=8443, ge=1, le=65535, description="Port of the HTTPS status endpoint."
    )
    operator_namespace: str = Field(
        default="kubevision",
        description=(
            "Namespace of the operator: the status endpoint's CA Secret lives there "
            "(KUBEVISION_OPERATOR_NAMESPACE; the chart sets it from the Pod's namespace)."
        ),
    )
    ca_secret_name: str = Field(
        default="kubevision-status-ca",
        description=(
            "Secret that keeps the status endpoint's CA across restarts, so trainers holding "
            "the CA in their plan keep trusting a restarted operator."
        ),
    )
    status_url: str | None = Field(
        default=None,
        description=(
            "URL trainers POST progress to, as they reach it (e.g. "
            "https://kubevision-operator.kubevision.svc:8443); empty: trainers do not report."
        ),
    )
    concurrency_limit: int = Field(
        default=0, ge=0, description="Trainings running at once, cluster-wide; 0: unlimited."
    )
    default_ttl_seconds_after_finished: int | None = Field(
        default=None,
        ge=0,
        description=(
            "ttlSecondsAfterFinished of Jobs whose spec.runPolicy sets none, in seconds; "
            "empty: finished Jobs are kept (their Pods hold the termination message)."
        ),
    )
    shm_size_limit: str = Field(
        default="1Gi",
        pattern=QUANTITY,
        description="sizeLimit of the memory emptyDir at /dev/shm (DataLoader workers).",
    )
    cache_size_limit: str | None = Field(
        default=None,
        pattern=QUANTITY,
        description="sizeLimit of the image-cache emptyDir (KUBEVISION_CACHE_DIR); empty: none.",
    )
    trainer_run_as_user: int = Field(
        default=1000,
        ge=1,
        description="UID (and GID, fsGroup) of the trainer Pods; never 0 (runAsNonRoot).",
    )
    termination_grace_period_seconds: int = Field(
        default=120,
        ge=1,
        description=("Seconds a trainer gets after SIGTERM to finish its batch and write last.pt."),
    )
    watch_server_timeout_seconds: int = Field(
        default=300,
        ge=1,
        description="timeoutSeconds asked of the API server for each watch request, in seconds.",
    )
    watch_client_timeout_seconds: int = Field(
        default=330,
        ge=1,
        description=(
            "Client-side limit of a watch request, in seconds; longer than the server's, so a "
            "silently dead stream is dropped and restarted."
        ),
    )
    health_port: int = Field(
        default=8080, ge=1, le=65535, description="Port of the operator's /healthz and /metrics."
    )
    sidecar_grace_seconds: float = Field(
        default=30.0,
        ge=0,
        description=(
            "Seconds another container (a service mesh's proxy) may keep the trainer's Pod "
            "running after the trainer ended; then the operator ends the attempt: it deletes "
            "the Job of a finished training, or the Pod of an attempt to retry."
        ),
    )
    trainer_pod_labels: dict[str, str] = Field(
        default_factory=lambda: {"sidecar.istio.io/inject": "false"},
        description=(
            "Labels of the trainer Pods (JSON object), besides kubevision's own. The default "
            "opts out of Istio's sidecar injection: a proxy outliving the trainer holds its "
            "GPUs until the operator ends the Pod."
        ),
    )
    trainer_pod_annotations: dict[str, str] = Field(
        default_factory=lambda: {"linkerd.io/inject": "disabled"},
        description="Annotations of the trainer Pods (JSON object); the default opts out of "
        "Linkerd's proxy injection.",
    )
    api_connect_timeout_seconds: float = Field(
        default=5.0,
        gt=0,
        le=300,
        description="Connect timeout of each API request of the operator, in seconds.",
    )
    api_read_timeout_seconds: float = Field(
        default=30.0,
        gt=0,
        le=600,
        description=(
            "Read timeout of each API request, in seconds: a connection that a load balancer "
            "silently dropped fails after this long instead of hanging."
        ),
    )
    api_attempts: int = Field(
        default=3,
        ge=1,
        le=10,
        description=(
            "Tries of an API request that is safe to repeat (reads, creates answered by "
            "AlreadyExists, merge patches, TokenReviews) after a timeout, a lost connection, 429 "
            "or 5xx, with exponential backoff from 0.5 s."
        ),
    )
    reconcile_stall_seconds: float = Field(
        default=120.0,
        gt=0,
        description=(
            "/healthz fails while a reconcile has been running longer than this, in seconds "
            "(a stuck call); more than api_attempts x (connect + read timeout) plus backoff."
        ),
    )
    status_write_interval_seconds: float = Field(
        default=5.0,
        ge=0,
        description=(
            "Least seconds between two status patches of one ModelVersion: the reports and "
            "observations of a shorter while are merged into one patch (the newest wins); an "
            "outcome and a failed gang attempt are written at once. 0: every change at once."
        ),
    )
    shutdown_timeout_seconds: float = Field(
        default=20.0,
        gt=0,
        description=(
            "After SIGTERM, seconds the operator waits for its running reconciles before it "
            "exits anyway (keep it below the Pod's terminationGracePeriodSeconds)."
        ),
    )
    crd_mismatch: Literal["Refuse", "Condition"] = Field(
        default="Refuse",
        description=(
            "What the operator does when the installed CRDs are not the ones it was built "
            "with (checked at start): Refuse exits non-zero with a message naming each CRD, "
            "the fields the API server would prune and the fix; Condition runs anyway, logs "
            "the message as a warning and sets CRDsCurrent False on every status it writes."
        ),
    )
    trainer_command_override: list[str] | None = Field(
        default=None,
        min_length=1,
        description=(
            "Command of the trainer container instead of 'kubevision trainer --plan ...' "
            "(JSON array; the scale test runs a quick stub). The plan path stays mounted."
        ),
    )

    @field_validator("namespaces", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("namespaces")
    @classmethod
    def _dns_labels(cls, value: list[str]) -> list[str]:
        for name in value:
            if len(name) > 63 or not _NAMESPACE.match(name):
                raise ValueError(f"namespace {name!r} is not a DNS label")
        return sorted(set(value))

    @field_validator("output_base_uri")
    @classmethod
    def _no_trailing_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @model_validator(mode="after")
    def _client_outlasts_server(self) -> OperatorSettings:
        # A client timeout at or below the server's would cut healthy watches short.
        if self.watch_client_timeout_seconds <= self.watch_server_timeout_seconds:
            raise ValueError(
                "watch_client_timeout_seconds must exceed watch_server_timeout_seconds "
                f"({self.watch_client_timeout_seconds} <= {self.watch_server_timeout_seconds})"
            )
        return self

    def plan_defaults(self, status_ca_pem: str | None = None) -> PlanDefaults:
        """The operator's part of every TrainingPlan; ``status_ca_pem`` is the CA of the
        certificate the status endpoint generated at start (PEM)."""
        return PlanDefaults(
            output_base_uri=self.output_base_uri,
            status_url=self.status_url,
            status_ca_pem=status_ca_pem if self.status_url else None,
            pushgateway_url=self.pushgateway_url,
            metrics_port=self.trainer_metrics_port or None,
            output_credentials_secret=self.output_credentials_secret,
        )
