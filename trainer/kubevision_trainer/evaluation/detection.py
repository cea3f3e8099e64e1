"""Detection figures of an evaluation (docs/metrics.md, "Detection").

One pycocotools COCOeval run (:mod:`.coco`) gives the COCO summary, the per-concept AP and
AP50, the precision-recall curves at IoU 0.5 and its greedy matching at IoU 0.5, from which
:mod:`.lrp` computes each concept's optimal LRP and the operating point kept for serving.
Nothing is matched twice, so the whole costs little more than COCOeval alone
(``benchmarks/evaluation.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from kubevision_api.evaluation import (
    Curve,
    DetectionConcept,
    DetectionEvaluation,
    PrecisionRecall,
)
from kubevision_trainer.evaluation import coco, lrp, rates
from kubevision_trainer.evaluation.predictions import DetectionPredictions


def _mean(values: Sequence[float | None]) -> float | None:
    """Mean of the defined values; None when none is."""
    kept = [v for v in values if v is not None]
    return float(np.mean(kept)) if kept else None


def _check(concepts: list[str], predictions: DetectionPredictions) -> None:
    """Raises ValueError on shapes that disagree or labels outside ``1..C``."""
    if not concepts:
        raise ValueError("concepts must not be empty")
    count = len(concepts)
    for index, image in enumerate(predictions.images, start=1):
        gt, dt = len(image.gt_boxes), len(image.dt_boxes)
        if (
            image.gt_boxes.shape != (gt, 4)
            or image.dt_boxes.shape != (dt, 4)
            or image.gt_labels.shape != (gt,)
            or image.dt_labels.shape != (dt,)
            or image.dt_scores.shape != (dt,)
        ):
            raise ValueError(f"image {index}: boxes (K, 4), labels and scores (K,) disagree")
        labels = np.concatenate((image.gt_labels, image.dt_labels))
        if len(labels) and (labels.min() < 1 or labels.max() > count):
            raise ValueError(f"image {index}: labels must lie in 1..{count}")


def _counts(labels: list[np.ndarray[Any, Any]], count: int) -> list[int]:
    """How many of ``labels`` (arrays of labels 1..count) are each label."""
    joined = np.concatenate(labels) if labels else np.zeros(0, dtype=np.int64)
    return [int(n) for n in np.bincount(joined, minlength=count + 1)[1:]]


def _concept(
    name: str, index: int, support: int, detections: int, figures: coco.CocoFigures
) -> DetectionConcept:
    """One concept's figures; precision, recall, F1 (``rates.precision_recall``) and IoU score
    at its LRP-optimal threshold (all None without ground truth: there is no such threshold).
    Where the optimum keeps no detection, precision is None, recall and F1 are 0."""
    best = lrp.optimal_lrp(figures.matches[index])
    point = PrecisionRecall(precision=None, recall=None, f1=None)
    iou_score = None
    if best is not None:
        point = rates.precision_recall(
            best.true_positives, best.false_positives, best.false_negatives
        )
        iou_score = best.iou_sum / best.true_positives if best.true_positives else None
    curve = figures.curves[index]
    return DetectionConcept(
        concept=name,
        precision=point.precision,
        recall=point.recall,
        f1=point.f1,
        support=support,
        detections=detections,
        iou_score=iou_score,
        optimal_lrp=best.lrp if best is not None else None,
        ap=figures.ap[index],
        ap50=figures.ap50_per_category[index],
        curve=Curve(precision=curve) if curve is not None else None,
    )


def evaluate(concepts: list[str], predictions: DetectionPredictions) -> DetectionEvaluation:
    """Every detection figure of ``predictions`` (docs/metrics.md, "Detection").

    Args:
        concepts: names in label order (label k is ``concepts[k - 1]``), C >= 1.
        predictions: per image, ground truth and detections, labels in ``1..C``.

    Raises:
        ValueError: no concept, shapes that disagree, or labels outside ``1..C``.

    The means follow vernier's ``LrpReport``: optimal LRP and the FN part over the concepts
    with ground truth (a concept that keeps no detection counts with 1.0 and 1.0); the
    localisation and FP parts over the concepts where they are defined (a true positive at
    the optimal threshold). A mean over no concept is None.
    """
    _check(concepts, predictions)
    figures = coco.evaluate(predictions, len(concepts))
    supports = _counts([im.gt_labels for im in predictions.images], len(concepts))
    detections = _counts([im.dt_labels for im in predictions.images], len(concepts))
    rows = [
        _concept(name, k, supports[k], detections[k], figures) for k, name in enumerate(concepts)
    ]
    optimal = [r.optimal_lrp for r in rows if r.optimal_lrp is not None]
    return DetectionEvaluation(
        mean_optimal_lrp=_mean([o.lrp for o in optimal]),
        mean_localisation=_mean([o.localisation for o in optimal]),
        mean_false_positive=_mean([o.false_positive for o in optimal]),
        mean_false_negative=_mean([o.false_negative for o in optimal]),
        map=figures.map,
        ap50=figures.ap50,
        nms_iou=predictions.nms_iou,
        concepts=rows,
    )
