"""Tagging figures of an evaluation (docs/metrics.md, "Tagging"): per-concept AP, operating
points at probability 0.5 and at the F1-optimal threshold, 101-point precision-recall curves,
macro and micro averages, and the per-pair accuracy.

AP is scikit-learn's ``average_precision_score``. The operating points follow scikit-learn's
``precision_recall_curve``: one candidate threshold per distinct probability, a concept
predicted when its probability is >= the threshold; the tests check every candidate's
precision and recall against it. What scikit-learn does not define (the F1-optimal pick, COCO's
interpolated curve) is computed here.

Probabilities are ``scipy.special.expit`` of the logits in float64. It saturates: every logit
above about 36.7 becomes exactly 1.0, so such logits share one candidate threshold. That is on
purpose: the threshold is kept as a probability for serving, and a threshold that separated
two saturated logits could not be written as one; the counts reported at a threshold are
exactly those that ``probability >= threshold`` gives. AP, which needs no threshold, is read on
the logits, which do not saturate.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import expit
from sklearn.metrics import average_precision_score

from kubevision_api.evaluation import (
    RECALL_POINTS,
    Curve,
    OperatingPoint,
    PrecisionRecall,
    TaggingConcept,
    TaggingEvaluation,
)
from kubevision_trainer.evaluation import rates
from kubevision_trainer.evaluation.predictions import (
    BoolArray,
    FloatArray,
    IntArray,
    TaggingPredictions,
)

#: The fixed operating point: a concept is predicted when its probability reaches 0.5.
HALF = 0.5


def probabilities(logits: FloatArray) -> FloatArray:
    """``sigmoid(logits)`` in float64 (``scipy.special.expit``), the scores every threshold
    compares with. Same shape."""
    return np.asarray(expit(np.asarray(logits, dtype=np.float64)), dtype=np.float64)


@dataclass(frozen=True)
class Candidates:
    """Every threshold of one concept, highest first (scikit-learn's ``precision_recall_curve``
    in reverse, without its final ``(P=1, R=0)`` point, which no threshold gives).

    Attributes:
        thresholds: ``(K,)`` the distinct probabilities, decreasing.
        true_positives: ``(K,)`` positives with probability >= each threshold (non-decreasing).
        false_positives: ``(K,)`` negatives with probability >= each threshold.
    """

    thresholds: FloatArray
    true_positives: IntArray
    false_positives: IntArray


def candidates(scores: FloatArray, truth: BoolArray) -> Candidates:
    """The candidate thresholds of one concept and their counts.

    Args:
        scores: ``(N,)`` probabilities, N >= 1.
        truth: ``(N,)`` True where the image carries the concept.
    """
    order = np.argsort(-scores, kind="stable")
    ranked, hits = scores[order], truth[order]
    # The last position of each run of equal scores: a threshold takes in the whole run.
    ends = np.flatnonzero(np.append(np.diff(ranked) != 0, True))
    true_positives = np.cumsum(hits, dtype=np.int64)[ends]
    return Candidates(
        thresholds=ranked[ends],
        true_positives=true_positives,
        false_positives=(ends + 1) - true_positives,
    )


def best_index(found: Candidates, support: int) -> int:
    """Index of the F1-optimal candidate, ``F1 = 2TP / (TP + FP + support)``.

    Tie rule: among candidates of equal maximal F1, the highest threshold (the first in
    ``found``'s order), which predicts the fewest images. F1 is one correctly rounded division
    of integers per candidate, so equal fractions compare equal.

    Raises:
        ValueError: ``support`` < 1 (F1 is not defined without positives).
    """
    if support < 1:
        raise ValueError("the F1-optimal threshold needs at least one positive")
    f1 = 2 * found.true_positives / (found.true_positives + found.false_positives + support)
    return int(np.argmax(f1))


def curve(found: Candidates, support: int) -> Curve:
    """Interpolated precision at the recall levels ``r_i = i / 100``, i = 0..100 (COCO's
    101-point interpolation, cocodataset.org/#detection-eval): the highest precision of any
    candidate with recall >= r_i, 0 when none reaches r_i.

    The comparison ``TP / support >= i / 100`` is made exactly as ``100 TP >= i support``
    (COCO's float ``linspace`` can miss a level by a rounding). Candidates are distinct
    thresholds (tied scores enter together), where COCO steps one detection at a time.
    """
    precision = found.true_positives / (found.true_positives + found.false_positives)
    # Highest precision at this candidate or any later one (at least as much recall).
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    levels = np.arange(RECALL_POINTS, dtype=np.int64) * support
    first = np.searchsorted((RECALL_POINTS - 1) * found.true_positives, levels, side="left")
    reached = first < len(precision)
    values = np.where(reached, envelope[np.minimum(first, len(precision) - 1)], 0.0)
    return Curve(precision=[float(v) for v in values])


def _point(threshold: float, tp: int, fp: int, fn: int) -> OperatingPoint:
    figures = rates.precision_recall(tp, fp, fn)
    return OperatingPoint(
        threshold=threshold,
        true_positives=tp,
        false_positives=fp,
        false_negatives=fn,
        precision=figures.precision,
        recall=figures.recall,
        f1=figures.f1,
    )


def _check(concepts: list[str], logits: FloatArray, targets: BoolArray) -> None:
    if not concepts:
        raise ValueError("concepts must not be empty")
    if logits.ndim != 2 or logits.shape[1] != len(concepts):
        raise ValueError(f"logits must have shape (N, {len(concepts)}); got {logits.shape}")
    if targets.shape != logits.shape:
        raise ValueError(f"targets must have the logits' shape {logits.shape}; got {targets.shape}")
    if targets.dtype != np.bool_:
        raise ValueError(f"targets must be bool; got {targets.dtype}")
    if not np.isfinite(logits).all():
        raise ValueError("logits contain NaN or infinity")


def _micro(points: list[OperatingPoint]) -> PrecisionRecall:
    """Precision, recall and F1 of the counts pooled over ``points``."""
    return rates.precision_recall(
        sum(p.true_positives for p in points),
        sum(p.false_positives for p in points),
        sum(p.false_negatives for p in points),
    )


def evaluate(concepts: list[str], predictions: TaggingPredictions) -> TaggingEvaluation:
    """Every tagging figure of ``predictions`` (docs/metrics.md, "Tagging").

    Per concept: ``support`` = images carrying it; ``ap`` = ``average_precision_score`` on the
    float64 logits; ``at_half`` = counts and P/R/F1 at probability 0.5; ``best`` = the same at
    the F1-optimal threshold (:func:`best_index`'s tie rule); ``curve`` = :func:`curve`. A
    concept without positives has ``ap``, ``best`` and ``curve`` None and is left out of ``mAP``
    and of every macro and micro mean (its false positives at 0.5 still count in ``accuracy``).
    ``accuracy`` is the share of (image, concept) pairs where ``probability >= 0.5`` equals the
    truth. An image without any concept is an all-negative row. Zero images: every support 0,
    every mean and the accuracy None.

    Args:
        concepts: names in class-index order (C >= 1).
        predictions: ``logits`` ``(N, C)`` float, ``targets`` ``(N, C)`` bool.

    Raises:
        ValueError: shapes that disagree with ``concepts``, non-bool targets, non-finite logits.
    """
    logits = np.asarray(predictions.logits, dtype=np.float64)
    targets = predictions.targets
    _check(concepts, logits, targets)
    scores = probabilities(logits)
    predicted = scores >= HALF
    rows: list[TaggingConcept] = []
    for index, name in enumerate(concepts):
        truth, score = targets[:, index], scores[:, index]
        support = int(truth.sum())
        tp = int((predicted[:, index] & truth).sum())
        at_half = _point(HALF, tp, int(predicted[:, index].sum()) - tp, support - tp)
        ap: float | None = None
        best: OperatingPoint | None = None
        pr_curve: Curve | None = None
        if support:
            ap = float(average_precision_score(truth, logits[:, index]))
            found = candidates(score, truth)
            k = best_index(found, support)
            hits = int(found.true_positives[k])
            best = _point(
                float(found.thresholds[k]), hits, int(found.false_positives[k]), support - hits
            )
            pr_curve = curve(found, support)
        rows.append(
            TaggingConcept(
                concept=name, support=support, ap=ap, at_half=at_half, best=best, curve=pr_curve
            )
        )
    positives = [row for row in rows if row.support > 0]
    halves = [row.at_half for row in positives]
    bests = [row.best for row in positives if row.best is not None]
    aps = [row.ap for row in positives if row.ap is not None]
    return TaggingEvaluation(
        map=float(np.mean(aps)) if aps else None,
        accuracy=float((predicted == targets).mean()) if targets.size else None,
        concepts=rows,
        macro_at_half=rates.macro(halves),
        macro_best=rates.macro(bests),
        micro_at_half=_micro(halves),
        micro_best=_micro(bests),
    )
