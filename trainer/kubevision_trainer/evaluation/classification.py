"""Classification figures of an evaluation (docs/metrics.md, "Classification"): top-1 and top-5
accuracy, per-concept precision, recall, F1, support and predicted count, the confusion matrix,
macro and weighted averages.

Definitions are scikit-learn's ``classification_report``: the confusion matrix and top-5
accuracy come from ``sklearn.metrics``; precision, recall and F1 are read off the matrix's
diagonal, row sums (support) and column sums (predicted) with the null rules of
``evaluation.json`` (:mod:`.rates`).
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import confusion_matrix, top_k_accuracy_score

from kubevision_api.evaluation import (
    ClassificationConcept,
    ClassificationEvaluation,
)
from kubevision_trainer.evaluation import rates
from kubevision_trainer.evaluation.predictions import (
    ClassificationPredictions,
    FloatArray,
    IntArray,
)

#: k of the top-k accuracy the evaluation reports; undefined with fewer concepts.
TOP_K = 5


def _check(concepts: list[str], predictions: ClassificationPredictions) -> None:
    logits, labels = predictions.logits, predictions.labels
    classes = len(concepts)
    if classes < 1:
        raise ValueError("concepts must not be empty")
    if logits.ndim != 2 or logits.shape[1] != classes:
        raise ValueError(f"logits must have shape (N, {classes}); got {logits.shape}")
    if labels.shape != (logits.shape[0],):
        raise ValueError(f"labels must have shape ({logits.shape[0]},); got {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be integers; got {labels.dtype}")
    if labels.size and (labels.min() < 0 or labels.max() >= classes):
        raise ValueError(f"labels must lie in 0..{classes - 1}")
    if not np.isfinite(logits).all():
        raise ValueError("logits contain NaN or infinity")


def _top_k(labels: IntArray, logits: FloatArray, classes: int) -> float | None:
    """Share of images whose label is among the ``TOP_K`` highest logits
    (``sklearn.metrics.top_k_accuracy_score``); None with fewer than ``TOP_K`` concepts or
    no image.

    Ties at the k-th place go to the lowest class index, as top-1's arg-max does, so an image
    right at top-1 is always right at top-5. scikit-learn sorts stably and reverses, which sends
    ties to the highest index; it is therefore given the columns in reverse order (class ``j``
    as ``C-1-j``), which changes nothing but the ties.
    """
    if classes < TOP_K or not labels.size:
        return None
    if classes == TOP_K:
        # Every label is among the 5 of 5; scikit-learn says so with a warning.
        return 1.0
    reversed_labels = classes - 1 - labels
    return float(
        top_k_accuracy_score(reversed_labels, logits[:, ::-1], k=TOP_K, labels=np.arange(classes))
    )


def evaluate(
    concepts: list[str], predictions: ClassificationPredictions
) -> ClassificationEvaluation:
    """Every classification figure of ``predictions`` (docs/metrics.md, "Classification").

    The predicted class is the arg-max of the logits, ties to the lowest index (like
    ``torch.argmax`` and ``np.argmax``); top-5 is :func:`_top_k`'s. Per concept: ``support`` =
    images of that label (confusion-matrix row sum), ``predicted`` = images predicted as it
    (column sum), ``P = TP / predicted`` (None when 0), ``R = TP / support`` (None when 0),
    ``F1 = 2TP / (support + predicted)`` (0 when P + R = 0 or never predicted, None without
    support). Macro averages are unweighted means over the concepts with support > 0,
    weighted averages are means weighted by support; both leave a None out. Zero images:
    accuracy and top-5 None,
    a zero matrix, every support 0.

    Args:
        concepts: names in class-index order (C >= 1).
        predictions: ``logits`` ``(N, C)``, ``labels`` ``(N,)`` in ``0..C-1``.

    Raises:
        ValueError: shapes that disagree with ``concepts``, labels out of range, non-finite
            logits.
    """
    _check(concepts, predictions)
    classes = len(concepts)
    logits = np.asarray(predictions.logits, dtype=np.float64)
    labels = predictions.labels.astype(np.int64)
    predicted = logits.argmax(axis=1)
    everyone = np.arange(classes)
    if labels.size:
        matrix = confusion_matrix(labels, predicted, labels=everyone)
    else:
        # scikit-learn refuses empty inputs; no image makes every count 0.
        matrix = np.zeros((classes, classes), dtype=np.int64)
    supports = [int(s) for s in matrix.sum(axis=1)]
    counts = [int(s) for s in matrix.sum(axis=0)]
    rows: list[ClassificationConcept] = []
    for index, name in enumerate(concepts):
        hits = int(matrix[index, index])
        point = rates.precision_recall(hits, counts[index] - hits, supports[index] - hits)
        rows.append(
            ClassificationConcept(
                concept=name,
                support=supports[index],
                predicted=counts[index],
                precision=point.precision,
                recall=point.recall,
                f1=point.f1,
            )
        )
    with_truth = [row for row in rows if row.support > 0]
    return ClassificationEvaluation(
        accuracy=float(np.trace(matrix)) / labels.size if labels.size else None,
        top5=_top_k(labels, logits, classes),
        concepts=rows,
        confusion_matrix=[[int(v) for v in row] for row in matrix],
        macro=rates.macro(with_truth),
        weighted=rates.weighted(with_truth, [row.support for row in with_truth]),
    )
