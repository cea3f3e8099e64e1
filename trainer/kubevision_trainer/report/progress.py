"""Local mode's progress bar (rich): one bar per epoch with loss and learning rate, a line per
step change and per epoch's validation metrics."""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.progress import Progress as RichProgress

from kubevision_api.contract import StepName
from kubevision_api.status import (
    BestMetric,
    CheckpointStatus,
    DatasetStatus,
    EpochMetrics,
    StepState,
)
from kubevision_trainer.report.reporter import BatchEvent, NullReporter, ResumePoint, Selection


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


class ProgressBarReporter(NullReporter):
    """Draws training progress on a terminal (plain lines when it is not one)."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self.bar = RichProgress(
            TextColumn("[bold]epoch {task.fields[epoch]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]} lr {task.fields[lr]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
        )
        self.task: TaskID | None = None
        self.started = False
        # (epoch, batches already done) of a resumed epoch: its bar starts there, not at 0.
        self.resume_at: tuple[int, int] | None = None

    def step(self, name: StepName, state: StepState, message: str | None = None) -> None:
        suffix = f": {message}" if message else ""
        self.console.log(f"{name.value} {state.value.lower()}{suffix}")

    def dataset(self, status: DatasetStatus) -> None:
        skipped = ", ".join(f"{s.count} {s.reason}" for s in status.skipped) or "none"
        self.console.log(
            f"dataset: {status.train} train, {status.val} val"
            + (f", {status.test} test" if status.test else "")
            + f" images; skipped: {skipped}; "
            f"{status.ignored_annotations} annotations of other concepts ignored"
        )
        if status.concepts_without_val_positives:
            self.console.log(
                "concepts without val positives (left out of mAP): "
                + ", ".join(status.concepts_without_val_positives)
            )

    def resumed(self, at: ResumePoint) -> None:
        self.console.log(f"resuming at epoch {at.epoch + 1}, batch {at.batch}")
        self.resume_at = (at.epoch + 1, at.batch)

    def start_epoch(self, epoch: int, epochs: int, batches: int) -> None:
        if not self.started:
            self.bar.start()
            self.started = True
        if self.task is not None:
            self.bar.remove_task(self.task)
        done = self.resume_at[1] if self.resume_at and self.resume_at[0] == epoch else 0
        self.task = self.bar.add_task(
            "train", total=batches, completed=done, epoch=f"{epoch}/{epochs}", loss="-", lr="-"
        )

    def batch(self, event: BatchEvent) -> None:
        if self.task is not None:
            self.bar.update(
                self.task,
                completed=event.index + 1,
                loss=f"{event.loss:.4f}",
                lr=f"{event.learning_rate:.2e}",
            )

    def epoch(self, metrics: EpochMetrics, best: BestMetric | None, selection: Selection) -> None:
        best_text = f"best {selection} {best.value:.4f} (epoch {best.epoch})" if best else ""
        self.console.log(
            f"epoch {metrics.epoch}: val loss {_fmt(metrics.val_loss)}, "
            f"accuracy {_fmt(metrics.accuracy)}, mAP {_fmt(metrics.map)}"
            + (f", AP50 {_fmt(metrics.ap50)}" if metrics.ap50 is not None else "")
            + f"; {best_text}"
        )

    def checkpoint(self, status: CheckpointStatus) -> None:
        self.console.log(f"best checkpoint: epoch {status.epoch}, {status.bytes} bytes")

    def close(self, ok: bool) -> None:
        if self.started:
            self.bar.stop()
            self.started = False
