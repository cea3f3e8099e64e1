"""Which per-concept figures of an evaluation become Prometheus series, and the cap that bounds
their label cardinality (docs/metrics.md, "Prometheus and Grafana").

Each task exports a small fixed set of figures per concept (``CONCEPT_METRICS``), named as
``evaluation.json`` names them. At most ``limit`` concepts per split are exported: the worst
ones by the per-concept counterpart of the task's first indicator (``RANKING``); the others
are counted, and their figures stay in ``evaluation.json``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from kubevision_api.evaluation import HIGHER_IS_BETTER, Evaluation, first_indicator
from kubevision_api.view import Task

#: The figures exported per concept, by task (the ``metric`` label's values):
#: classification precision, recall, F1 of the arg-max prediction; tagging AP and F1 at the
#: concept's F1-optimal threshold (``best``); detection optimal LRP (``optimalLrp.lrp``),
#: pycocotools AP@[.5:.95] and AP50.
CONCEPT_METRICS: Final[dict[Task, tuple[str, ...]]] = {
    Task.CLASSIFICATION: ("precision", "recall", "f1"),
    Task.TAGGING: ("ap", "f1"),
    Task.DETECTION: ("optimal_lrp", "ap", "ap50"),
}

#: The per-concept figure that ranks concepts for the cap: the first indicator's per-concept
#: counterpart. Accuracy is the support-weighted mean of per-concept recall; mAP the mean of
#: per-concept AP; mean optimal LRP the mean of per-concept oLRP.
RANKING: Final[dict[Task, str]] = {
    Task.CLASSIFICATION: "recall",
    Task.TAGGING: "ap",
    Task.DETECTION: "optimal_lrp",
}


@dataclass(frozen=True)
class ConceptFigures:
    """The exported figures of one concept.

    Attributes:
        concept: the concept's name.
        index: its class index (the tie-break of the ranking).
        values: figure name (one of the task's ``CONCEPT_METRICS``) -> value; figures that
            are null in ``evaluation.json`` are left out (a series never set is absent, not 0).
    """

    concept: str
    index: int
    values: dict[str, float]


@dataclass(frozen=True)
class Capped:
    """The concepts of one evaluation kept under the cap.

    Attributes:
        kept: at most ``limit`` concepts, worst first.
        omitted: concepts with figures that the cap left out.
    """

    kept: list[ConceptFigures]
    omitted: int


def concept_figures(evaluation: Evaluation) -> list[ConceptFigures]:
    """The task's ``CONCEPT_METRICS`` of every concept of ``evaluation``, in class-index order;
    concepts without any of them (typically those without ground truth) are left out.

    Raises:
        ValueError: the evaluation lacks its task's section.
    """
    rows: list[tuple[str, dict[str, float | None]]]
    if evaluation.task is Task.CLASSIFICATION and evaluation.classification is not None:
        rows = [
            (c.concept, {"precision": c.precision, "recall": c.recall, "f1": c.f1})
            for c in evaluation.classification.concepts
        ]
    elif evaluation.task is Task.TAGGING and evaluation.tagging is not None:
        rows = [
            (c.concept, {"ap": c.ap, "f1": c.best.f1 if c.best is not None else None})
            for c in evaluation.tagging.concepts
        ]
    elif evaluation.task is Task.DETECTION and evaluation.detection is not None:
        rows = [
            (
                c.concept,
                {
                    "optimal_lrp": c.optimal_lrp.lrp if c.optimal_lrp is not None else None,
                    "ap": c.ap,
                    "ap50": c.ap50,
                },
            )
            for c in evaluation.detection.concepts
        ]
    else:
        raise ValueError(f"a {evaluation.task.value} evaluation without its figures")
    figures = []
    for index, (concept, values) in enumerate(rows):
        kept = {name: value for name, value in values.items() if value is not None}
        if kept:
            figures.append(ConceptFigures(concept, index, kept))
    return figures


def worst(evaluation: Evaluation, limit: int) -> Capped:
    """At most ``limit`` concepts of ``evaluation``: those with a ranking figure
    (``RANKING``) first, worst first (lowest AP or recall, highest oLRP; ties by class index),
    then those without one in class-index order.

    Raises:
        ValueError: ``limit`` is negative, or the evaluation lacks its task's section.
    """
    if limit < 0:
        raise ValueError(f"the concept limit must not be negative, got {limit}")
    figures = concept_figures(evaluation)
    ranking = RANKING[evaluation.task]
    # Worst first: ascending where higher is better, descending for oLRP (an error).
    sign = 1.0 if HIGHER_IS_BETTER[first_indicator(evaluation.task)] else -1.0

    def key(figure: ConceptFigures) -> tuple[bool, float, int]:
        value = figure.values.get(ranking)
        if value is None:
            return (True, 0.0, figure.index)
        return (False, sign * value, figure.index)

    ordered = sorted(figures, key=key)
    return Capped(kept=ordered[:limit], omitted=max(0, len(ordered) - limit))
