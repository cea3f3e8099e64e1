"""Tagging figures of the evaluation (kubevision_trainer.evaluation.tagging) against values
worked out by hand in the comments, and against scikit-learn on random data.

Notation: s(x) = sigmoid(x) = 1 / (1 + e^-x); S support (images with the concept); TP/FP/FN;
P precision, R recall; a candidate threshold t predicts the images with s(logit) >= t. F1 is
2TP / (TP + FP + S)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import (
    average_precision_score,
    precision_recall_curve,
    precision_recall_fscore_support,
)

from kubevision_api.evaluation import (
    Averages,
    EvaluatedSplit,
    Evaluation,
    Indicator,
    OperatingPoint,
    PrecisionRecall,
)
from kubevision_api.view import Task
from kubevision_trainer.evaluation import evaluate, tagging
from kubevision_trainer.evaluation.predictions import TaggingPredictions


def s(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def predictions(logits: list[list[float]], targets: list[list[int]]) -> TaggingPredictions:
    return TaggingPredictions(
        logits=np.array(logits, dtype=np.float64), targets=np.array(targets, dtype=np.bool_)
    )


TAGS = ["indoor", "outdoor", "people", "snow"]
#        indoor outdoor people snow
LOGITS = [
    [3.0, 1.5, -1.0, 0.5],  # image 0
    [2.0, 2.5, -2.0, -1.0],  # image 1
    [1.0, -1.5, -0.5, -1.0],  # image 2
    [-0.5, -2.5, -1.5, -1.0],  # image 3
    [-1.0, -0.5, -4.0, -1.0],  # image 4
    [-2.0, 0.5, -5.0, -1.0],  # image 5
]
TARGETS = [
    [1, 0, 0, 0],  # image 0
    [0, 1, 0, 0],  # image 1
    [1, 0, 1, 0],  # image 2
    [1, 0, 1, 0],  # image 3
    [0, 1, 0, 0],  # image 4
    [0, 0, 0, 0],  # image 5: no concept at all, an all-negative row
]


def point(
    threshold: float, tp: int, fp: int, fn: int, p: float | None, r: float | None, f1: float | None
) -> OperatingPoint:
    return OperatingPoint(
        threshold=threshold,
        true_positives=tp,
        false_positives=fp,
        false_negatives=fn,
        precision=p,
        recall=r,
        f1=f1,
    )


def close(actual: OperatingPoint | None, expected: OperatingPoint) -> None:
    """Counts equal; threshold and ratios equal up to the last bits (s() vs scipy's expit)."""
    assert actual is not None
    for name, value in expected.model_dump().items():
        got = getattr(actual, name)
        assert got == (value if value is None else pytest.approx(value, rel=1e-14)), name


def test_hand_computed_figures() -> None:
    figures = tagging.evaluate(TAGS, predictions(LOGITS, TARGETS))
    indoor, outdoor, people, snow = figures.concepts
    assert [c.concept for c in figures.concepts] == TAGS
    assert [c.support for c in figures.concepts] == [3, 2, 2, 0]

    # indoor, by decreasing logit: 3 (+), 2 (-), 1 (+), -0.5 (+), -1 (-), -2 (-); S = 3
    #   t = s(3):    TP 1 FP 0  P 1    R 1/3  F1 2/4 = 1/2
    #   t = s(2):    TP 1 FP 1  P 1/2  R 1/3  F1 2/5
    #   t = s(1):    TP 2 FP 1  P 2/3  R 2/3  F1 4/6 = 2/3
    #   t = s(-0.5): TP 3 FP 1  P 3/4  R 1    F1 6/7    <- best
    #   t = s(-1):   TP 3 FP 2  P 3/5  R 1    F1 6/8
    #   t = s(-2):   TP 3 FP 3  P 1/2  R 1    F1 6/9
    # at 0.5 (logit >= 0): images 0, 1, 2: TP 2 FP 1 FN 1
    # AP = sum dR * P = 1/3 * 1 + 1/3 * 2/3 + 1/3 * 3/4 = 12/36 + 8/36 + 9/36 = 29/36
    # curve: max P at R >= r: 1 for r <= 1/3 (i = 0..33, as 33/100 <= 1/3 < 34/100), then
    # max(2/3, 3/4, 3/5, 1/2) = 3/4
    close(indoor.at_half, point(0.5, 2, 1, 1, 2 / 3, 2 / 3, 2 / 3))
    close(indoor.best, point(s(-0.5), 3, 1, 0, 3 / 4, 1.0, 6 / 7))
    assert indoor.ap == pytest.approx(29 / 36, rel=1e-15)
    assert indoor.curve is not None
    assert indoor.curve.precision == [1.0] * 34 + [0.75] * 67

    # outdoor, by decreasing logit: 2.5 (+), 1.5 (-), 0.5 (-), -0.5 (+), -1.5 (-), -2.5 (-); S = 2
    #   t = s(2.5):  TP 1 FP 0  P 1    R 1/2  F1 2/3    <- tied best, highest threshold
    #   t = s(1.5):  TP 1 FP 1  P 1/2  R 1/2  F1 2/4
    #   t = s(0.5):  TP 1 FP 2  P 1/3  R 1/2  F1 2/5
    #   t = s(-0.5): TP 2 FP 2  P 1/2  R 1    F1 4/6 = 2/3   <- tied best, lower threshold
    #   t = s(-1.5): TP 2 FP 3  P 2/5  R 1    F1 4/7
    #   t = s(-2.5): TP 2 FP 4  P 1/3  R 1    F1 4/8
    # at 0.5: images 1, 0, 5: TP 1 FP 2 FN 1, F1 = 2 / (3 + 2) = 2/5
    # AP = 1/2 * 1 + 1/2 * 1/2 = 3/4
    # curve: 1 for r <= 1/2 (i = 0..50), then max(1/2, 2/5, 1/3) = 1/2
    close(outdoor.at_half, point(0.5, 1, 2, 1, 1 / 3, 1 / 2, 2 / 5))
    close(outdoor.best, point(s(2.5), 1, 0, 1, 1.0, 1 / 2, 2 / 3))
    assert outdoor.ap == pytest.approx(3 / 4, rel=1e-15)
    assert outdoor.curve is not None
    assert outdoor.curve.precision == [1.0] * 51 + [0.5] * 50

    # people: every logit < 0, so nothing predicted at 0.5: TP 0 FP 0 FN 2, P undefined,
    # R 0, F1 0 (never predicted). By decreasing logit: -0.5 (+), -1 (-), -1.5 (+), -2, -4,
    # -5 (-); S = 2
    #   t = s(-0.5): TP 1 FP 0  P 1    R 1/2  F1 2/3
    #   t = s(-1):   TP 1 FP 1  P 1/2  R 1/2  F1 2/4
    #   t = s(-1.5): TP 2 FP 1  P 2/3  R 1    F1 4/5    <- best
    #   then TP 2 with FP 2, 3, 4: F1 4/6, 4/7, 4/8
    # AP = 1/2 * 1 + 1/2 * 2/3 = 5/6
    # curve: 1 for r <= 1/2 (i = 0..50), then 2/3
    close(people.at_half, point(0.5, 0, 0, 2, None, 0.0, 0.0))
    close(people.best, point(s(-1.5), 2, 1, 0, 2 / 3, 1.0, 4 / 5))
    assert people.ap == pytest.approx(5 / 6, rel=1e-15)
    assert people.curve is not None
    assert people.curve.precision == [1.0] * 51 + [2 / 3] * 50

    # snow: no positive: AP, best and curve undefined; at 0.5 image 0 is a FP: P 0, R and F1
    # undefined
    close(snow.at_half, point(0.5, 0, 1, 0, 0.0, None, None))
    assert (snow.ap, snow.best, snow.curve) == (None, None, None)

    # Means over indoor, outdoor, people (snow has no positive):
    # mAP = (29/36 + 27/36 + 30/36) / 3 = 86/108
    assert figures.map == pytest.approx(86 / 108, rel=1e-15)
    # at 0.5: P (2/3 + 1/3) / 2 = 1/2 (people's null left out); R (2/3 + 1/2 + 0) / 3 = 7/18;
    # F1 (2/3 + 2/5 + 0) / 3 = 16/45 (people, never predicted, counts 0)
    assert figures.macro_at_half.model_dump() == pytest.approx(
        {"precision": 1 / 2, "recall": 7 / 18, "f1": 16 / 45}, rel=1e-15
    )
    # best: P (3/4 + 1 + 2/3) / 3 = 29/36; R (1 + 1/2 + 1) / 3 = 5/6;
    # F1 (6/7 + 2/3 + 4/5) / 3 = (90 + 70 + 84) / 315 = 244/315
    assert figures.macro_best.model_dump() == pytest.approx(
        {"precision": 29 / 36, "recall": 5 / 6, "f1": 244 / 315}, rel=1e-15
    )
    # micro at 0.5: TP 2+1+0 = 3, FP 1+2+0 = 3, FN 1+1+2 = 4: P 3/6, R 3/7, F1 6/13
    assert figures.micro_at_half.model_dump() == pytest.approx(
        {"precision": 1 / 2, "recall": 3 / 7, "f1": 6 / 13}, rel=1e-15
    )
    # micro at the best thresholds: TP 3+1+2 = 6, FP 1+0+1 = 2, FN 0+1+0 = 1:
    # P 6/8, R 6/7, F1 12/15
    assert figures.micro_best.model_dump() == pytest.approx(
        {"precision": 3 / 4, "recall": 6 / 7, "f1": 4 / 5}, rel=1e-15
    )
    # accuracy over 6 x 4 = 24 pairs; wrong at 0.5: indoor images 1, 3; outdoor 0, 4, 5;
    # people 2, 3; snow 0: 8 wrong, 16/24 right
    assert figures.accuracy == 2 / 3


def test_f1_optimal_threshold_of_a_score_list() -> None:
    # scores and truth, by decreasing score: 0.9 (+), 0.8 (+), 0.7 (-), 0.6 (+), 0.55 (-),
    # 0.4 (+), 0.2 (-); S = 4
    #   t = 0.9:  TP 1 FP 0: F1 2/5
    #   t = 0.8:  TP 2 FP 0: F1 4/6
    #   t = 0.7:  TP 2 FP 1: F1 4/7
    #   t = 0.6:  TP 3 FP 1: F1 6/8 = 3/4
    #   t = 0.55: TP 3 FP 2: F1 6/9
    #   t = 0.4:  TP 4 FP 2: F1 8/10 = 4/5   <- best
    #   t = 0.2:  TP 4 FP 3: F1 8/11
    scores = np.array([0.6, 0.2, 0.9, 0.4, 0.55, 0.8, 0.7])
    truth = np.array([1, 0, 1, 1, 0, 1, 0], dtype=np.bool_)
    found = tagging.candidates(scores, truth)
    assert found.thresholds.tolist() == [0.9, 0.8, 0.7, 0.6, 0.55, 0.4, 0.2]
    assert found.true_positives.tolist() == [1, 2, 2, 3, 3, 4, 4]
    assert found.false_positives.tolist() == [0, 0, 1, 1, 2, 2, 3]
    best = tagging.best_index(found, 4)
    assert found.thresholds[best] == 0.4


def test_tied_f1_takes_the_highest_threshold() -> None:
    # by decreasing score: 0.9 (+), 0.8 (-), 0.7 (-), 0.6 (+); S = 2
    #   t = 0.9: TP 1 FP 0: F1 2/3; t = 0.8: 2/4; t = 0.7: 2/5; t = 0.6: TP 2 FP 2: 4/6 = 2/3
    # 2/3 twice: the highest threshold, 0.9, wins
    found = tagging.candidates(
        np.array([0.9, 0.8, 0.7, 0.6]), np.array([1, 0, 0, 1], dtype=np.bool_)
    )
    assert found.thresholds[tagging.best_index(found, 2)] == 0.9
    # tied scores enter together: 0.9 (+) and 0.9 (-) are one candidate, TP 1 FP 1
    found = tagging.candidates(np.array([0.9, 0.9, 0.1]), np.array([1, 0, 1], dtype=np.bool_))
    assert found.thresholds.tolist() == [0.9, 0.1]
    assert found.true_positives.tolist() == [1, 2]
    assert found.false_positives.tolist() == [1, 1]


def test_saturated_probabilities_share_a_threshold() -> None:
    # logits 50 (+) and 40 (-): s() of both is exactly 1.0 in float64, so no probability
    # threshold separates them: one candidate t = 1.0 with TP 1 FP 1: P 1/2, R 1, F1 2/3
    # (a search on the logits would report t = s(50) = 1.0 with P 1, which p >= 1.0 does not
    # give back). AP is read on the logits, which keep the order: 1.
    figures = tagging.evaluate(["a"], predictions([[50.0], [40.0]], [[1], [0]]))
    (a,) = figures.concepts
    assert a.best == point(1.0, 1, 1, 0, 0.5, 1.0, 2 / 3)
    assert a.ap == 1.0
    precision, recall, thresholds = precision_recall_curve(
        [1, 0], tagging.probabilities(np.array([50.0, 40.0]))
    )
    assert thresholds.tolist() == [1.0]
    assert precision.tolist() == [0.5, 1.0]
    assert recall.tolist() == [1.0, 0.0]


def test_no_prediction_at_all() -> None:
    # every logit -1 < 0: nothing predicted at 0.5.
    # a: S 1: TP 0 FP 0 FN 1: P undefined, R 0, F1 0; one candidate s(-1) taking both
    #    images: TP 1 FP 1: P 1/2 R 1 F1 2/3; AP = 1 * 1/2
    # b: no positive: at 0.5 TP 0 FP 0 FN 0, all undefined
    figures = tagging.evaluate(
        ["a", "b"], predictions([[-1.0, -1.0], [-1.0, -1.0]], [[1, 0], [0, 0]])
    )
    a, b = figures.concepts
    assert a.at_half == point(0.5, 0, 0, 1, None, 0.0, 0.0)
    close(a.best, point(s(-1), 1, 1, 0, 0.5, 1.0, 2 / 3))
    assert a.ap == 0.5
    assert b.at_half == point(0.5, 0, 0, 0, None, None, None)
    assert figures.macro_at_half == Averages(precision=None, recall=0.0, f1=0.0)
    assert figures.micro_at_half == PrecisionRecall(precision=None, recall=0.0, f1=0.0)
    assert figures.macro_best == Averages(precision=0.5, recall=1.0, f1=2 / 3)
    assert figures.micro_best == PrecisionRecall(precision=0.5, recall=1.0, f1=2 / 3)
    # 4 pairs, only (image 0, a) wrong
    assert figures.accuracy == 3 / 4
    assert figures.map == 0.5


def test_no_positive_and_no_image() -> None:
    # images without any concept: every concept lacks positives, every mean is undefined
    none = tagging.evaluate(["a", "b"], predictions([[1.0, -1.0]], [[0, 0]]))
    assert none.map is None
    assert none.macro_at_half == Averages(precision=None, recall=None, f1=None)
    assert none.micro_best == PrecisionRecall(precision=None, recall=None, f1=None)
    # (image 0, a) predicted wrongly, (image 0, b) right: 1/2
    assert none.accuracy == 0.5
    empty = tagging.evaluate(
        ["a"], TaggingPredictions(np.zeros((0, 1)), np.zeros((0, 1), dtype=np.bool_))
    )
    assert empty.accuracy is None
    assert empty.map is None
    assert empty.concepts[0].at_half == point(0.5, 0, 0, 0, None, None, None)


def test_curve_reaches_zero_past_the_highest_recall() -> None:
    # COCO's rule, for callers whose candidates stop short of recall 1: here S = 4 is passed
    # for a list holding 2 positives, so R tops at 2/4 = 1/2: levels 0..50 read 1, 51..100 read 0
    found = tagging.candidates(np.array([0.9, 0.8]), np.array([1, 1], dtype=np.bool_))
    assert tagging.curve(found, 4).precision == [1.0] * 51 + [0.0] * 50


def test_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        tagging.evaluate(["a", "b"], predictions([[0.0]], [[1]]))
    with pytest.raises(ValueError):
        tagging.evaluate(["a"], predictions([[float("inf")]], [[1]]))
    with pytest.raises(ValueError):
        # float targets: the wrong dtype is the point
        floats = TaggingPredictions(np.zeros((1, 1)), np.ones((1, 1)))  # type: ignore[arg-type]
        tagging.evaluate(["a"], floats)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_agrees_with_scikit_learn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    images, classes = 80, 5
    # Logits rounded to 0.5 for tied scores, some beyond 37 for saturated probabilities.
    logits = np.round(rng.normal(scale=4, size=(images, classes)) * 2) / 2
    logits[rng.random(size=logits.shape) < 0.1] += 40
    targets = rng.random(size=logits.shape) < 0.3
    targets[:, 4] = False  # a concept without positives
    figures = tagging.evaluate(list("abcde"), TaggingPredictions(logits, targets))
    probabilities = tagging.probabilities(logits)
    assert probabilities.max() == 1.0  # saturation happened
    half = precision_recall_fscore_support(
        targets, probabilities >= 0.5, average=None, zero_division=np.nan
    )
    for index, row in enumerate(figures.concepts):
        truth, score = targets[:, index], probabilities[:, index]
        assert row.support == truth.sum()
        p, r, f1, _ = (column[index] for column in half)
        assert row.at_half.precision == (None if np.isnan(p) else p)
        assert row.at_half.recall == (None if np.isnan(r) else r)
        if row.at_half.precision is not None and row.at_half.recall is not None:
            assert row.at_half.f1 == f1
        if not truth.any():
            assert (row.ap, row.best, row.curve) == (None, None, None)
            continue
        assert row.ap == average_precision_score(truth, logits[:, index])
        precision, recall, thresholds = precision_recall_curve(truth, score)
        # Every candidate is one of scikit-learn's points (it lists thresholds increasing and
        # appends P = 1, R = 0).
        found = tagging.candidates(score, truth)
        assert found.thresholds.tolist() == thresholds[::-1].tolist()
        tp, fp = found.true_positives, found.false_positives
        assert (tp / (tp + fp)).tolist() == precision[-2::-1].tolist()
        assert (tp / row.support).tolist() == recall[-2::-1].tolist()
        # The best point: max F1 over scikit-learn's points, ties to the highest threshold.
        both = precision[:-1] + recall[:-1]
        f1_curve = np.divide(
            2 * precision[:-1] * recall[:-1], both, out=np.zeros_like(both), where=both > 0
        )
        best = max(np.flatnonzero(f1_curve >= f1_curve.max() - 1e-12))
        assert row.best is not None
        assert row.best.threshold == thresholds[best]
        assert row.best.precision == precision[best]
        assert row.best.recall == recall[best]
        assert row.best.f1 == pytest.approx(f1_curve[best], rel=1e-12)
        # The curve: max precision at recall >= i/100 (exact fractions here).
        assert row.curve is not None
        expected = [
            max(p for p, r in zip(precision[:-1], recall[:-1], strict=True) if r >= i / 100 - 1e-12)
            for i in range(101)
        ]
        assert row.curve.precision == pytest.approx(expected, rel=0, abs=0)
    assert figures.concepts[4].support == 0
    aps = [row.ap for row in figures.concepts if row.ap is not None]
    assert len(aps) == 4
    assert figures.map == pytest.approx(np.mean(aps), rel=1e-15)
    assert figures.accuracy == ((probabilities >= 0.5) == targets).mean()


def test_dispatcher_writes_a_valid_evaluation() -> None:
    evaluation = evaluate(
        Task.TAGGING, TAGS, predictions(LOGITS, TARGETS), split=EvaluatedSplit.TEST
    )
    assert evaluation.concepts_without_ground_truth == ["snow"]
    assert evaluation.summary.indicator is Indicator.MAP
    assert evaluation.summary.value == pytest.approx(86 / 108, rel=1e-15)
    assert evaluation.images == 6
    text = evaluation.model_dump_json(by_alias=True)
    assert '"conceptsWithoutGroundTruth":["snow"]' in text
    assert '"atHalf":{' in text
    assert Evaluation.model_validate_json(text) == evaluation
