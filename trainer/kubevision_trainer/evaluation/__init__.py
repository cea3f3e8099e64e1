"""Evaluation of a trained model (docs/metrics.md): every number of ``evaluation.json``
(``kubevision_api.evaluation``) from a model's predictions on a set of images.

One module per task computes its figures from :mod:`.predictions`; :func:`evaluate` picks the
task's and fills the summary. Average precision and COCO's AP come from kept libraries
(scikit-learn, pycocotools); what they do not offer (per-concept operating points, LRP) is
computed here from the papers' definitions, and tests compare it with scikit-learn and vernier.
"""

from __future__ import annotations

from collections.abc import Sequence

from kubevision_api.evaluation import (
    EvaluatedSplit,
    Evaluation,
    EvaluationSummary,
    first_indicator,
)
from kubevision_api.view import Task
from kubevision_trainer.evaluation import classification, detection, tagging
from kubevision_trainer.evaluation.predictions import (
    ClassificationPredictions,
    DetectionPredictions,
    Predictions,
    TaggingPredictions,
)


def evaluate(
    task: Task,
    concepts: Sequence[str],
    predictions: Predictions,
    *,
    split: EvaluatedSplit,
    model_version: str | None = None,
    best_epoch: int | None = None,
) -> Evaluation:
    """Every figure of ``evaluation.json`` for ``predictions``.

    Args:
        task: the View's task; ``predictions`` must be of its kind.
        concepts: concept names in class-index order (C of them).
        split: which images the predictions are of.
        model_version: ``namespace/name``, recorded.
        best_epoch: the scored checkpoint's epoch, recorded.

    Raises:
        ValueError: predictions of another task, or shapes that disagree with ``concepts``.
    """
    names = list(concepts)
    if task is Task.CLASSIFICATION and isinstance(predictions, ClassificationPredictions):
        figures = classification.evaluate(names, predictions)
        summary = EvaluationSummary(
            split=split,
            images=len(predictions.labels),
            indicator=first_indicator(task),
            value=figures.accuracy,
            accuracy=figures.accuracy,
        )
        without = [c.concept for c in figures.concepts if c.support == 0]
        return Evaluation(
            task=task,
            split=split,
            images=summary.images,
            model_version=model_version,
            best_epoch=best_epoch,
            concepts=names,
            concepts_without_ground_truth=without,
            summary=summary,
            classification=figures,
        )
    if task is Task.TAGGING and isinstance(predictions, TaggingPredictions):
        tags = tagging.evaluate(names, predictions)
        summary = EvaluationSummary(
            split=split,
            images=len(predictions.targets),
            indicator=first_indicator(task),
            value=tags.map,
            accuracy=tags.accuracy,
            map=tags.map,
        )
        without = [c.concept for c in tags.concepts if c.support == 0]
        return Evaluation(
            task=task,
            split=split,
            images=summary.images,
            model_version=model_version,
            best_epoch=best_epoch,
            concepts=names,
            concepts_without_ground_truth=without,
            summary=summary,
            tagging=tags,
        )
    if task is Task.DETECTION and isinstance(predictions, DetectionPredictions):
        boxes = detection.evaluate(names, predictions)
        summary = EvaluationSummary(
            split=split,
            images=len(predictions.images),
            indicator=first_indicator(task),
            value=boxes.mean_optimal_lrp,
            map=boxes.map,
            mean_optimal_lrp=boxes.mean_optimal_lrp,
        )
        without = [c.concept for c in boxes.concepts if c.support == 0]
        return Evaluation(
            task=task,
            split=split,
            images=summary.images,
            model_version=model_version,
            best_epoch=best_epoch,
            concepts=names,
            concepts_without_ground_truth=without,
            summary=summary,
            detection=boxes,
        )
    raise ValueError(f"{type(predictions).__name__} are not predictions of a {task.value} View")
