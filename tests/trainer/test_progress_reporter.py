"""The local progress bar: lines for steps and epochs, one bar per epoch, and a resumed epoch's
bar that starts at the batch the run stopped at, not at 0."""

from __future__ import annotations

import io

from rich.console import Console

from kubevision_api.contract import StepName
from kubevision_api.status import BestMetric, DatasetStatus, EpochMetrics, StepState
from kubevision_trainer.report.progress import ProgressBarReporter
from kubevision_trainer.report.reporter import BatchEvent, ResumePoint


def _reporter() -> tuple[ProgressBarReporter, io.StringIO]:
    out = io.StringIO()
    return ProgressBarReporter(Console(file=out, width=120, force_terminal=False)), out


def _completed(reporter: ProgressBarReporter) -> float:
    (task,) = (task for task in reporter.bar.tasks if task.id == reporter.task)
    return task.completed


def test_a_fresh_epoch_starts_at_zero() -> None:
    reporter, out = _reporter()
    reporter.step(StepName.TRAINING, StepState.RUNNING)
    reporter.start_epoch(1, 2, 4)
    assert _completed(reporter) == 0
    reporter.batch(BatchEvent(1, 0, 4, 0.1, 1.5, 8, 0.1))
    assert _completed(reporter) == 1
    reporter.epoch(EpochMetrics(epoch=1, accuracy=0.5), BestMetric(epoch=1, value=0.5), "accuracy")
    reporter.close(ok=True)
    text = out.getvalue()
    assert "Training running" in text
    assert "epoch 1: val loss -, accuracy 0.5000, mAP -; best accuracy 0.5000 (epoch 1)" in text


def test_a_resumed_epoch_starts_at_its_batch() -> None:
    reporter, out = _reporter()
    reporter.resumed(
        ResumePoint(
            epoch=2,
            batch=3,
            batches=4,
            epochs=5,
            batches_total=11,
            images_total=88,
            history=(EpochMetrics(epoch=1), EpochMetrics(epoch=2)),
            best=None,
            selection="mAP",
        )
    )
    reporter.start_epoch(3, 5, 4)
    assert _completed(reporter) == 3
    reporter.batch(BatchEvent(3, 3, 4, 0.1, 1.5, 8, 0.1))
    assert _completed(reporter) == 4
    reporter.start_epoch(4, 5, 4)  # the epoch after starts at 0 again
    assert _completed(reporter) == 0
    reporter.close(ok=True)
    assert "resuming at epoch 3, batch 3" in out.getvalue()


def test_the_dataset_line_counts_the_test_split_when_there_is_one() -> None:
    reporter, out = _reporter()
    reporter.dataset(DatasetStatus(train=200, val=50, test=69))
    reporter.dataset(DatasetStatus(train=200, val=50))
    first, second = (
        line.split("dataset: ")[1].split("; ")[0]
        for line in out.getvalue().splitlines()
        if "dataset: " in line
    )
    assert first == "200 train, 50 val, 69 test images"
    assert second == "200 train, 50 val images"
