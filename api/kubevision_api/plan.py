"""The TrainingPlan: everything a trainer needs, resolved once by one pure function that the
operator and local mode share (docs/decisions.md, Resources and the plan)."""

from __future__ import annotations

import hashlib
import json
from typing import Literal

from pydantic import Field

from kubevision_api import architectures, contract
from kubevision_api.contract import StorageRole
from kubevision_api.errors import InputError
from kubevision_api.meta import API_VERSION, ApiModel
from kubevision_api.modelversion import ModelVersion, ModelVersionSpec
from kubevision_api.view import DatasetSource, Task, View, model_id


class PlanError(InputError):
    """A View and a ModelVersion that cannot make a plan; ``field`` is the path at fault,
    e.g. ``spec.architecture``."""

    def __init__(self, obj: str, field: str, message: str) -> None:
        super().__init__(obj, message, field=field)


class PlanDefaults(ApiModel):
    """Operator-wide (or local-mode) defaults that enter the plan."""

    output_base_uri: str = Field(
        default="file://./runs", description="Base of default output URIs, no trailing slash."
    )
    status_url: str | None = Field(default=None, description="Operator's status endpoint.")
    status_ca_pem: str | None = Field(default=None, description="CA of the status endpoint.")
    pushgateway_url: str | None = Field(default=None, description="Pushgateway base URL.")
    metrics_port: int | None = Field(
        default=9090, ge=0, le=65535, description="Trainer /metrics port; null: no server."
    )
    output_credentials_secret: str | None = Field(
        default=None,
        description="Secret of the default output location (used when spec.output names none).",
    )


class StorageSecrets(ApiModel):
    """The Secret that gives each storage role its credentials, by name (the operator renders
    their keys into the trainer's environment; the trainer names them in its errors)."""

    dataset: str | None = None
    output: str | None = None
    weights: str | None = None

    def of(self, role: StorageRole) -> str | None:
        """The Secret of ``role``, or None when the role uses no Secret."""
        return {
            StorageRole.DATASET: self.dataset,
            StorageRole.OUTPUT: self.output,
            StorageRole.WEIGHTS: self.weights,
        }[role]


class StatusEndpoint(ApiModel):
    """Where the trainer POSTs its progress snapshots."""

    url: str
    ca_pem: str | None = None
    audience: str = contract.TOKEN_AUDIENCE
    token_path: str = contract.TOKEN_PATH


class TrainingPlan(ApiModel):
    """The resolved training: read by the trainer, and nothing else (docs/decisions.md,
    Resources and the plan)."""

    api_version: Literal["kubevision.dev/v1alpha1"] = API_VERSION
    kind: Literal["TrainingPlan"] = "TrainingPlan"
    namespace: str
    model_version: str = Field(description="ModelVersion name.")
    uid: str | None = Field(default=None, description="ModelVersion UID.")
    view: str = Field(description="View name.")
    task: Task
    concepts: list[str] = Field(min_length=1, description="Concept names, class-index order.")
    model: str = Field(description="Model id of (task, concepts).")
    dataset: DatasetSource
    spec: ModelVersionSpec
    output_uri: str = Field(description="Output folder URI, ending with '/'.")
    status_endpoint: StatusEndpoint | None = None
    storage_secrets: StorageSecrets = Field(default_factory=StorageSecrets)
    pushgateway_url: str | None = None
    metrics_port: int | None = Field(default=None, ge=0, le=65535)

    def training_hash(self) -> str:
        """sha256 of what decides the trained weights: task, concepts, dataset source and the
        training-relevant spec. Resume refuses an output whose ``last.pt`` has another hash.
        Where the run reports to (status, metrics, output) is left out."""
        spec = self.spec.model_dump(
            mode="json",
            by_alias=True,
            include={
                "architecture",
                "pretrained_weights",
                "training",
                "image_resizer",
                "dataset_split",
                "augmentation",
            },
        )
        # Workers change neither weights nor batches (each worker is seeded from the base seed).
        spec["training"].pop("dataLoaderWorkers", None)
        # Nor does compiling: it runs the same operations in fused kernels (differences at
        # rounding level, as between GPU models); a run may resume with it switched on or off.
        spec["training"].pop("compile", None)
        # Left out at its default, so that the hash of a plan written before it existed stays
        # the same (SyncBatchNorm changes the weights trained; the world size alone does not).
        if not spec["training"].get("syncBatchNorm"):
            spec["training"].pop("syncBatchNorm", None)
        # A test split takes images from training; left out at 0 (no test split), so that the
        # hash of a plan written before it existed stays the same.
        if not spec["datasetSplit"].get("testFraction"):
            spec["datasetSplit"].pop("testFraction", None)
        # The box options change the boxes trained on; left out at their defaults, so that
        # the hash of a plan written before they existed stays the same.
        dataset = self.dataset.model_dump(mode="json", by_alias=True, include={"uri", "format"})
        dataset.update(
            self.dataset.model_dump(
                mode="json",
                by_alias=True,
                include={"box_policy", "box_frame"},
                exclude_defaults=True,
            )
        )
        payload = {
            "task": self.task.value,
            "concepts": self.concepts,
            "dataset": dataset,
            "spec": spec,
        }
        return hashlib.sha256(
            json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
        ).hexdigest()


