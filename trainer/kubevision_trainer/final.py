"""The EVALUATING step of a run (docs/metrics.md): the best checkpoint, already loaded, scored
on the validation split with every image's predictions; ``evaluation.json`` and its figures
written under the output URI, ``report.png`` (the training curves) at its root, the
``EvaluationStatus`` told to the reporters. Every rank takes part in the scoring (it is
sharded); rank 0 alone computes the figures and writes the files (``ranks.on_main``)."""

from __future__ import annotations

from dataclasses import dataclass

from kubevision_api.evaluation import (
    REPORT_PNG,
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
) -> FinalEvaluation:
    """Score the best checkpoint (loaded into ``trainer.model`` on every rank), write the
    artifacts and tell ``reporter`` (``Reporter.evaluation``). Called on every rank.

    Args:
        best_epoch: the epoch of ``best.pt``.
        records: rank 0's records reporter (its lists draw ``report.png``); None on the other
            ranks, or to write no ``report.png`` (``kubevision train --no-report``).

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
    # The test split goes here: scored once with the same call (split=EvaluatedSplit.TEST, its
    # own loader), its files under storage.join(plan.output_uri, TEST_FOLDER), its summary in
    # status.test and status.test_artifacts, its Evaluation after the validation one.
    written: list[EvaluationArtifacts] = []

    def write() -> None:
        assert validation.evaluation is not None  # rank 0's
        report = write_report(plan, records) if records is not None else None
        written.append(artifacts.write(plan.output_uri, validation.evaluation, report_uri=report))

    ranks.on_main(world, write)
    if not world.is_main:
        return FinalEvaluation(final, None, None)
    evaluation = validation.evaluation
    assert evaluation is not None
    status = EvaluationStatus(
        indicator=evaluation.summary.indicator,
        value=evaluation.summary.value,
        validation=evaluation.summary,
        artifacts=written[0],
    )
    reporter.evaluation(status, [evaluation])
    return FinalEvaluation(final, evaluation, status)
