"""``RecordsReporter`` on file://: a resumed run keeps the records before its resume point and
drops the rest, and a run that fails before its first event leaves existing records alone."""

from __future__ import annotations

import json
from pathlib import Path

from kubevision_api.status import BestMetric, EpochMetrics
from kubevision_trainer.report.records import RecordsReporter
from kubevision_trainer.report.reporter import BatchEvent, ResumePoint


def _lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _resume_point(history: tuple[EpochMetrics, ...], batch: int) -> ResumePoint:
    return ResumePoint(
        epoch=len(history),
        batch=batch,
        batches=3,
        epochs=3,
        batches_total=3 * len(history) + batch,
        images_total=0,
        history=history,
        best=BestMetric(epoch=1, value=0.5),
        selection="accuracy",
    )


def test_a_resumed_run_keeps_what_came_before_its_resume_point(tmp_path: Path) -> None:
    out = tmp_path.as_uri() + "/"
    first = RecordsReporter(out)
    for epoch in (1, 2):  # epoch 2 stopped after its batch 1 (a SIGTERM), epoch 1 validated
        for index in range(3 if epoch == 1 else 2):
            first.batch(BatchEvent(epoch, index, 3, 0.1 * epoch, float(index), 4, 0.1))
        if epoch == 1:
            first.epoch(
                EpochMetrics(epoch=1, accuracy=0.5), BestMetric(epoch=1, value=0.5), "accuracy"
            )
    first.close(ok=False)
    assert len(_lines(tmp_path / "batches.jsonl")) == 5

    # last.pt says: epoch 1 done, 1 batch of epoch 2 done (the second one was not saved).
    second = RecordsReporter(out)
    second.resumed(_resume_point((EpochMetrics(epoch=1, accuracy=0.5),), batch=1))
    second.batch(BatchEvent(2, 1, 3, 0.2, 7.0, 4, 0.1))
    second.close(ok=False)
    batches = _lines(tmp_path / "batches.jsonl")
    assert [(b["epoch"], b["batch"], b["loss"]) for b in batches] == [
        (1, 0, 0.0),
        (1, 1, 1.0),
        (1, 2, 2.0),
        (2, 0, 0.0),
        (2, 1, 7.0),
    ]
    assert _lines(tmp_path / "metrics.jsonl") == [
        EpochMetrics(epoch=1, accuracy=0.5).model_dump(mode="json", by_alias=True)
    ]


def test_nothing_is_written_before_the_first_event(tmp_path: Path) -> None:
    (tmp_path / "metrics.jsonl").write_text('{"epoch":1}\n')
    (tmp_path / "batches.jsonl").write_text('{"epoch":1,"batch":0}\n')
    RecordsReporter(tmp_path.as_uri() + "/").close(ok=False)
    assert (tmp_path / "metrics.jsonl").read_text() == '{"epoch":1}\n'
    assert (tmp_path / "batches.jsonl").read_text() == '{"epoch":1,"batch":0}\n'
