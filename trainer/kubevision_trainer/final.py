"""The EVALUATING step of a run (docs/metrics.md): the best checkpoint, already loaded, scored
on the validation split with every image's predictions, then once on the test split when the
plan has one; ``evaluation.json`` and its figures written under the output URI (the test
split's under ``<output>/test/``), ``report.png`` (the training curves) at its root, the
``EvaluationStatus`` told to the reporters. Every rank takes part in the scoring (it is
sharded); rank 0 alone computes the figures and writes the files (``ranks.on_main``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch.utils.data import DataLoader

from kubevision_api.evaluation import (
    REPORT_PNG,
    TEST_FOLDER,
    EvaluatedSplit,
    Evaluation,
    EvaluationArtifacts,
    EvaluationStatus,
)
from kubevision_api.plan import TrainingPlan
from kubevision_api.status import EpochMetrics
from kubevision_trainer import engine, ranks, scoring, storage
from kubevision_trainer.evaluation import artifacts
from kubevision_trainer.report import image
from kubevision_trainer.report.records import RecordsReporter
from kubevision_trainer.report.reporter import Reporter


@dataclass(frozen=True)
class FinalEvaluation:
    """What the EVALUATING step found.

    Attributes:
        metrics: the best checkpoint's ``EpochMetrics`` on the validation split (every rank).
        validation: the validation split's ``evaluation.json``; rank 0 only.
        status: the ModelVersion's ``status.evaluation``; rank 0 only.
    """

    metrics: EpochMetrics
    validation: Evaluation | None
    status: EvaluationStatus | None


def write_report(plan: TrainingPlan, records: RecordsReporter) -> str:
    """Draw the training curves of ``records`` (every batch and epoch of the run, resumed
    ones included) into ``report.png`` at the output URI's root; returns its URI.

    Raises:
        storage.StorageError: the write failed.
    """
    uri = storage.join(plan.output_uri, REPORT_PNG)
    png = image.render(
        records.batches,
        records.epochs,
        f"{plan.namespace}/{plan.model_version} ({plan.spec.architecture}, {plan.task.value})",
    )
    storage.write_atomic(uri, png)
    return uri


def evaluate_best(
    plan: TrainingPlan,
    trainer: engine.Engine,
    best_epoch: int,
    reporter: Reporter,
    records: RecordsReporter | None,
    test_loader: DataLoader[Any] | None = None,
) -> FinalEvaluation:
    """Score the best checkpoint (loaded into ``trainer.model`` on every rank), write the
    artifacts and tell ``reporter`` (``Reporter.evaluation``). Called on every rank.

    Args:
        best_epoch: the epoch of ``best.pt``.
        records: rank 0's records reporter (its lists draw ``report.png``); None on the other
            ranks, or to write no ``report.png`` (``kubevision train --no-report``).
        test_loader: this rank's batches of the test split (``main.held_out_loader``), or
            None without one. The same checkpoint is scored on it once, after validation;
            its files go under ``<output>/test/``, its summary in ``status.test``, its
            ``Evaluation`` after the validation one in ``Reporter.evaluation``.

    Raises:
        engine.NonFiniteError, engine.TrainingError: scoring failed (on every rank).
        storage.StorageError: a write failed (on every rank).
    """
    model_version = f"{plan.namespace}/{plan.model_version}"
    world = trainer.world
    validation = scoring.score(
        trainer,
        trainer.val_loader,
        task=plan.task,
        concepts=plan.concepts,
        split=EvaluatedSplit.VALIDATION,
        model_version=model_version,
        best_epoch=best_epoch,
    )
    final = EpochMetrics(
        epoch=best_epoch,
        val_loss=validation.loss,
        accuracy=validation.result.accuracy,
        map=validation.result.map,
        ap50=validation.result.ap50,
    )
    # The test split: scored once, with the checkpoint validation chose; reported apart.
    test = (
        scoring.score(
            trainer,
            test_loader,
            task=plan.task,
            concepts=plan.concepts,
            split=EvaluatedSplit.TEST,
            model_version=model_version,
            best_epoch=best_epoch,
        )
        if test_loader is not None
        else None
    )
    written: list[EvaluationArtifacts] = []

    def write() -> None:
        assert validation.evaluation is not None  # rank 0's
        report = write_report(plan, records) if records is not None else None
        written.append(artifacts.write(plan.output_uri, validation.evaluation, report_uri=report))
        if test is not None:
            assert test.evaluation is not None
            folder = storage.join(plan.output_uri, TEST_FOLDER) + "/"
            written.append(artifacts.write(folder, test.evaluation))

    ranks.on_main(world, write)
    if not world.is_main:
        return FinalEvaluation(final, None, None)
    evaluation = validation.evaluation
    assert evaluation is not None
    test_evaluation = test.evaluation if test is not None else None
    status = EvaluationStatus(
        indicator=evaluation.summary.indicator,
        value=evaluation.summary.value,
        validation=evaluation.summary,
        artifacts=written[0],
        test=test_evaluation.summary if test_evaluation is not None else None,
        test_artifacts=written[1] if test_evaluation is not None else None,
    )
    evaluations = [evaluation] + ([test_evaluation] if test_evaluation is not None else [])
    reporter.evaluation(status, evaluations)
    return FinalEvaluation(final, evaluation, status)
