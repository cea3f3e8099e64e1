"""The evaluation of a trained ModelVersion (docs/metrics.md): the schema of
``evaluation.json`` (``SCHEMA_VERSION``), written under the output URI by every training and by
``kubevision evaluate``, and the summary the ModelVersion's status shows.

The numbers are computed by the trainer (``kubevision_trainer.evaluation``); this module holds
only their shape, so that the trainer, the operator and the CLI read one definition. A value that
cannot be defined (a precision without any prediction, an AP without any positive) is ``None``
(``null`` in JSON), never 0 or 1. Concepts without ground truth in the evaluated set are listed
in ``conceptsWithoutGroundTruth`` and left out of every mean.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final, Literal

from pydantic import Field

from kubevision_api.meta import ApiModel
from kubevision_api.view import Task

#: ``evaluation.json``'s ``schemaVersion``; a change that removes or retypes a field bumps it.
SCHEMA_VERSION: Final = "kubevision.dev/evaluation/v1"

#: Artifact names under an evaluation's output folder (the output URI for the validation split,
#: ``<output>/test/`` for the test split).
EVALUATION_JSON: Final = "evaluation.json"
CONFUSION_MATRIX_PNG: Final = "confusion_matrix.png"
PR_CURVES_PNG: Final = "pr_curves.png"
#: Training curves; written once per run, at the output URI's root.
REPORT_PNG: Final = "report.png"
#: Folder of the test split's artifacts under the output URI.
TEST_FOLDER: Final = "test"

#: Recall levels at which evaluation.json keeps a precision-recall curve: 0, 0.01, ..., 1, the
#: 101 points of COCO's interpolated precision (cocodataset.org/#detection-eval).
RECALL_POINTS: Final = 101


class EvaluatedSplit(StrEnum):
    """Which images were scored."""

    VALIDATION = "validation"
    TEST = "test"
    #: ``kubevision evaluate`` on a dataset of its own (every image of the View it is given).
    DATASET = "dataset"


class Indicator(StrEnum):
    """The task's first indicator: the number the status, the models library and
    ``kubectl get`` show (docs/metrics.md)."""

    ACCURACY = "accuracy"
    MAP = "mAP"
    MEAN_OPTIMAL_LRP = "meanOptimalLRP"


#: Whether a larger value of an indicator is better (oLRP is an error: lower is better).
HIGHER_IS_BETTER: Final[dict[Indicator, bool]] = {
    Indicator.ACCURACY: True,
    Indicator.MAP: True,
    Indicator.MEAN_OPTIMAL_LRP: False,
}


def first_indicator(task: Task) -> Indicator:
    """The first indicator of ``task``: classification accuracy, tagging mAP, detection mean
    optimal LRP (the product's Models Library shows mean LRP first for detection)."""
    return {
        Task.CLASSIFICATION: Indicator.ACCURACY,
        Task.TAGGING: Indicator.MAP,
        Task.DETECTION: Indicator.MEAN_OPTIMAL_LRP,
    }[task]


class PrecisionRecall(ApiModel):
    """Precision, recall and F1 of one operating point (counts in the task's unit: images for
    classification, (image, concept) pairs for tagging, boxes for detection)."""

    precision: float | None = Field(description="TP / (TP + FP); null without prediction.")
    recall: float | None = Field(description="TP / (TP + FN); null without ground truth.")
    f1: float | None = Field(
        description="2TP / (2TP + FP + FN) (= 2PR / (P + R)); 0 when never predicted; null "
        "without ground truth."
    )


class Averages(ApiModel):
    """Means of per-concept figures over the concepts with ground truth."""

    precision: float | None = Field(description="Mean precision (nulls left out).")
    recall: float | None = Field(description="Mean recall.")
    f1: float | None = Field(description="Mean F1 (nulls left out).")


class Curve(ApiModel):
    """A precision-recall curve at the ``RECALL_POINTS`` recall levels 0, 0.01, ..., 1:
    ``precision[i]`` is the highest precision at any recall >= i/100, 0 past the highest recall
    reached (COCO's interpolation)."""

    precision: list[float] = Field(min_length=RECALL_POINTS, max_length=RECALL_POINTS)


# --- classification -----------------------------------------------------------------------


class ClassificationConcept(PrecisionRecall):
    """One concept of a classification View: predicted = the arg-max class."""

    concept: str
    support: int = Field(ge=0, description="Images whose label is this concept.")
    predicted: int = Field(ge=0, description="Images predicted as this concept.")


class ClassificationEvaluation(ApiModel):
    """Classification figures (scikit-learn's ``classification_report`` definitions)."""

    accuracy: float | None = Field(description="Top-1: share of images predicted right.")
    top5: float | None = Field(
        description="Share of images whose label is among the 5 highest scores; null with "
        "fewer than 5 concepts."
    )
    concepts: list[ClassificationConcept] = Field(description="Index order.")
    confusion_matrix: list[list[int]] = Field(
        description="Counts; row = true concept, column = predicted concept, index order."
    )
    macro: Averages = Field(description="Unweighted means over concepts with support > 0.")
    weighted: Averages = Field(description="Means weighted by support.")


# --- tagging ------------------------------------------------------------------------------


class OperatingPoint(PrecisionRecall):
    """Figures at one score threshold: a concept is predicted when its probability
    (sigmoid of the logit) is >= ``threshold``."""

    threshold: float = Field(description="Probability threshold in [0, 1].")
    true_positives: int = Field(ge=0)
    false_positives: int = Field(ge=0)
    false_negatives: int = Field(ge=0)


class TaggingConcept(ApiModel):
    """One concept of a tagging View."""

    concept: str
    support: int = Field(ge=0, description="Images tagged with this concept.")
    ap: float | None = Field(
        description="Average precision, scikit-learn's average_precision_score (null without "
        "positive)."
    )
    at_half: OperatingPoint = Field(description="At probability 0.5.")
    best: OperatingPoint | None = Field(
        description="At the F1-optimal threshold (kept for serving); null without positive."
    )
    curve: Curve | None = Field(description="Precision-recall curve; null without positive.")


class TaggingEvaluation(ApiModel):
    """Tagging figures."""

    map: float | None = Field(alias="mAP", description="Macro mean of per-concept AP.")
    accuracy: float | None = Field(description="Per (image, concept) pair at 0.5.")
    concepts: list[TaggingConcept] = Field(description="Index order.")
    macro_at_half: Averages = Field(description="Macro means at 0.5.")
    macro_best: Averages = Field(description="Macro means at each concept's best threshold.")
    micro_at_half: PrecisionRecall = Field(description="Pooled counts at 0.5.")
    micro_best: PrecisionRecall = Field(description="Pooled counts at the best thresholds.")


# --- detection ----------------------------------------------------------------------------


class Lrp(ApiModel):
    """Localisation Recall Precision at one score threshold (Oksuz et al., ECCV 2018; TPAMI
    2022): ``LRP = (sum over TP of (1 - IoU) / (1 - tau) + FP + FN) / (TP + FP + FN)``, tau = 0.5,
    in [0, 1], lower is better. Counts are of the detections with score >= ``threshold``; the
    components are vernier's (``vernier.instance.optimal_lrp``), and
    ``LRP = (TP * localisation + FP + FN) / (TP + FP + FN)``."""

    lrp: float = Field(ge=0, le=1)
    localisation: float | None = Field(
        description="Mean (1 - IoU) / (1 - tau) over the true positives, in [0, 1]; null "
        "without TP."
    )
    false_positive: float | None = Field(
        description="FP / (TP + FP) = 1 - precision; null without any detection kept."
    )
    false_negative: float = Field(description="FN / (TP + FN) = 1 - recall.")
    threshold: float | None = Field(
        description="Score threshold: detections with score >= it count. For optimal LRP, the "
        "largest of the thresholds that minimise LRP (searched exactly, over every detection "
        "score); null when none does better than keeping no detection (optimal LRP 1.0)."
    )


class DetectionConcept(PrecisionRecall):
    """One concept of a detection View. A true positive is a detection matched, greedily in
    score order (per image, the best-IoU annotated box of the concept still unmatched), with
    IoU >= 0.5: pycocotools' COCOeval matching at its IoU 0.5, which vernier follows too (the
    product page says "> 0.5"; the two differ only for an IoU of exactly 0.5). Precision,
    recall, F1 and IoU score are read at the LRP-optimal threshold (the one kept for serving);
    they are null for a concept without ground truth, which has none."""

    concept: str
    support: int = Field(ge=0, description="Annotated boxes of this concept.")
    detections: int = Field(ge=0, description="Detections of this concept (every score).")
    iou_score: float | None = Field(description="Mean IoU of the true positives.")
    optimal_lrp: Lrp | None = Field(description="oLRP and its components; null without GT.")
    ap: float | None = Field(description="pycocotools AP@[.5:.95] of this category.")
    ap50: float | None = Field(description="pycocotools AP at IoU 0.5 of this category.")
    curve: Curve | None = Field(description="Precision-recall curve at IoU 0.5.")


class DetectionEvaluation(ApiModel):
    """Detection figures."""

    mean_optimal_lrp: float | None = Field(
        alias="meanOptimalLRP", description="Mean oLRP over concepts with ground truth."
    )
    mean_localisation: float | None = Field(description="Mean oLRP localisation component.")
    mean_false_positive: float | None = Field(description="Mean oLRP FP component.")
    mean_false_negative: float | None = Field(description="Mean oLRP FN component.")
    map: float | None = Field(alias="mAP", description="pycocotools AP@[.5:.95] (stats[0]).")
    ap50: float | None = Field(description="pycocotools AP50 (stats[1]).")
    nms_iou: float | None = Field(description="The detector's NMS IoU threshold.")
    concepts: list[DetectionConcept] = Field(description="Index order.")


# --- the file and the status summary ------------------------------------------------------


class EvaluationSummary(ApiModel):
    """The evaluation's headline numbers (the ModelVersion's ``status.evaluation``)."""

    split: EvaluatedSplit = Field(description="Which images were scored.")
    images: int = Field(ge=0, description="Images scored.")
    indicator: Indicator = Field(description="The task's first indicator (docs/metrics.md).")
    # The default makes the field optional in the CRD: a null is pruned there, so a required
    # one would refuse the status of an evaluation whose indicator is undefined.
    value: float | None = Field(default=None, description="Value of the first indicator.")
    accuracy: float | None = Field(
        default=None,
        description="Classification: top-1 accuracy; tagging: per (image, concept) pair at 0.5.",
    )
    map: float | None = Field(
        default=None, alias="mAP", description="Tagging macro mAP; detection COCO mAP@[.5:.95]."
    )
    mean_optimal_lrp: float | None = Field(
        default=None, alias="meanOptimalLRP", description="Detection: mean optimal LRP."
    )


class EvaluationArtifacts(ApiModel):
    """URIs of the evaluation's files."""

    evaluation: str = Field(description="evaluation.json.")
    confusion_matrix: str | None = Field(default=None, description="confusion_matrix.png.")
    pr_curves: str | None = Field(default=None, description="pr_curves.png.")
    report: str | None = Field(default=None, description="report.png (training curves).")


class EvaluationStatus(ApiModel):
    """The ModelVersion's ``status.evaluation``: the best checkpoint's final evaluation."""

    indicator: Indicator = Field(description="The task's first indicator (docs/metrics.md).")
    value: float | None = Field(
        default=None,
        description="Its value on the validation split (the printer column and the View's "
        "models library show it).",
    )
    validation: EvaluationSummary = Field(description="Headline numbers on the validation split.")
    test: EvaluationSummary | None = Field(
        default=None, description="Headline numbers on the test split, when the plan has one."
    )
    artifacts: EvaluationArtifacts = Field(description="The validation split's files.")
    test_artifacts: EvaluationArtifacts | None = Field(
        default=None, description="The test split's files."
    )


class Evaluation(ApiModel):
    """``evaluation.json``: one evaluation of one checkpoint on one set of images."""

    schema_version: Literal["kubevision.dev/evaluation/v1"] = SCHEMA_VERSION
    task: Task
    split: EvaluatedSplit
    images: int = Field(ge=0, description="Images scored.")
    model_version: str | None = Field(default=None, description="namespace/name, when known.")
    best_epoch: int | None = Field(default=None, description="Epoch of the scored checkpoint.")
    concepts: list[str] = Field(description="Concept names in class-index order.")
    concepts_without_ground_truth: list[str] = Field(
        description="Concepts without any ground truth in the scored images (left out of "
        "every mean)."
    )
    summary: EvaluationSummary
    classification: ClassificationEvaluation | None = None
    tagging: TaggingEvaluation | None = None
    detection: DetectionEvaluation | None = None
