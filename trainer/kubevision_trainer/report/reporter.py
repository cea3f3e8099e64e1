"""The ``Reporter`` protocol: what the engine tells the outside world, and nothing more. The
engine knows no Prometheus, storage or Kubernetes; ``main`` plugs reporters in."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from kubevision_api.contract import StepName
from kubevision_api.evaluation import Evaluation, EvaluationStatus
from kubevision_api.export import ExportStatus
from kubevision_api.status import (
    BestMetric,
    CheckpointStatus,
    DatasetStatus,
    EpochMetrics,
    StepState,
)

Selection = Literal["accuracy", "mAP"]


@dataclass(frozen=True)
class BatchEvent:
    """One training batch that ended.

    Attributes:
        epoch: 1-based epoch.
        index: 0-based batch index in the epoch.
        batches: batches in the epoch.
        learning_rate: the learning rate the batch was trained with.
        loss: the batch loss (the task's loss; detection: the sum of the detector's losses).
        images: images in the batch.
        seconds: wall time of the batch, data loading excluded, in seconds.
    """

    epoch: int
    index: int
    batches: int
    learning_rate: float
    loss: float
    images: int
    seconds: float


@dataclass(frozen=True)
class ResumePoint:
    """Where a run restarted from ``last.pt`` continues.

    Attributes:
        epoch: epochs completed; training continues with epoch ``epoch + 1``.
        batch: batches of epoch ``epoch + 1`` already trained (non-zero only after a stop in
            the middle of an epoch, the SIGTERM path).
        batches: batches in an epoch.
        epochs: planned epochs.
        batches_total: training batches done so far, over every epoch.
        images_total: training images processed so far, over every epoch.
        history: the metrics of each completed epoch, in order (``metrics.jsonl``'s records).
        best: the best epoch so far and its value of the selection metric; None when no
            epoch had a value yet.
        selection: the metric ``best`` is chosen by.
    """

    epoch: int
    batch: int
    batches: int
    epochs: int
    batches_total: int
    images_total: int
    history: tuple[EpochMetrics, ...]
    best: BestMetric | None
    selection: Selection


class Reporter(Protocol):
    """Receives training events. Implementations must not raise for transport failures (a
    failed report never stops training); they log instead."""

    def step(self, name: StepName, state: StepState, message: str | None = None) -> None:
        """A step of the progress bar changed state."""

    def dataset(self, status: DatasetStatus) -> None:
        """The dataset was read and split."""

    def resumed(self, at: ResumePoint) -> None:
        """The run restarted from ``last.pt`` at ``at``; comes at most once, before the first
        ``start_epoch``. Counters continue from there, and progress does not go back."""

    def start_epoch(self, epoch: int, epochs: int, batches: int) -> None:
        """Epoch ``epoch`` (1-based) of ``epochs`` starts, with ``batches`` batches."""

    def batch(self, event: BatchEvent) -> None:
        """A training batch ended."""

    def epoch(self, metrics: EpochMetrics, best: BestMetric | None, selection: Selection) -> None:
        """An epoch ended and was validated."""

    def checkpoint(self, status: CheckpointStatus) -> None:
        """A new best checkpoint was written."""

    def evaluation(self, status: EvaluationStatus, evaluations: Sequence[Evaluation]) -> None:
        """The final evaluation of the best checkpoint was written: its summary and artifacts'
        URIs (``status``), and the full figures of each evaluated split (validation first,
        then test when the plan has one)."""

    def export(self, status: ExportStatus) -> None:
        """The serving bundle was written (Exporting step): each file's URI, size, sha256."""

    def close(self, ok: bool) -> None:
        """The run ended (``ok``: successfully). Flush and release resources."""


class MultiReporter:
    """Fans every event out to several reporters, in order."""

    def __init__(self, reporters: Sequence[Reporter]) -> None:
        self.reporters = list(reporters)

    def step(self, name: StepName, state: StepState, message: str | None = None) -> None:
        for reporter in self.reporters:
            reporter.step(name, state, message)

    def dataset(self, status: DatasetStatus) -> None:
        for reporter in self.reporters:
            reporter.dataset(status)

    def resumed(self, at: ResumePoint) -> None:
        for reporter in self.reporters:
            reporter.resumed(at)

    def start_epoch(self, epoch: int, epochs: int, batches: int) -> None:
        for reporter in self.reporters:
            reporter.start_epoch(epoch, epochs, batches)

    def batch(self, event: BatchEvent) -> None:
        for reporter in self.reporters:
            reporter.batch(event)

    def epoch(self, metrics: EpochMetrics, best: BestMetric | None, selection: Selection) -> None:
        for reporter in self.reporters:
            reporter.epoch(metrics, best, selection)

    def checkpoint(self, status: CheckpointStatus) -> None:
        for reporter in self.reporters:
            reporter.checkpoint(status)

    def evaluation(self, status: EvaluationStatus, evaluations: Sequence[Evaluation]) -> None:
        for reporter in self.reporters:
            reporter.evaluation(status, evaluations)

    def export(self, status: ExportStatus) -> None:
        for reporter in self.reporters:
            reporter.export(status)

    def close(self, ok: bool) -> None:
        for reporter in self.reporters:
            reporter.close(ok)


class NullReporter:
    """Ignores every event (base class for reporters that need only a few)."""

    def step(self, name: StepName, state: StepState, message: str | None = None) -> None:
        return None

    def dataset(self, status: DatasetStatus) -> None:
        return None

    def resumed(self, at: ResumePoint) -> None:
        return None

    def start_epoch(self, epoch: int, epochs: int, batches: int) -> None:
        return None

    def batch(self, event: BatchEvent) -> None:
        return None

    def epoch(self, metrics: EpochMetrics, best: BestMetric | None, selection: Selection) -> None:
        return None

    def checkpoint(self, status: CheckpointStatus) -> None:
        return None

    def evaluation(self, status: EvaluationStatus, evaluations: Sequence[Evaluation]) -> None:
        return None

    def export(self, status: ExportStatus) -> None:
        return None

    def close(self, ok: bool) -> None:
        return None
