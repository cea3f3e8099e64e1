"""The evaluation's files (``evaluation.artifacts``, ``evaluation.plots``) and the model card's
serving part (``modelcard.serving``), from Evaluations written out by hand: every PNG is opened
with PIL (size, not blank), ``evaluation.json`` is read back through its schema, and the
thresholds are the ones the Evaluation holds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kubevision_api.evaluation import (
    RECALL_POINTS,
    Averages,
    ClassificationConcept,
    ClassificationEvaluation,
    Curve,
    DetectionConcept,
    DetectionEvaluation,
    EvaluatedSplit,
    Evaluation,
    EvaluationArtifacts,
    EvaluationSummary,
    Indicator,
    Lrp,
    OperatingPoint,
    PrecisionRecall,
    TaggingConcept,
    TaggingEvaluation,
)
from kubevision_api.status import EpochMetrics
from kubevision_api.view import Task
from kubevision_trainer import local, modelcard
from kubevision_trainer.evaluation import artifacts, plots
from tests.trainer.trainer_helpers import assert_drawn, classification_plan

AVERAGES = Averages(precision=0.5, recall=0.5, f1=0.5)


def _summary(
    task: Task, indicator: Indicator, value: float | None, images: int
) -> EvaluationSummary:
    return EvaluationSummary(
        split=EvaluatedSplit.VALIDATION, images=images, indicator=indicator, value=value
    )


def classification(size: int) -> Evaluation:
    """``size`` concepts; concept i has 10 images, 10 - (i % 4) right, the rest predicted as
    concept (i + 1) % size."""
    names = [f"c{i:02d}" for i in range(size)]
    matrix = [[0] * size for _ in range(size)]
    for i in range(size):
        matrix[i][i] = 10 - i % 4
        matrix[i][(i + 1) % size] += i % 4
    right = sum(matrix[i][i] for i in range(size))
    figures = ClassificationEvaluation(
        accuracy=right / (10 * size),
        top5=None,
        concepts=[
            ClassificationConcept(
                concept=n, precision=0.5, recall=0.5, f1=0.5, support=10, predicted=10
            )
            for n in names
        ],
        confusion_matrix=matrix,
        macro=AVERAGES,
        weighted=AVERAGES,
    )
    return Evaluation(
        task=Task.CLASSIFICATION,
        split=EvaluatedSplit.VALIDATION,
        images=10 * size,
        model_version="ns/mv",
        best_epoch=2,
        concepts=names,
        concepts_without_ground_truth=[],
        summary=_summary(Task.CLASSIFICATION, Indicator.ACCURACY, figures.accuracy, 10 * size),
        classification=figures,
    )


def _curve(reach: float, top: float) -> Curve:
    """Precision ``top`` falling linearly to ``top / 2`` at recall ``reach``, 0 past it."""
    recall = np.linspace(0, 1, RECALL_POINTS)
    precision = np.where(recall <= reach + 1e-9, top - top / 2 * recall / max(reach, 1e-9), 0.0)
    return Curve(precision=[float(p) for p in precision])


def _point(threshold: float) -> OperatingPoint:
    return OperatingPoint(
        threshold=threshold,
        precision=0.5,
        recall=0.5,
        f1=0.5,
        true_positives=1,
        false_positives=1,
        false_negatives=1,
    )


def tagging(size: int) -> Evaluation:
    """``size`` concepts, the last one without ground truth (no curve, no threshold); concept i
    has the F1-optimal threshold 0.1 + i / 100."""
    names = [f"t{i:02d}" for i in range(size)]
    concepts = [
        TaggingConcept(
            concept=n,
            support=5,
            ap=0.9 - i / 100,
            at_half=_point(0.5),
            best=_point(round(0.1 + i / 100, 2)),
            curve=_curve(0.5 + (i % 5) / 10, 1.0 - i / (2 * size)),
        )
        for i, n in enumerate(names[:-1])
    ]
    concepts.append(
        TaggingConcept(
            concept=names[-1], support=0, ap=None, at_half=_point(0.5), best=None, curve=None
        )
    )
    pooled = PrecisionRecall(precision=0.5, recall=0.5, f1=0.5)
    figures = TaggingEvaluation(
        map=0.8,
        accuracy=0.9,
        concepts=concepts,
        macro_at_half=AVERAGES,
        macro_best=AVERAGES,
        micro_at_half=pooled,
        micro_best=pooled,
    )
    return Evaluation(
        task=Task.TAGGING,
        split=EvaluatedSplit.VALIDATION,
        images=30,
        concepts=names,
        concepts_without_ground_truth=[names[-1]],
        summary=_summary(Task.TAGGING, Indicator.MAP, 0.8, 30),
        tagging=figures,
    )


def detection() -> Evaluation:
    """Two concepts, LRP-optimal score thresholds 0.35 and 0.6; NMS IoU 0.5."""
    concepts = [
        DetectionConcept(
            concept=name,
            precision=0.8,
            recall=0.6,
            f1=0.69,
            support=10,
            detections=12,
            iou_score=0.8,
            optimal_lrp=Lrp(
                lrp=0.6,
                localisation=0.2,
                false_positive=0.2,
                false_negative=0.4,
                threshold=threshold,
            ),
            ap=0.4,
            ap50=0.7,
            curve=_curve(0.6 + index / 10, 0.95),
        )
        for index, (name, threshold) in enumerate((("cat", 0.35), ("dog", 0.6)))
    ]
    figures = DetectionEvaluation(
        mean_optimal_lrp=0.6,
        mean_localisation=0.2,
        mean_false_positive=0.2,
        mean_false_negative=0.4,
        map=0.4,
        ap50=0.7,
        nms_iou=0.5,
        concepts=concepts,
    )
    return Evaluation(
        task=Task.DETECTION,
        split=EvaluatedSplit.VALIDATION,
        images=20,
        concepts=["cat", "dog"],
        concepts_without_ground_truth=[],
        summary=_summary(Task.DETECTION, Indicator.MEAN_OPTIMAL_LRP, 0.6, 20),
        detection=figures,
    )


@pytest.mark.parametrize(
    ("evaluation", "png", "absent"),
    [
        (classification(4), "confusion_matrix.png", "pr_curves.png"),
        (tagging(5), "pr_curves.png", "confusion_matrix.png"),
        (detection(), "pr_curves.png", "confusion_matrix.png"),
    ],
    ids=["classification", "tagging", "detection"],
)
def test_write_puts_the_json_and_the_task_figure(
    tmp_path: Path, evaluation: Evaluation, png: str, absent: str
) -> None:
    folder = f"file://{tmp_path}/out"
    written = artifacts.write(folder, evaluation, report_uri=f"{folder}/report.png")
    assert written.evaluation == f"{folder}/evaluation.json"
    assert written.report == f"{folder}/report.png"
    back = Evaluation.model_validate_json((tmp_path / "out/evaluation.json").read_text())
    assert back == evaluation
    assert (tmp_path / "out" / png).exists() and not (tmp_path / "out" / absent).exists()
    if png == "confusion_matrix.png":
        assert written.confusion_matrix == f"{folder}/{png}" and written.pr_curves is None
    else:
        assert written.pr_curves == f"{folder}/{png}" and written.confusion_matrix is None
    assert_drawn((tmp_path / "out" / png).read_bytes(), 400, 300)
    # Atomic writes leave no temporary file behind.
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(["evaluation.json", png])


def test_confused_keeps_the_most_confused_concepts_in_index_order() -> None:
    # 4 concepts, keep 2. Off-diagonal row + column sums: c0: 1 + 0 = 1; c1: 0 + 1 + 5 = 6
    # (column: 1 from c0, 5 from c3); c2: 0; c3: 5 + 0 = 5. Kept: c1 and c3.
    matrix = [[9, 1, 0, 0], [0, 7, 0, 0], [0, 0, 3, 0], [0, 5, 0, 2]]
    assert plots.confused(matrix, keep=2) == [1, 3]
    assert plots.confused(matrix, keep=4) == [0, 1, 2, 3]
    # A tie (c0 and c2 at 2 each, c1 at 4) goes to the lower index.
    assert plots.confused([[1, 1, 0], [1, 1, 1], [0, 1, 1]], keep=2) == [0, 1]


def test_confusion_matrix_of_many_concepts_stays_bounded() -> None:
    small, large = classification(4), classification(120)
    assert small.classification is not None and large.classification is not None
    few = plots.confusion_matrix(small.classification, small.concepts, "t")
    many = plots.confusion_matrix(large.classification, large.concepts, "t")
    _, height_few = assert_drawn(few, 300, 300)
    _, height = assert_drawn(many, 600, 600)
    # 30 concepts drawn, not 120: the figure is that of 30 (0.38 in a concept + 2.5 in, 90 dpi).
    assert height <= (0.38 * plots.MATRIX_CONCEPTS + 2.5) * 90 + 2
    assert height > height_few


def test_drawn_curves_are_the_best_and_the_worst_halves() -> None:
    curves = plots._curves(tagging(26))  # 25 with a curve; areas fall with the index
    drawn = plots.drawn_curves(curves, keep=4)
    ranked = sorted(curves, key=lambda c: -c.area)
    assert [c.name for c in drawn] == [c.name for c in ranked[:2] + ranked[-2:]]
    assert len(plots.drawn_curves(curves)) == plots.CURVES
    assert len(plots.drawn_curves(curves[:3])) == 3
    assert_drawn(plots.pr_curves(tagging(26), "t"), 600, 400)


def test_pr_curves_refuse_a_classification() -> None:
    with pytest.raises(ValueError, match="no precision-recall curves"):
        plots.pr_curves(classification(3), "t")


def test_serving_thresholds_of_each_task() -> None:
    tags = modelcard.serving(tagging(3))
    # t00: 0.10, t01: 0.11, t02 has no ground truth: null.
    assert tags == {
        "thresholds": {"t00": 0.1, "t01": 0.11, "t02": None},
        "thresholdOf": "probability",
        "nmsIou": None,
    }
    boxes = modelcard.serving(detection())
    assert boxes == {
        "thresholds": {"cat": 0.35, "dog": 0.6},
        "thresholdOf": "score",
        "nmsIou": 0.5,
    }
    assert modelcard.serving(classification(3)) == {
        "thresholds": None,
        "thresholdOf": None,
        "nmsIou": None,
    }


def test_the_done_line_leads_with_the_first_indicator() -> None:
    card: dict[str, Any] = {
        "metrics": {"bestEpoch": 3, "accuracy": None, "mAP": 0.41234, "ap50": 0.7},
        "evaluation": {"summary": {"indicator": "meanOptimalLRP", "value": 0.61239}},
    }
    assert local.done_line(card, "file:///o/") == (
        "done: best epoch 3: meanOptimalLRP 0.6124, mAP 0.4123, AP50 0.7000; outputs in file:///o/"
    )
    # Tagging's first indicator is mAP: not repeated; a card without evaluation falls back.
    card["evaluation"]["summary"] = {"indicator": "mAP", "value": 0.9}
    assert local.done_line(card, "x").startswith("done: best epoch 3: mAP 0.9000, AP50 0.7000;")
    del card["evaluation"]
    assert local.done_line(card, "x") == "done: best epoch 3: mAP 0.4123, AP50 0.7000; outputs in x"


def test_the_done_line_ends_with_the_test_splits_first_indicator() -> None:
    card: dict[str, Any] = {
        "metrics": {"bestEpoch": 2, "accuracy": 0.25, "mAP": None, "ap50": None},
        "evaluation": {
            "summary": {"indicator": "accuracy", "value": 0.25},
            "test": {"indicator": "accuracy", "value": 0.20289, "images": 69},
        },
    }
    assert local.done_line(card, "x") == (
        "done: best epoch 2: accuracy 0.2500; test accuracy 0.2029 on 69 images; outputs in x"
    )


def test_the_model_card_records_the_test_split(tmp_path: Path) -> None:
    out = f"file://{tmp_path}/out"
    plan = classification_plan(tmp_path / "data", out, (0, 1, 2))
    validation = classification(3)
    test = validation.summary.model_copy(update={"split": EvaluatedSplit.TEST, "images": 30})
    card = modelcard.build(
        plan,
        EpochMetrics(epoch=1, accuracy=validation.summary.value),
        best_epoch=1,
        initial=None,
        plan_hash="h",
        evaluation=validation,
        artifacts=EvaluationArtifacts(
            evaluation=f"{out}/evaluation.json", confusion_matrix=f"{out}/confusion_matrix.png"
        ),
        test=test,
        test_artifacts=EvaluationArtifacts(
            evaluation=f"{out}/test/evaluation.json",
            confusion_matrix=f"{out}/test/confusion_matrix.png",
        ),
    )
    assert card["evaluation"]["artifacts"] == {
        "evaluation": "evaluation.json",
        "confusionMatrix": "confusion_matrix.png",
    }
    assert card["evaluation"]["testArtifacts"] == {
        "evaluation": "test/evaluation.json",
        "confusionMatrix": "test/confusion_matrix.png",
    }
    assert card["evaluation"]["test"]["split"] == "test"
    assert card["evaluation"]["test"]["images"] == 30
    assert card["evaluation"]["test"]["value"] == validation.summary.value == 27 / 30
    # Without a test split, neither key.
    alone = modelcard.build(
        plan,
        EpochMetrics(epoch=1),
        best_epoch=1,
        initial=None,
        plan_hash="h",
        evaluation=validation,
    )
    assert "test" not in alone["evaluation"] and "testArtifacts" not in alone["evaluation"]
