"""The trainer's progress snapshot: what it reports (to the operator's status endpoint, and to
the local progress bar). Each report is a whole snapshot, so reports are idempotent."""

from __future__ import annotations

from pydantic import Field

from kubevision_api.evaluation import EvaluationStatus
from kubevision_api.export import ExportStatus
from kubevision_api.meta import ApiModel
from kubevision_api.status import CheckpointStatus, DatasetStatus, MetricsStatus, Progress, Step


class TrainerReport(ApiModel):
    """A full snapshot of a training's progress, from the trainer."""

    namespace: str
    model_version: str
    uid: str | None = None
    steps: list[Step] = Field(description="LoadingDataset, Training, Evaluating, Exporting.")
    progress: Progress
    metrics: MetricsStatus | None = None
    dataset: DatasetStatus | None = None
    checkpoint: CheckpointStatus | None = None
    evaluation: EvaluationStatus | None = Field(
        default=None, description="The final evaluation, once written (Evaluating step)."
    )
    export: ExportStatus | None = Field(
        default=None, description="The serving bundle, once written (Exporting step)."
    )
    sequence: int = Field(
        ge=0,
        description=(
            "Grows with each report of one trainer process; the operator drops a report whose "
            "sequence is not above the last one it took from the same Pod (a restarted Pod "
            "starts again from 0; the Pod is known from the token)."
        ),
    )
