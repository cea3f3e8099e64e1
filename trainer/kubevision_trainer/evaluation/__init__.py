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
    ClassificationEvaluation,
    DetectionEvaluation,
    EvaluatedSplit,
    Evaluation,
    EvaluationSummary,
    TaggingEvaluation,
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
    # Per task: the figures, the images scored and the summary's headline numbers.
    figures: ClassificationEvaluation | TaggingEvaluation | DetectionEvaluation
    if task is Task.CLASSIFICATION and isinstance(predictions, ClassificationPredictions):
        figures = classification.evaluate(names, predictions)
        images = len(predictions.labels)
        headline = {"accuracy": figures.accuracy}
        value = figures.accuracy
    elif task is Task.TAGGING and isinstance(predictions, TaggingPredictions):
        figures = tagging.evaluate(names, predictions)
        images = len(predictions.targets)
        headline = {"accuracy": figures.accuracy, "map": figures.map}
        value = figures.map
    elif task is Task.DETECTION and isinstance(predictions, DetectionPredictions):
        figures = detection.evaluate(names, predictions)
        images = len(predictions.images)
        headline = {"map": figures.map, "mean_optimal_lrp": figures.mean_optimal_lrp}
        value = figures.mean_optimal_lrp
    else:
        raise ValueError(f"{type(predictions).__name__} are not predictions of a {task.value} View")
    summary = EvaluationSummary(
        split=split, images=images, indicator=first_indicator(task), value=value, **headline
    )
    return Evaluation(
        task=task,
        split=split,
        images=images,
        model_version=model_version,
        best_epoch=best_epoch,
        concepts=names,
        concepts_without_ground_truth=[c.concept for c in figures.concepts if c.support == 0],
        summary=summary,
        **{task.value: figures},
    )
