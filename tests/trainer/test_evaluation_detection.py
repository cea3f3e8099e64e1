"""Detection evaluation (``kubevision_trainer.evaluation.detection``, docs/metrics.md,
"Detection"): hand-computed cases with exact values, pycocotools' per-category AP against
COCOeval runs restricted to one category, and optimal LRP against vernier (0.5.4,
``vernier.instance.optimal_lrp``, a 0.01 threshold grid) on synthetic predictions
(:func:`compare_with_vernier`; tests/test_examples_train.py runs it on the trained detection
example's predictions).

Boxes are ``x1, y1, x2, y2``; the ground-truth box of the hand cases is ``[0, 0, 10, 10]``
(area 100), so a detection ``[0, 0, 10, h]`` has IoU ``h / 10``; the values are chosen dyadic
(0.875, 0.8125, 0.625, ...) so that the arithmetic is exact in floating point.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import vernier.instance

from kubevision_api.evaluation import EvaluatedSplit, Evaluation, Lrp
from kubevision_api.view import Task
from kubevision_trainer.evaluation import coco, detection, evaluate, lrp
from kubevision_trainer.evaluation.predictions import DetectionImage, DetectionPredictions

ROOT = Path(__file__).resolve().parents[2]


def _image(
    gt: list[list[float]],
    gt_labels: list[int],
    dt: list[list[float]],
    dt_labels: list[int],
    scores: list[float],
) -> DetectionImage:
    return DetectionImage(
        gt_boxes=np.array(gt, dtype=np.float64).reshape(-1, 4),
        gt_labels=np.array(gt_labels, dtype=np.int64),
        dt_boxes=np.array(dt, dtype=np.float64).reshape(-1, 4),
        dt_labels=np.array(dt_labels, dtype=np.int64),
        dt_scores=np.array(scores, dtype=np.float64),
    )


def _worked_case(*, background: bool = True) -> DetectionPredictions:
    """Concept 1 ("digit"): 3 boxes on images 1-2; five detections, by score:

    0.9  image 1, IoU 0.875 with A1        TP, (1 - IoU) / (1 - 0.5) = 0.25
    0.8  image 3 (no ground truth)         FP  (left out with background=False)
    0.7  image 1, IoU 0.8125 with A2       TP, 0.375
    0.6  image 2, IoU 0.625 with A3        TP, 0.75
    0.5  image 1, IoU 0.25 with A1         FP (A1 taken; 0.25 < 0.5 anyway)

    Concept 2 ("other") has no ground truth and one detection (an FP on image 2).
    """
    a1, a2, a3 = [0.0, 0, 10, 10], [20.0, 0, 30, 10], [0.0, 0, 10, 10]
    images = [
        _image(
            [a1, a2],
            [1, 1],
            [[0, 0, 10, 8.75], [20, 0, 30, 8.125], [0, 0, 10, 2.5]],
            [1, 1, 1],
            [0.9, 0.7, 0.5],
        ),
        _image([a3], [1], [[0, 0, 10, 6.25], [50, 50, 60, 60]], [1, 2], [0.6, 0.3]),
    ]
    if background:
        images.append(_image([], [], [[40, 40, 50, 50]], [1], [0.8]))
    return DetectionPredictions(images=images, nms_iou=0.45)


def test_optimal_lrp_worked_by_hand() -> None:
    # G = 3. LRP(s) = (sum of the TPs' (1 - IoU) / 0.5 + FP + FN) / (TP + FP + FN):
    #   keep none             1
    #   s = 0.9  TP 1 FP 0 FN 2: (0.25 + 0 + 2) / 3               = 0.75
    #   s = 0.8  TP 1 FP 1 FN 2: (0.25 + 1 + 2) / 4               = 0.8125
    #   s = 0.7  TP 2 FP 1 FN 1: (0.625 + 1 + 1) / 4              = 0.65625
    #   s = 0.6  TP 3 FP 1 FN 0: (1.375 + 1 + 0) / 4 = 2.375 / 4  = 0.59375  <- minimum
    #   s = 0.5  TP 3 FP 2 FN 0: (1.375 + 2) / 5                  = 0.675
    # At s = 0.6: localisation 1.375 / 3, FP part 1 / (3 + 1), FN part 0 / 3; and indeed
    # (3 * 1.375 / 3 + 1 + 0) / 4 = 0.59375.
    result = detection.evaluate(["digit", "other"], _worked_case())
    digit = result.concepts[0]
    assert digit.optimal_lrp == Lrp(
        lrp=0.59375,
        localisation=1.375 / 3,
        false_positive=0.25,
        false_negative=0.0,
        threshold=0.6,
    )
    # At s = 0.6: precision 3 / 4, recall 3 / 3, F1 = 2 * 3 / (2 * 3 + 1 + 0) = 6 / 7; IoU score
    # (0.875 + 0.8125 + 0.625) / 3 = 2.3125 / 3.
    assert (digit.precision, digit.recall, digit.f1) == (0.75, 1.0, 6 / 7)
    assert digit.iou_score == 2.3125 / 3
    assert (digit.support, digit.detections) == (3, 5)
    # Every threshold, as lrp_at reads it (the table above).
    matches = coco.evaluate(_worked_case(), 2).matches[0]
    table = {s: lrp.lrp_at(matches, s).lrp.lrp for s in (0.9, 0.8, 0.7, 0.6, 0.5)}
    assert table == {0.9: 0.75, 0.8: 0.8125, 0.7: 0.65625, 0.6: 0.59375, 0.5: 0.675}
    # Only concept 1 has ground truth: the means are its values.
    assert result.mean_optimal_lrp == 0.59375
    assert result.mean_localisation == 1.375 / 3
    assert (result.mean_false_positive, result.mean_false_negative) == (0.25, 0.0)
    assert result.nms_iou == 0.45


def test_coco_ap_of_the_worked_case() -> None:
    # AP50: ranked TP FP TP TP FP, G = 3: (precision, recall) = (1, 1/3), (1/2, 1/3),
    # (2/3, 2/3), (3/4, 1), (3/5, 1). Interpolated precision is 1 at recall 0..0.33 (34
    # points) and 3/4 at 0.34..1 (67 points): AP50 = (34 + 67 * 0.75) / 101 = 84.25 / 101.
    # (COCOeval divides by TP + FP + machine epsilon, hence approx at 1e-12.)
    result = detection.evaluate(["digit", "other"], _worked_case())
    digit, other = result.concepts
    assert digit.ap50 == pytest.approx(84.25 / 101, rel=1e-12)
    assert result.ap50 == digit.ap50
    assert digit.curve is not None
    assert digit.curve.precision == pytest.approx([1.0] * 34 + [0.75] * 67, rel=1e-12)
    # AP@[.5:.95]: at IoU .5/.55/.6 as above; at .65/.7/.75/.8 the 0.625 detection is an FP
    # (TP FP TP FP FP: 1 up to recall 1/3, 2/3 up to 2/3): (34 + 33 * 2/3) / 101 = 56 / 101;
    # at .85 only the 0.875 one is a TP: 34 / 101; at .9 and .95 none: 0.
    expected = (3 * 84.25 + 4 * 56 + 34) / 1010
    assert digit.ap == pytest.approx(expected, rel=1e-12)
    assert result.map == digit.ap
    # A concept without ground truth: no AP, no curve, no optimal LRP, no operating point.
    assert (other.support, other.detections) == (0, 1)
    assert (other.ap, other.ap50, other.curve, other.optimal_lrp) == (None, None, None, None)
    assert (other.precision, other.recall, other.f1, other.iou_score) == (None,) * 4


def test_detections_on_an_image_without_ground_truth_are_false_positives() -> None:
    # Without image 3's detection (score 0.8): s = 0.9: (0.25 + 2) / 3 = 0.75; s = 0.7:
    # (0.625 + 1) / 3 = 0.541666...; s = 0.6: 1.375 / 3 = 0.458333... (minimum: FP part 0);
    # s = 0.5: (1.375 + 1) / 4 = 0.59375. With it, 0.59375 at 0.6 (the worked case).
    alone = detection.evaluate(["digit", "other"], _worked_case(background=False)).concepts[0]
    assert alone.optimal_lrp == Lrp(
        lrp=1.375 / 3, localisation=1.375 / 3, false_positive=0.0, false_negative=0.0, threshold=0.6
    )
    assert alone.precision == 1.0
    with_background = detection.evaluate(["digit", "other"], _worked_case()).concepts[0]
    assert with_background.optimal_lrp is not None
    assert with_background.optimal_lrp.lrp == 0.59375


def test_an_image_without_any_box_changes_nothing() -> None:
    base = _worked_case()
    empty = _image([], [], [], [], [])
    padded = DetectionPredictions(images=[empty, *base.images, empty], nms_iou=base.nms_iou)
    full = evaluate(Task.DETECTION, ["digit", "other"], padded, split=EvaluatedSplit.VALIDATION)
    assert full.images == 5
    assert full.detection == detection.evaluate(["digit", "other"], base)
    assert full.concepts_without_ground_truth == ["other"]
    assert full.summary.value == 0.59375
    assert full.summary.mean_optimal_lrp == 0.59375
    Evaluation.model_validate_json(full.model_dump_json(by_alias=True))


def test_no_detection_at_all() -> None:
    # Every box is a false negative: COCO AP 0 (precision 0 at every recall), optimal LRP
    # 1.0 = "keep none" (threshold null, no TP or FP: localisation and FP part null, FN part
    # 1.0; precision null, recall 0, F1 = 2TP / (2TP + FP + FN) = 0).
    images = [
        _image([[0, 0, 10, 10]], [1], [], [], []),
        _image([[0, 0, 10, 10], [20, 20, 30, 30]], [2, 2], [], [], []),
        _image([], [], [], [], []),
    ]
    result = detection.evaluate(["a", "b", "c"], DetectionPredictions(images=images))
    assert (result.map, result.ap50) == (0.0, 0.0)
    for concept, support in zip(result.concepts[:2], (1, 2), strict=True):
        assert (concept.support, concept.detections) == (support, 0)
        assert (concept.ap, concept.ap50) == (0.0, 0.0)
        assert concept.curve is not None and concept.curve.precision == [0.0] * 101
        assert concept.optimal_lrp == Lrp(
            lrp=1.0, localisation=None, false_positive=None, false_negative=1.0, threshold=None
        )
        assert (concept.precision, concept.recall, concept.f1) == (None, 0.0, 0.0)
    assert result.concepts[2].optimal_lrp is None
    assert (result.mean_optimal_lrp, result.mean_false_negative) == (1.0, 1.0)
    assert (result.mean_localisation, result.mean_false_positive) == (None, None)
    # No image at all: nothing is defined.
    nothing = detection.evaluate(["a"], DetectionPredictions(images=[]))
    assert (nothing.map, nothing.ap50, nothing.mean_optimal_lrp) == (None, None, None)


def test_ties_go_to_the_larger_threshold() -> None:
    # G = 2 (one box on each of two images). By score: 0.9 IoU 1 (TP, 0), 0.8 FP, 0.7 IoU
    # 0.75 (TP, 0.5). LRP(0.9) = (0 + 0 + 1) / 2 = 0.5; LRP(0.8) = (0 + 1 + 1) / 3 = 2/3;
    # LRP(0.7) = (0.5 + 1 + 0) / 3 = 0.5: a tie, kept at 0.9 (fewer detections).
    images = [
        _image([[0, 0, 10, 10]], [1], [[0, 0, 10, 10], [30, 30, 40, 40]], [1, 1], [0.9, 0.8]),
        _image([[0, 0, 10, 10]], [1], [[0, 0, 10, 7.5]], [1], [0.7]),
    ]
    concept = detection.evaluate(["a"], DetectionPredictions(images=images)).concepts[0]
    assert concept.optimal_lrp == Lrp(
        lrp=0.5, localisation=0.0, false_positive=0.0, false_negative=0.5, threshold=0.9
    )
    # At 0.9: TP 1, FP 0, FN 1: P 1, R 1/2, F1 = 2 / (2 + 0 + 1) = 2/3, IoU score 1.
    assert (concept.precision, concept.recall, concept.f1, concept.iou_score) == (
        1.0,
        0.5,
        2 / 3,
        1.0,
    )


def test_iou_of_exactly_one_half_is_a_true_positive() -> None:
    # COCOeval's and vernier's rule: IoU >= 0.5 (the product page's "> 0.5" differs only
    # here). [0, 0, 10, 5] has IoU 50 / 100 = 0.5 with the box: AP50 1. Its LRP term is
    # (1 - 0.5) / 0.5 = 1, so LRP at 0.7 is (1 + 0 + 0) / 1 = 1, a tie with keeping none:
    # optimal LRP 1.0, threshold null.
    images = [_image([[0, 0, 10, 10]], [1], [[0, 0, 10, 5]], [1], [0.7])]
    result = detection.evaluate(["a"], DetectionPredictions(images=images))
    assert result.ap50 == pytest.approx(1.0, rel=1e-12)  # 1 / (1 + epsilon)
    matches = coco.evaluate(DetectionPredictions(images=images), 1).matches[0]
    assert matches.true_positive.tolist() == [True]
    assert lrp.lrp_at(matches, 0.7).lrp == Lrp(
        lrp=1.0, localisation=1.0, false_positive=0.0, false_negative=0.0, threshold=0.7
    )
    assert result.concepts[0].optimal_lrp == Lrp(
        lrp=1.0, localisation=None, false_positive=None, false_negative=1.0, threshold=None
    )


def test_bad_labels_are_refused() -> None:
    images = [_image([[0, 0, 10, 10]], [3], [], [], [])]
    with pytest.raises(ValueError, match=r"labels must lie in 1\.\.2"):
        detection.evaluate(["a", "b"], DetectionPredictions(images=images))


# --- against pycocotools and vernier ------------------------------------------------------


def synthetic(images: int, concepts: int, seed: int) -> DetectionPredictions:
    """Seeded random predictions: 0-5 boxes an image, each detected with probability 0.8 by a
    jittered box (10 % under another label), 0-3 background detections; concept ``concepts``
    never has ground truth (only background detections can carry it)."""
    rng = np.random.default_rng(seed)
    out: list[DetectionImage] = []
    for _ in range(images):
        count = int(rng.integers(0, 6))
        corner = rng.uniform(0, 200, (count, 2))
        gt = np.concatenate([corner, corner + rng.uniform(10, 60, (count, 2))], axis=1)
        gt_labels = rng.integers(1, concepts, count)
        found = rng.random(count) < 0.8
        jitter = gt[found] + rng.normal(0, 6, (int(found.sum()), 4))
        jitter = np.concatenate(
            [np.minimum(jitter[:, :2], jitter[:, 2:]), np.maximum(jitter[:, :2], jitter[:, 2:])],
            axis=1,
        )
        labels = np.where(
            rng.random(len(jitter)) < 0.9, gt_labels[found], rng.integers(1, concepts, len(jitter))
        )
        extra = int(rng.integers(0, 4))
        corner = rng.uniform(0, 200, (extra, 2))
        background = np.concatenate([corner, corner + rng.uniform(10, 60, (extra, 2))], axis=1)
        out.append(
            DetectionImage(
                gt_boxes=gt,
                gt_labels=gt_labels.astype(np.int64),
                dt_boxes=np.concatenate([jitter, background]),
                dt_labels=np.concatenate([labels, rng.integers(1, concepts + 1, extra)]).astype(
                    np.int64
                ),
                dt_scores=np.concatenate([rng.beta(5, 2, len(jitter)), rng.beta(2, 5, extra)]),
            )
        )
    return DetectionPredictions(images=out)


def test_per_category_ap_equals_cocoeval_restricted_to_the_category() -> None:
    predictions = synthetic(120, 4, seed=3)
    figures = coco.evaluate(predictions, 4)
    dataset, detections = coco.coco_inputs(predictions, 4)
    for k in range(1, 5):
        alone = coco.run_cocoeval(dataset, detections, cat_ids=[k])
        expected = [v if v > -1 else None for v in (float(s) for s in alone.stats[:2])]
        assert [figures.ap[k - 1], figures.ap50_per_category[k - 1]] == expected
    # Concept 4 has no ground truth; the others have (a test that cannot fail otherwise).
    assert figures.ap[3] is None and all(ap is not None and ap > 0 for ap in figures.ap[:3])


#: vernier's default threshold grid (ADR-0044), passed explicitly.
GRID = [i / 100 for i in range(101)]


def compare_with_vernier(
    predictions: DetectionPredictions, concepts: int
) -> list[tuple[float, float]]:
    """Per concept with ground truth: our LRP at vernier's optimal threshold equals vernier's
    oLRP and components (1e-9); our exact oLRP is <= vernier's and at most k / G below it,
    where k counts the detections of score in [g, s*), s* our threshold and g the largest grid
    point <= s*: vernier's grid keeps at g what we keep at s* plus those k detections, and each
    added detection raises LRP by at most 1 / G (an FP adds 1 to the numerator and to the
    denominator >= G; a TP lowers it). Returns (our exact oLRP, vernier's minus ours), per
    concept with ground truth."""
    dataset, detections = coco.coco_inputs(predictions, concepts)
    grid = np.array(GRID)
    report = vernier.instance.optimal_lrp(
        json.dumps(dataset).encode(), json.dumps(detections).encode(), tau_grid=GRID
    )
    figures = coco.evaluate(predictions, concepts)
    gaps: list[tuple[float, float]] = []
    for row, matches in zip(report.per_class, figures.matches, strict=True):
        ours = lrp.optimal_lrp(matches)
        if ours is None:
            assert math.isnan(row.olrp)
            continue
        if math.isnan(row.tau):
            assert row.olrp == 1.0
        else:
            at = lrp.lrp_at(matches, row.tau).lrp
            assert at.lrp == pytest.approx(row.olrp, abs=1e-9)
            assert at.localisation == pytest.approx(row.olrp_loc, abs=1e-9)
            assert at.false_positive == pytest.approx(row.olrp_fp, abs=1e-9)
            assert at.false_negative == pytest.approx(row.olrp_fn, abs=1e-9)
        exact = ours.lrp.lrp
        assert exact <= row.olrp + 1e-12
        if ours.lrp.threshold is not None:
            g = grid[grid <= ours.lrp.threshold].max()
            k = int(np.count_nonzero((matches.scores >= g) & (matches.scores < ours.lrp.threshold)))
            assert row.olrp - exact <= k / matches.ground_truth + 1e-12
        else:
            assert row.olrp == exact == 1.0
        gaps.append((exact, row.olrp - exact))
    return gaps


def shown_gaps(gaps: list[tuple[float, float]]) -> str:
    return ", ".join(f"({exact:.6f}, {gap:.2e})" for exact, gap in gaps)


def test_optimal_lrp_agrees_with_vernier_on_synthetic_predictions() -> None:
    gaps = compare_with_vernier(synthetic(300, 5, seed=1), 5)
    assert len(gaps) == 4
    print(f"\nsynthetic: (exact oLRP, vernier - exact) per concept {shown_gaps(gaps)}")
    # The exact search finds a better threshold than the grid for some concept.
    assert max(gap for _, gap in gaps) > 0
