"""Literal ``Evaluation`` objects built by hand from ``kubevision_api.evaluation``'s models:
the reporters' tests need evaluations whose every figure they chose, without running the
per-task evaluation code."""

from __future__ import annotations

from collections.abc import Sequence

from kubevision_api.evaluation import (
    Averages,
    ClassificationConcept,
    ClassificationEvaluation,
    DetectionConcept,
    DetectionEvaluation,
    EvaluatedSplit,
    Evaluation,
    EvaluationArtifacts,
    EvaluationStatus,
    EvaluationSummary,
    Indicator,
    Lrp,
    OperatingPoint,
    PrecisionRecall,
    TaggingConcept,
    TaggingEvaluation,
)
from kubevision_api.view import Task

NO_AVERAGES = Averages(precision=None, recall=None, f1=None)

#: (concept, precision, recall, f1, support) of one classification concept.
ClassificationRow = tuple[str, float | None, float | None, float | None, int]
#: (concept, AP, F1 at the best threshold) of one tagging concept; AP None: no positive.
TaggingRow = tuple[str, float | None, float | None]
#: (concept, optimal LRP, AP, AP50) of one detection concept; oLRP None: no ground truth.
DetectionRow = tuple[str, float | None, float | None, float | None]


def classification(
    rows: Sequence[ClassificationRow],
    accuracy: float | None,
    split: EvaluatedSplit = EvaluatedSplit.VALIDATION,
) -> Evaluation:
    """A classification evaluation with ``rows``' per-concept figures (the confusion matrix
    is left zero: no reporter reads it)."""
    names = [row[0] for row in rows]
    concepts = [
        ClassificationConcept(
            concept=name, precision=p, recall=r, f1=f1, support=support, predicted=support
        )
        for name, p, r, f1, support in rows
    ]
    section = ClassificationEvaluation(
        accuracy=accuracy,
        top5=None,
        concepts=concepts,
        confusion_matrix=[[0] * len(rows) for _ in rows],
        macro=NO_AVERAGES,
        weighted=NO_AVERAGES,
    )
    return Evaluation(
        task=Task.CLASSIFICATION,
        split=split,
        images=sum(row[4] for row in rows),
        concepts=names,
        concepts_without_ground_truth=[row[0] for row in rows if row[4] == 0],
        summary=EvaluationSummary(
            split=split,
            images=sum(row[4] for row in rows),
            indicator=Indicator.ACCURACY,
            value=accuracy,
            accuracy=accuracy,
        ),
        classification=section,
    )


def _point(f1: float | None, threshold: float) -> OperatingPoint:
    return OperatingPoint(
        precision=f1,
        recall=f1,
        f1=f1,
        threshold=threshold,
        true_positives=0,
        false_positives=0,
        false_negatives=0,
    )


def tagging(
    rows: Sequence[TaggingRow],
    map_: float | None,
    split: EvaluatedSplit = EvaluatedSplit.VALIDATION,
    images: int = 10,
) -> Evaluation:
    """A tagging evaluation with ``rows``' AP and best-threshold F1 (a concept with AP None
    has no positive: no best threshold, no curve)."""
    concepts = [
        TaggingConcept(
            concept=name,
            support=0 if ap is None else 1,
            ap=ap,
            at_half=_point(None, 0.5),
            best=None if ap is None else _point(f1, 0.5),
            curve=None,
        )
        for name, ap, f1 in rows
    ]
    section = TaggingEvaluation(
        map=map_,
        accuracy=None,
        concepts=concepts,
        macro_at_half=NO_AVERAGES,
        macro_best=NO_AVERAGES,
        micro_at_half=PrecisionRecall(precision=None, recall=None, f1=None),
        micro_best=PrecisionRecall(precision=None, recall=None, f1=None),
    )
    return Evaluation(
        task=Task.TAGGING,
        split=split,
        images=images,
        concepts=[row[0] for row in rows],
        concepts_without_ground_truth=[row[0] for row in rows if row[1] is None],
        summary=EvaluationSummary(
            split=split, images=images, indicator=Indicator.MAP, value=map_, map=map_
        ),
        tagging=section,
    )


def detection(
    rows: Sequence[DetectionRow],
    mean_optimal_lrp: float | None,
    map_: float | None,
    split: EvaluatedSplit = EvaluatedSplit.VALIDATION,
    images: int = 10,
) -> Evaluation:
    """A detection evaluation with ``rows``' oLRP, AP and AP50 (a concept with oLRP None has
    no ground truth)."""
    concepts = [
        DetectionConcept(
            concept=name,
            precision=None,
            recall=None,
            f1=None,
            support=0 if olrp is None else 1,
            detections=1,
            iou_score=None,
            optimal_lrp=None
            if olrp is None
            else Lrp(
                lrp=olrp,
                localisation=None,
                false_positive=None,
                false_negative=0.0,
                threshold=0.5,
            ),
            ap=ap,
            ap50=ap50,
            curve=None,
        )
        for name, olrp, ap, ap50 in rows
    ]
    section = DetectionEvaluation(
        mean_optimal_lrp=mean_optimal_lrp,
        mean_localisation=None,
        mean_false_positive=None,
        mean_false_negative=None,
        map=map_,
        ap50=None,
        nms_iou=0.5,
        concepts=concepts,
    )
    return Evaluation(
        task=Task.DETECTION,
        split=split,
        images=images,
        concepts=[row[0] for row in rows],
        concepts_without_ground_truth=[row[0] for row in rows if row[1] is None],
        summary=EvaluationSummary(
            split=split,
            images=images,
            indicator=Indicator.MEAN_OPTIMAL_LRP,
            value=mean_optimal_lrp,
            map=map_,
            mean_optimal_lrp=mean_optimal_lrp,
        ),
        detection=section,
    )


def status(evaluations: Sequence[Evaluation]) -> EvaluationStatus:
    """The ModelVersion's ``status.evaluation`` for ``evaluations`` (validation first)."""
    validation, *rest = evaluations
    test = rest[0] if rest else None
    return EvaluationStatus(
        indicator=validation.summary.indicator,
        value=validation.summary.value,
        validation=validation.summary,
        test=None if test is None else test.summary,
        artifacts=EvaluationArtifacts(evaluation="s3://bucket/out/evaluation.json"),
        test_artifacts=None
        if test is None
        else EvaluationArtifacts(evaluation="s3://bucket/out/test/evaluation.json"),
    )
