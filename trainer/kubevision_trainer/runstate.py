"""Where a training run is: the plain-data part of ``last.pt`` (:class:`RunState`), the
best-checkpoint bookkeeping over it, and the resume point that reporters are told.

The state is stored in ``last.pt`` under the key :data:`RUN_STATE_KEY` as plain data (loadable
with ``weights_only=True``); its fields only ever get added with defaults, so older checkpoints
keep resuming."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kubevision_api.status import BestMetric, EpochMetrics
from kubevision_api.view import Task
from kubevision_trainer.report.reporter import ResumePoint, Selection

#: ``last.pt``'s key of the :class:`RunState` (the name every checkpoint so far carries).
RUN_STATE_KEY = "progress"


def selection(task: Task) -> Selection:
    """The best-checkpoint metric: accuracy for classification, mAP for tagging and detection
    (docs/trainer.md, "Metrics")."""
    return "accuracy" if task is Task.CLASSIFICATION else "mAP"


def selected_value(metrics: EpochMetrics, sel: Selection) -> float | None:
    """The value of the selection metric ``sel`` in ``metrics`` (None where undefined)."""
    return metrics.accuracy if sel == "accuracy" else metrics.map


@dataclass
class RunState:
    """Where the run is and what it has seen.

    Attributes:
        epoch: epochs completed.
        batch: batches completed in epoch ``epoch + 1`` (non-zero only after a stop in the
            middle of an epoch).
        best_epoch, best_value: the best epoch so far and its selection metric; the first
            epoch always counts, so ``best_value`` may be None while ``best_epoch`` is set.
        stale_epochs: epochs since the last improvement (early stopping's count).
        loss_sum, loss_count: the batch losses of the epoch in progress (its mean train loss).
        batches_total, images_total: training batches and images done, over every epoch.
        history: ``EpochMetrics`` records (JSON form, camelCase) of the completed epochs.
        initial: validation metrics of the model before any training (JSON form, no epoch).
    """

    epoch: int = 0
    batch: int = 0
    best_epoch: int | None = None
    best_value: float | None = None
    stale_epochs: int = 0
    loss_sum: float = 0.0
    loss_count: int = 0
    batches_total: int = 0
    images_total: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    initial: dict[str, Any] | None = None

    def best(self) -> BestMetric | None:
        """The best epoch and value so far; None until an epoch had a value."""
        if self.best_epoch is None or self.best_value is None:
            return None
        return BestMetric(epoch=self.best_epoch, value=self.best_value)

    def improves(self, value: float | None, min_delta: float) -> bool:
        """Whether an epoch with selection metric ``value`` is the new best: the first epoch
        always is; otherwise it must beat the best by more than ``min_delta`` (a missing value
        never does, and any value beats a best that had none)."""
        if self.best_epoch is None:
            return True
        if value is None:
            return False
        if self.best_value is None:
            return True
        return value > self.best_value + min_delta

    def end_epoch(self, record: EpochMetrics, value: float | None, improved: bool) -> None:
        """Record the validated epoch ``record.epoch`` (``value``: its selection metric;
        ``improved``: what :meth:`improves` said before this call)."""
        self.epoch, self.batch = record.epoch, 0
        self.loss_sum, self.loss_count = 0.0, 0
        self.history.append(record.model_dump(mode="json", by_alias=True))
        if improved:
            self.best_epoch, self.best_value = record.epoch, value
            self.stale_epochs = 0
        else:
            self.stale_epochs += 1

    def resume_point(self, *, batches: int, epochs: int, selection: Selection) -> ResumePoint:
        """What reporters are told when a run resumes from this state (``batches``: per
        epoch; ``epochs``: planned)."""
        return ResumePoint(
            epoch=self.epoch,
            batch=self.batch,
            batches=batches,
            epochs=epochs,
            batches_total=self.batches_total,
            images_total=self.images_total,
            history=tuple(EpochMetrics.model_validate(r) for r in self.history),
            best=self.best(),
            selection=selection,
        )
