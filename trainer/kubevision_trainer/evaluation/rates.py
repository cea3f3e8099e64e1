"""Precision, recall and F1 from counts, and their means, with the null rules of
``evaluation.json`` (docs/metrics.md): a ratio whose denominator is 0 is ``None``, never 0 or 1,
and a mean leaves ``None`` out.
"""

from __future__ import annotations

from collections.abc import Sequence

from kubevision_api.evaluation import Averages, PrecisionRecall


def precision_recall(
    true_positives: int, false_positives: int, false_negatives: int
) -> PrecisionRecall:
    """Precision, recall and F1 of one operating point.

    ``P = TP / (TP + FP)`` (None without prediction), ``R = TP / (TP + FN)`` (None without
    ground truth), ``F1 = 2TP / (2TP + FP + FN)`` (= 2PR / (P + R) where both are defined;
    scikit-learn's formula since 1.3): None only without ground truth, and 0 for a concept with
    ground truth that was never predicted (its precision is None, but missing every object is
    a failure, not missing data: a mean of F1 must count it).
    Each is one correctly rounded division of integers, so equal fractions give equal floats
    (the F1-optimal threshold's tie rule depends on it).

    Raises:
        ValueError: a negative count.
    """
    if min(true_positives, false_positives, false_negatives) < 0:
        raise ValueError(
            f"counts must be >= 0; got TP={true_positives} FP={false_positives} "
            f"FN={false_negatives}"
        )
    predicted = true_positives + false_positives
    relevant = true_positives + false_negatives
    precision = true_positives / predicted if predicted else None
    recall = true_positives / relevant if relevant else None
    f1 = 2 * true_positives / (predicted + relevant) if relevant else None
    return PrecisionRecall(precision=precision, recall=recall, f1=f1)


def _mean(values: Sequence[float | None], weights: Sequence[int]) -> float | None:
    """Weighted mean of the defined values; None when no value (or no weight) is left."""
    pairs = [(v, w) for v, w in zip(values, weights, strict=True) if v is not None]
    total = sum(w for _, w in pairs)
    if not total:
        return None
    return sum(v * w for v, w in pairs) / total


def macro(points: Sequence[PrecisionRecall]) -> Averages:
    """Unweighted means of ``points``' precision, recall and F1, each over the points where it
    is defined. The caller passes only the concepts with ground truth."""
    ones = [1] * len(points)
    return Averages(
        precision=_mean([p.precision for p in points], ones),
        recall=_mean([p.recall for p in points], ones),
        f1=_mean([p.f1 for p in points], ones),
    )


def weighted(points: Sequence[PrecisionRecall], supports: Sequence[int]) -> Averages:
    """Means of ``points``' figures weighted by ``supports`` (scikit-learn's ``weighted``
    average), each over the points where it is defined: ``sum(s_i x_i) / sum(s_i)`` over those
    points. Points of support 0 weigh nothing."""
    return Averages(
        precision=_mean([p.precision for p in points], supports),
        recall=_mean([p.recall for p in points], supports),
        f1=_mean([p.f1 for p in points], supports),
    )
