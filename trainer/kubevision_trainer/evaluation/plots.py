"""The evaluation's figures as PNG bytes (docs/metrics.md, "Artifacts"): the confusion matrix
of a classification, the precision-recall curves of tagging and detection. Drawn with
matplotlib's object API (the Agg canvas), which touches no pyplot state and needs no display.

Both stay legible with many concepts: the matrix shows at most ``MATRIX_CONCEPTS`` concepts,
the curves panel at most ``CURVES`` curves; ``evaluation.json`` always holds every value."""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure

from kubevision_api.evaluation import RECALL_POINTS, ClassificationEvaluation, Evaluation
from kubevision_api.view import Task

#: Most concepts the confusion matrix draws; above, the most confused ones (:func:`confused`).
MATRIX_CONCEPTS: Final = 30
#: Most curves the precision-recall panel draws; above, the best and the worst halves.
CURVES: Final = 20


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90)
    return buffer.getvalue()


def confused(matrix: Sequence[Sequence[int]], keep: int = MATRIX_CONCEPTS) -> list[int]:
    """The indices of the ``keep`` concepts most involved in confusions, in index order: the
    largest sums of their row and column off the diagonal (images of the concept predicted as
    another, and of another predicted as it), ties to the lower index. Every index when there
    are ``keep`` or fewer."""
    counts = np.asarray(matrix, dtype=np.int64)
    size = len(counts)
    if size <= keep:
        return list(range(size))
    off = counts - np.diag(np.diag(counts))
    involvement = off.sum(axis=1) + off.sum(axis=0)
    # A stable sort on the negated values keeps ties in index order.
    chosen = np.argsort(-involvement, kind="stable")[:keep]
    return sorted(int(i) for i in chosen)


def confusion_matrix(
    figures: ClassificationEvaluation, concepts: Sequence[str], title: str
) -> bytes:
    """The confusion matrix as a PNG: rows true concepts, columns predicted, each cell's count
    written in it and coloured by its share of the row (the row's recall on the diagonal).
    Above ``MATRIX_CONCEPTS`` concepts, only the rows and columns of the most confused ones
    (:func:`confused`), said in the title, and a last column ``(others)`` counting the images
    of each row predicted as a concept not shown, so that every row still sums to its
    support."""
    full = np.asarray(figures.confusion_matrix, dtype=np.int64)
    shown = confused(figures.confusion_matrix)
    counts = full[np.ix_(shown, shown)]
    totals = full.sum(axis=1)[shown]
    columns = [concepts[i] for i in shown]
    if len(shown) < len(concepts):
        counts = np.concatenate([counts, (totals - counts.sum(axis=1))[:, None]], axis=1)
        columns.append("(others)")
    shares = counts / np.maximum(totals, 1)[:, None]
    side = max(4.5, 0.38 * len(shown) + 2.5)
    figure = Figure(figsize=(side + 1.2, side))
    axis = figure.subplots()
    image = axis.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    figure.colorbar(image, ax=axis, fraction=0.046, pad=0.04, label="share of the true concept")
    font = 8 if len(shown) <= 12 else 6
    for row, column in zip(*np.nonzero(counts), strict=True):
        axis.text(
            column,
            row,
            str(counts[row, column]),
            ha="center",
            va="center",
            fontsize=font,
            color="white" if shares[row, column] > 0.5 else "black",
        )
    axis.set_xticks(range(len(columns)), columns, rotation=90, fontsize=font + 1)
    axis.set_yticks(range(len(shown)), [concepts[i] for i in shown], fontsize=font + 1)
    axis.set_xlabel("predicted concept")
    axis.set_ylabel("true concept")
    more = len(concepts) > len(shown)
    caption = f"{len(shown)} most confused of {len(concepts)} concepts" if more else "confusion"
    axis.set_title(f"{title}\n{caption}, accuracy {_number(figures.accuracy)}", fontsize=10)
    figure.tight_layout()
    return _png(figure)


@dataclass(frozen=True)
class _Curve:
    name: str
    precision: list[float]
    #: The 101-point interpolated AP of the curve (the mean of its precisions), for ranking.
    area: float


def _curves(evaluation: Evaluation) -> list[_Curve]:
    if evaluation.tagging is not None:
        pairs = [(c.concept, c.curve) for c in evaluation.tagging.concepts]
    elif evaluation.detection is not None:
        pairs = [(c.concept, c.curve) for c in evaluation.detection.concepts]
    else:
        raise ValueError(f"a {evaluation.task.value} evaluation has no precision-recall curves")
    return [
        _Curve(name, curve.precision, float(np.mean(curve.precision)))
        for name, curve in pairs
        if curve is not None
    ]


def drawn_curves(curves: Sequence[_Curve], keep: int = CURVES) -> list[_Curve]:
    """The curves drawn: all of them up to ``keep``; above, the ``keep // 2`` of largest area
    and the ``keep - keep // 2`` of smallest (ties to the concept's order), best first."""
    ranked = sorted(curves, key=lambda c: -c.area)
    if len(ranked) <= keep:
        return ranked
    best = keep // 2
    return ranked[:best] + ranked[len(ranked) - (keep - best) :]


def pr_curves(evaluation: Evaluation, title: str) -> bytes:
    """The precision-recall curves as a PNG: one line per concept at the ``RECALL_POINTS``
    recall levels (at IoU 0.5 for detection), labelled with its 101-point AP, and the mean
    curve over every concept with a curve, dashed. Above ``CURVES`` concepts, the best and
    the worst halves (:func:`drawn_curves`), said in the title; concepts without a curve (no
    ground truth) are not drawn."""
    curves = _curves(evaluation)
    drawn = drawn_curves(curves)
    recall = np.linspace(0.0, 1.0, RECALL_POINTS)
    figure = Figure(figsize=(8.5, 5.5))
    axis = figure.subplots()
    # tab20: up to CURVES lines, each its own colour.
    palette = colormaps["tab20"]
    for index, curve in enumerate(drawn):
        axis.plot(
            recall,
            curve.precision,
            color=palette(index % palette.N),
            linewidth=1.2,
            label=f"{curve.name} ({curve.area:.3f})",
        )
    if curves:
        mean = np.mean([c.precision for c in curves], axis=0)
        axis.plot(
            recall,
            mean,
            color="black",
            linestyle="--",
            linewidth=2,
            label=f"mean of {len(curves)} ({float(np.mean(mean)):.3f})",
        )
        axis.legend(loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=7, frameon=False)
    else:
        axis.text(0.5, 0.5, "no concept has ground truth", ha="center", va="center")
    axis.set_xlim(0.0, 1.0)
    axis.set_ylim(0.0, 1.02)
    axis.set_xlabel("recall")
    axis.set_ylabel("precision (interpolated)")
    axis.grid(alpha=0.3)
    where = " at IoU 0.5" if evaluation.task is Task.DETECTION else ""
    shown = (
        f"{len(drawn)} of {len(curves)} curves: the best and the worst"
        if len(drawn) < len(curves)
        else f"{len(curves)} concepts"
    )
    axis.set_title(f"{title}\nprecision-recall{where}, {shown}", fontsize=10)
    figure.tight_layout()
    return _png(figure)


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"
