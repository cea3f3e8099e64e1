"""Classification figures of the evaluation (kubevision_trainer.evaluation.classification)
against values worked out by hand in the comments, and against scikit-learn on random data.
Notation: TP true positives, P precision, R recall, S support, Q predicted count."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    precision_recall_fscore_support,
    top_k_accuracy_score,
)

from kubevision_api.evaluation import (
    Averages,
    EvaluatedSplit,
    Evaluation,
    Indicator,
)
from kubevision_api.view import Task
from kubevision_trainer.evaluation import classification, evaluate
from kubevision_trainer.evaluation.predictions import ClassificationPredictions


def predictions(logits: list[list[float]], labels: list[int]) -> ClassificationPredictions:
    return ClassificationPredictions(
        logits=np.array(logits, dtype=np.float64),
        labels=np.array(labels, dtype=np.int64),
    )


ANIMALS = ["cat", "dog", "fox", "owl"]
#            cat  dog  fox  owl     label  argmax
ANIMAL_LOGITS = [
    [3.0, 1.0, 0.0, 0.0],  # cat -> cat  right
    [1.0, 2.0, 0.0, 0.0],  # cat -> dog  wrong
    [0.0, 5.0, 1.0, 0.0],  # dog -> dog  right
    [2.0, 2.0, 0.0, 0.0],  # dog -> cat  wrong (tie between cat and dog: lowest index)
    [0.0, 0.0, 1.0, 4.0],  # fox -> owl  wrong
    [0.0, 3.0, 0.0, 1.0],  # dog -> dog  right
]
ANIMAL_LABELS = [0, 0, 1, 1, 2, 1]


def test_hand_computed_figures() -> None:
    figures = classification.evaluate(ANIMALS, predictions(ANIMAL_LOGITS, ANIMAL_LABELS))
    # rows = true, columns = predicted (cat, dog, fox, owl)
    assert figures.confusion_matrix == [
        [1, 1, 0, 0],  # cat: image 0 right, image 1 as dog
        [1, 2, 0, 0],  # dog: image 3 as cat (tie), images 2 and 5 right
        [0, 0, 0, 1],  # fox: image 4 as owl
        [0, 0, 0, 0],  # owl: no image
    ]
    # 3 right out of 6
    assert figures.accuracy == 0.5
    # 4 concepts < 5
    assert figures.top5 is None
    cat, dog, fox, owl = figures.concepts
    assert [c.concept for c in figures.concepts] == ANIMALS
    # cat: S = 2, Q = 2, TP = 1: P = 1/2, R = 1/2, F1 = 2TP / (S + Q) = 2/4
    assert (cat.support, cat.predicted) == (2, 2)
    assert (cat.precision, cat.recall, cat.f1) == (0.5, 0.5, 0.5)
    # dog: S = 3, Q = 3, TP = 2: P = R = 2/3, F1 = 4/6
    assert (dog.support, dog.predicted) == (3, 3)
    assert (dog.precision, dog.recall, dog.f1) == (2 / 3, 2 / 3, 2 / 3)
    # fox: S = 1, Q = 0, TP = 0: P undefined, R = 0, F1 = 2TP / (S + Q) = 0 (never predicted)
    assert (fox.support, fox.predicted) == (1, 0)
    assert (fox.precision, fox.recall, fox.f1) == (None, 0.0, 0.0)
    # owl: S = 0 (no ground truth), Q = 1, TP = 0: P = 0, R undefined, F1 undefined
    assert (owl.support, owl.predicted) == (0, 1)
    assert (owl.precision, owl.recall, owl.f1) == (0.0, None, None)
    # Macro over cat, dog, fox (owl has no ground truth), nulls left out:
    # P = (1/2 + 2/3) / 2 = 7/12; R = (1/2 + 2/3 + 0) / 3 = 7/18; F1 = (1/2 + 2/3 + 0) / 3 = 7/18
    assert figures.macro.precision == pytest.approx(7 / 12, rel=1e-15)
    assert figures.macro.recall == pytest.approx(7 / 18, rel=1e-15)
    assert figures.macro.f1 == pytest.approx(7 / 18, rel=1e-15)
    # Weighted by S, nulls left out (with their weight):
    # P = (2 * 1/2 + 3 * 2/3) / (2 + 3) = 3/5; R = (2 * 1/2 + 3 * 2/3 + 1 * 0) / 6 = 1/2
    # (the accuracy, as always); F1 = (2 * 1/2 + 3 * 2/3 + 1 * 0) / 6 = 1/2
    assert figures.weighted.precision == pytest.approx(3 / 5, rel=1e-15)
    assert figures.weighted.recall == pytest.approx(1 / 2, rel=1e-15)
    assert figures.weighted.f1 == pytest.approx(1 / 2, rel=1e-15)


def test_all_wrong_gives_f1_zero() -> None:
    # labels 0, 1 predicted 1, 0: each concept S = 1, Q = 1, TP = 0: P = R = 0, so P + R = 0
    # and F1 = 0 (not null: both are defined)
    figures = classification.evaluate(["a", "b"], predictions([[0, 1], [1, 0]], [0, 1]))
    assert figures.accuracy == 0.0
    assert [(c.precision, c.recall, c.f1) for c in figures.concepts] == [(0.0, 0.0, 0.0)] * 2
    assert figures.macro == Averages(precision=0.0, recall=0.0, f1=0.0)
    assert figures.weighted == Averages(precision=0.0, recall=0.0, f1=0.0)
    assert figures.confusion_matrix == [[0, 1], [1, 0]]


SIX = ["a", "b", "c", "d", "e", "f"]


def test_top5_with_six_concepts() -> None:
    logits = [
        # label a, the lowest score: argmax f (wrong); top 5 = f e d c b, no a (wrong)
        [0.0, 1.0, 2.0, 3.0, 4.0, 5.0],
        # label e, 5th highest score: argmax a (wrong); top 5 = a b c d e (right)
        [5.0, 4.0, 3.0, 2.0, 1.0, 0.0],
        # label a, all tied: argmax a, the lowest index (right); top 5 = a b c d e, ties to
        # the lowest index as for the argmax (right). scikit-learn's own tie order would
        # take f e d c b and count this image wrong at top 5 although right at top 1.
        [0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
    ]
    labels = [0, 4, 0]
    figures = classification.evaluate(SIX, predictions(logits, labels))
    # top 1: 1 of 3; top 5: 2 of 3
    assert figures.accuracy == 1 / 3
    assert figures.top5 == 2 / 3
    plain = np.array(logits)
    assert top_k_accuracy_score(labels, plain, k=5, labels=range(6)) == 1 / 3


@pytest.mark.parametrize(("classes", "top5"), [(4, None), (5, 1.0), (6, 1.0)])
def test_top5_defined_from_five_concepts(classes: int, top5: float | None) -> None:
    # one image of label 0 with the highest logit: inside every top 5; with 4 concepts top-5
    # is undefined, with 5 it is 1 whatever the scores
    logits = [[1.0] + [0.0] * (classes - 1)]
    figures = classification.evaluate(SIX[:classes], predictions(logits, [0]))
    assert figures.top5 == top5


def test_no_image() -> None:
    empty = ClassificationPredictions(
        logits=np.zeros((0, 6), dtype=np.float64), labels=np.zeros(0, dtype=np.int64)
    )
    figures = classification.evaluate(SIX, empty)
    assert figures.accuracy is None
    assert figures.top5 is None
    assert figures.confusion_matrix == [[0] * 6 for _ in range(6)]
    assert all(c.support == 0 and c.predicted == 0 for c in figures.concepts)
    assert all(c.precision is c.recall is c.f1 is None for c in figures.concepts)
    assert figures.macro == Averages(precision=None, recall=None, f1=None)
    assert figures.weighted == Averages(precision=None, recall=None, f1=None)


@pytest.mark.parametrize(
    ("logits", "labels"),
    [
        ([[0.0, 1.0, 2.0]], [0]),  # 3 columns for 2 concepts
        ([[0.0, 1.0]], [2]),  # label out of range
        ([[0.0, 1.0]], [-1]),  # label out of range
        ([[float("nan"), 1.0]], [0]),  # diverged model
        ([[0.0, 1.0], [1.0, 0.0]], [0]),  # one label for two images
    ],
)
def test_rejects_bad_input(logits: list[list[float]], labels: list[int]) -> None:
    bad = ClassificationPredictions(
        logits=np.array(logits, dtype=np.float64), labels=np.array(labels, dtype=np.int64)
    )
    with pytest.raises(ValueError):
        classification.evaluate(["a", "b"], bad)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_agrees_with_scikit_learn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    classes, images = 7, 60
    logits = rng.normal(size=(images, classes))
    # Class 6 never a label (support 0), so a null recall and the support-0 rule are exercised.
    labels = rng.integers(0, classes - 1, size=images)
    figures = classification.evaluate([*SIX, "g"], ClassificationPredictions(logits, labels))
    predicted = logits.argmax(axis=1)
    everyone = list(range(classes))
    assert figures.accuracy == accuracy_score(labels, predicted)
    # Continuous logits: no tie, so the column reversal changes nothing.
    assert figures.top5 == top_k_accuracy_score(labels, logits, k=5, labels=everyone)
    assert figures.confusion_matrix == confusion_matrix(labels, predicted, labels=everyone).tolist()
    precision, recall, f1, support = precision_recall_fscore_support(
        labels, predicted, labels=everyone, average=None, zero_division=np.nan
    )
    for row, p, r, f, s in zip(figures.concepts, precision, recall, f1, support, strict=True):
        assert row.support == s
        assert row.precision == (None if np.isnan(p) else p)
        assert row.recall == (None if np.isnan(r) else r)
        if row.precision is not None and row.recall is not None:
            assert row.f1 == f
    assert figures.concepts[6].support == 0
    # Means over the concepts with support, nulls left out.
    kept = support > 0
    assert figures.macro.recall == pytest.approx(np.nanmean(recall[kept]), rel=1e-12)
    assert figures.macro.precision == pytest.approx(np.nanmean(precision[kept]), rel=1e-12)
    defined = kept & ~np.isnan(precision)
    assert figures.weighted.precision == pytest.approx(
        np.average(precision[defined], weights=support[defined]), rel=1e-12
    )
    assert figures.weighted.recall == pytest.approx(
        np.average(recall[kept], weights=support[kept]), rel=1e-12
    )


def test_dispatcher_writes_a_valid_evaluation() -> None:
    evaluation = evaluate(
        Task.CLASSIFICATION,
        ANIMALS,
        predictions(ANIMAL_LOGITS, ANIMAL_LABELS),
        split=EvaluatedSplit.VALIDATION,
        model_version="default/animals-1",
        best_epoch=3,
    )
    assert evaluation.concepts_without_ground_truth == ["owl"]
    assert evaluation.summary.indicator is Indicator.ACCURACY
    assert evaluation.summary.value == 0.5
    assert evaluation.images == 6
    text = evaluation.model_dump_json(by_alias=True)
    assert '"conceptsWithoutGroundTruth":["owl"]' in text
    assert '"confusionMatrix":[[1,1,0,0],' in text
    assert Evaluation.model_validate_json(text) == evaluation
