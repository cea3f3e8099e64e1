"""A ModelVersion's status: what the operator observes and the trainer reports (steps,
progress, metrics, dataset counts, the best checkpoint, its evaluation, attempts), written by
the operator alone. The trainer's reports (``progress.TrainerReport``) carry the same parts."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Literal

from pydantic import Field

from kubevision_api.contract import StepName
from kubevision_api.evaluation import EvaluationStatus
from kubevision_api.export import ExportStatus
from kubevision_api.meta import ApiModel, Condition, list_map


class StepState(StrEnum):
    """State of one step."""

    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    SKIPPED = "Skipped"


class Step(ApiModel):
    """One step of the progress bar."""

    name: StepName = Field(description="Step name; steps run in the declared order.")
    state: StepState = Field(default=StepState.PENDING, description="State of the step.")
    started_at: datetime | None = Field(default=None, description="When the step started.")
    finished_at: datetime | None = Field(default=None, description="When the step ended.")
    message: str | None = Field(default=None, max_length=4096, description="Detail for people.")


def initial_steps() -> list[Step]:
    """Every step, Pending, in order."""
    return [Step(name=name) for name in StepName]


class Progress(ApiModel):
    """Progress bar."""

    percent: int = Field(default=0, ge=0, le=100, description="Share of the work done.")
    epoch: int = Field(default=0, ge=0, description="Epochs finished.")
    epochs: int = Field(default=0, ge=0, description="Epochs planned.")
    display: str = Field(default="0/0", description="epoch/epochs.")


class BestMetric(ApiModel):
    """Best value of the selection metric so far."""

    epoch: int = Field(ge=1, description="Epoch of the best value.")
    value: float = Field(description="Best value of the selection metric.")


class EpochMetrics(ApiModel):
    """Metrics of one epoch (one record of metrics.jsonl). Null where the task has none."""

    epoch: int = Field(ge=1, description="Epoch number, from 1.")
    learning_rate: float | None = Field(
        default=None, description="Learning rate at the end of the epoch."
    )
    train_loss: float | None = Field(default=None, description="Mean training loss.")
    val_loss: float | None = Field(default=None, description="Mean validation loss.")
    accuracy: float | None = Field(default=None, description="Val accuracy (tagging: at 0.5).")
    map: float | None = Field(
        default=None, alias="mAP", description="Val mAP (detection: COCO mAP@[.5:.95])."
    )
    ap50: float | None = Field(default=None, alias="ap50", description="Detection: COCO AP50.")


class MetricsStatus(ApiModel):
    """Latest and best validation metrics."""

    selection: Literal["accuracy", "mAP"] = Field(
        description="The metric that selects the best checkpoint."
    )
    best: BestMetric | None = Field(default=None, description="Best value so far.")
    last: EpochMetrics | None = Field(default=None, description="Metrics of the last epoch.")


class SkippedImages(ApiModel):
    """Images left out, by reason."""

    reason: str = Field(max_length=128, description="CamelCase reason, e.g. NoBoxes.")
    count: int = Field(ge=0, description="Images left out for that reason.")


class DroppedBoxes(ApiModel):
    """Detection boxes dropped, by reason."""

    reason: str = Field(
        max_length=128,
        description=(
            "CamelCase reason: ZeroSize (width or height 0), OutsideImage (no area inside the "
            "image), UnderOnePixelAfterResize (under 1 px at the imageResizer's size)."
        ),
    )
    count: int = Field(ge=0, description="Boxes dropped for that reason.")


class BoxCounts(ApiModel):
    """What became of the detection boxes that were not wholly usable (spec.dataset.boxPolicy
    clip)."""

    clipped: int = Field(default=0, ge=0, description="Boxes clipped to their image.")
    dropped: list[DroppedBoxes] = Field(
        default_factory=list,
        max_length=16,
        description="Boxes dropped, by reason.",
        json_schema_extra=list_map("reason"),
    )


class DatasetStatus(ApiModel):
    """What the trainer found in the dataset."""

    train: int = Field(ge=0, description="Training images (before balancing).")
    val: int = Field(ge=0, description="Validation images.")
    test: int = Field(
        default=0,
        ge=0,
        description="Held-out test images (spec.datasetSplit.testFraction; 0 without a test "
        "split).",
    )
    train_balanced: int | None = Field(default=None, ge=0, description="After balancing.")
    skipped: list[SkippedImages] = Field(
        default_factory=list,
        max_length=64,
        description="Images left out, by reason.",
        json_schema_extra=list_map("reason"),
    )
    ignored_annotations: int = Field(
        default=0, ge=0, description="Annotations of concepts that the View lacks."
    )
    concepts_without_val_positives: list[str] = Field(
        default_factory=list,
        description="Concepts without a validation positive, left out of mAP.",
    )
    concepts_without_train_positives: list[str] = Field(
        default_factory=list,
        description="Concepts without a training positive (spec.dataset.allowEmptyConcepts).",
    )
    background_val: int = Field(
        default=0,
        ge=0,
        description=(
            "Detection: validation images without boxes, kept so that their false positives "
            "count (those of the training split are skipped as NoBoxes)."
        ),
    )
    boxes: BoxCounts | None = Field(
        default=None, description="Detection: boxes clipped and dropped."
    )


class CheckpointStatus(ApiModel):
    """The best checkpoint in storage."""

    uri: str = Field(description="fsspec URI of checkpoints/best.pt.")
    epoch: int = Field(ge=1, description="Epoch it was saved at.")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="SHA-256 of the file, in hex.")
    bytes: int = Field(ge=0, description="File size.")


class ReportCursor(ApiModel):
    """Which trainer report the status holds, so a stale report never overwrites a newer
    one, across operator restarts too."""

    pod: str | None = Field(
        default=None, max_length=253, description="Pod that sent it (from its token)."
    )
    sequence: int = Field(ge=0, description="The report's sequence number in that Pod.")


class AttemptFailure(ApiModel):
    """Why one attempt of the training Job ended without the training: kept when the next
    attempt starts, so that a run that succeeded on its second try still says what the first
    one met."""

    attempt: int = Field(ge=1, description="Which attempt (1: the first Pod of the Job).")
    reason: str = Field(
        max_length=128, description="CamelCase: the trainer's outcome, OOMKilled, TrainerCrashed."
    )
    message: str = Field(max_length=4096, description="What happened, in one sentence.")
    exit_code: int | None = Field(default=None, description="The trainer container's exit code.")
    finished_at: datetime | None = Field(default=None, description="When the attempt ended.")


class Phase(StrEnum):
    """``status.phase``: the printer column's one word, derived from the conditions by the
    operator (``status.summarize``). Nothing branches on it (the API conventions deprecate
    phases for new types); the conditions are the state."""

    PENDING = "Pending"
    QUEUED = "Queued"
    RUNNING = "Running"
    SUSPENDED = "Suspended"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


class ModelVersionStatus(ApiModel):
    """Observed state of a ModelVersion, written by the operator alone."""

    phase: str | None = Field(default=None, description="Printer column only; derived.")
    observed_generation: int | None = Field(
        default=None, ge=0, description="metadata.generation that this status describes."
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        max_length=32,
        description=(
            "Observations, one per type: ViewResolved, Admitted, Running, Succeeded, Failed, "
            "Suspended."
        ),
        json_schema_extra=list_map("type"),
    )
    model: str | None = Field(default=None, description="Model id, at admission.")
    concepts: list[str] = Field(default_factory=list, description="Snapshot, index order.")
    steps: list[Step] = Field(
        default_factory=list,
        max_length=16,
        description="Steps in order, keyed by name.",
        json_schema_extra=list_map("name"),
    )
    current_step: StepName | None = Field(default=None, description="The step running now.")
    progress: Progress | None = Field(default=None, description="Progress bar.")
    metrics: MetricsStatus | None = Field(
        default=None, description="Latest and best validation metrics."
    )
    dataset: DatasetStatus | None = Field(
        default=None, description="What the trainer found in the dataset."
    )
    checkpoint: CheckpointStatus | None = Field(
        default=None, description="The best checkpoint in storage."
    )
    evaluation: EvaluationStatus | None = Field(
        default=None,
        description=(
            "The best checkpoint's final evaluation, set when the Evaluating step has written "
            "it: the task's first indicator and its value on the validation split (the Score "
            "column), headline numbers per split (test too when the plan has one), and the "
            "URIs of evaluation.json and its figures. The first indicator is, for "
            "classification, accuracy (top-1 share of images right; higher is better); for "
            "tagging, mAP (macro mean over concepts of the average precision; higher is "
            "better); for detection, meanOptimalLRP (mean over concepts of the optimal "
            "Localisation Recall Precision, an error in [0, 1] over localisation, false "
            "positives and false negatives, Oksuz et al. 2018; lower is better). A number "
            "that cannot be defined (no concept with ground truth, no prediction) is absent "
            "here and null in evaluation.json, never 0 or 1; concepts without ground truth "
            "are left out of every mean. Definitions: docs/metrics.md."
        ),
    )
    export: ExportStatus | None = Field(
        default=None,
        description=(
            "The serving bundle the Exporting step wrote (spec.export): each file's URI, size "
            "and sha256 (docs/serving.md)."
        ),
    )
    job_name: str | None = Field(default=None, description="Name of the training Job.")
    start_time: datetime | None = Field(default=None, description="When training started.")
    completion_time: datetime | None = Field(default=None, description="When training finished.")
    last_report: ReportCursor | None = Field(
        default=None, description="The trainer report merged last."
    )
    attempts: int | None = Field(
        default=None, ge=0, description="Pods the training Job has started (1: no retry yet)."
    )
    last_failure: AttemptFailure | None = Field(
        default=None, description="The latest attempt that failed, kept across retries."
    )