def resolve(view: View, model_version: ModelVersion, defaults: PlanDefaults) -> TrainingPlan:
    """Resolve a View and a ModelVersion into a TrainingPlan. Pure: no I/O, no clock.

    Raises:
        PlanError: the ModelVersion names another View, or its architecture does not fit the
            View's task.
    """
    mv_name = f"ModelVersion {model_version.metadata.namespace}/{model_version.metadata.name}"
    spec = model_version.spec
    if spec.view_ref.name != view.metadata.name:
        raise PlanError(
            mv_name,
            "spec.viewRef.name",
            f"names View {spec.view_ref.name!r}, not {view.metadata.name!r}",
        )
    task = view.spec.task
    if not architectures.fits(spec.architecture, task):
        raise PlanError(
            mv_name,
            "spec.architecture",
            f"{spec.architecture!r} does not fit the {task.value} task of View "
            f"{view.metadata.name!r}; use one of: " + ", ".join(architectures.ARCHITECTURES[task]),
        )
    concepts = view.spec.concept_names()
    output_uri = spec.output.uri
    if output_uri is None:
        parts = [
            defaults.output_base_uri.rstrip("/"),
            model_version.metadata.namespace,
            model_version.metadata.name,
        ]
        if model_version.metadata.uid:
            parts.append(model_version.metadata.uid)
        output_uri = "/".join(parts)
    if not output_uri.endswith("/"):
        output_uri += "/"
    dataset_secret = view.spec.dataset.credentials_secret_ref
    output_secret = spec.output.credentials_secret_ref
    weights_secret = (
        spec.pretrained_weights.credentials_secret_ref if spec.pretrained_weights else None
    )
    secrets = StorageSecrets(
        dataset=dataset_secret.name if dataset_secret else None,
        # The operator's output Secret belongs to its default output location alone.
        output=output_secret.name
        if output_secret
        else (defaults.output_credentials_secret if spec.output.uri is None else None),
        weights=weights_secret.name if weights_secret else None,
    )
    endpoint = (
        StatusEndpoint(url=defaults.status_url, ca_pem=defaults.status_ca_pem)
        if defaults.status_url
        else None
    )
    return TrainingPlan(
        namespace=model_version.metadata.namespace,
        model_version=model_version.metadata.name,
        uid=model_version.metadata.uid,
        view=view.metadata.name,
        task=task,
        concepts=concepts,
        model=model_id(task, concepts),
        dataset=view.spec.dataset,
        spec=spec,
        output_uri=output_uri,
        status_endpoint=endpoint,
        storage_secrets=secrets,
        pushgateway_url=defaults.pushgateway_url,
        metrics_port=defaults.metrics_port,
    )
