"""Validation metrics against values worked out by hand in the comments (never by the library
under test). Notation: TP/FP true/false positive, P precision, R recall."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from kubevision_api.view import Task
from kubevision_trainer import metrics
from kubevision_trainer.data import coco
from kubevision_trainer.data.sample import Sample

# ---------------------------------------------------------------------------------------------
# Classification
# ---------------------------------------------------------------------------------------------


def test_classification_top1_accuracy_over_batches() -> None:
    evaluator = metrics.ClassificationEvaluator(3)
    # row: logits -> argmax vs label
    # [2, 1, 0]       -> 0 vs 0  right
    # [0, 3, 1]       -> 1 vs 1  right
    # [1, 0, 0.5]     -> 0 vs 2  wrong
    evaluator.update(
        torch.tensor([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [1.0, 0.0, 0.5]]),
        torch.tensor([0, 1, 2]),
    )
    # [0.1, 0.2, 0.3] -> 2 vs 1  wrong
    # [5, -1, 4]      -> 0 vs 0  right
    evaluator.update(torch.tensor([[0.1, 0.2, 0.3], [5.0, -1.0, 4.0]]), torch.tensor([1, 0]))
    result = evaluator.compute()
    # 3 right out of 5 = 0.6
    assert result.accuracy == pytest.approx(0.6, abs=1e-6)
    assert result.map is None
    assert result.ap50 is None
    assert result.concepts_without_positives == []


def test_classification_reset_and_empty() -> None:
    evaluator = metrics.ClassificationEvaluator(2)
    assert evaluator.compute().accuracy is None
    evaluator.update(torch.tensor([[0.0, 1.0]]), torch.tensor([0]))
    assert evaluator.compute().accuracy == pytest.approx(0.0, abs=1e-6)
    evaluator.reset()
    evaluator.update(torch.tensor([[0.0, 1.0]]), torch.tensor([1]))
    assert evaluator.compute().accuracy == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize(
    ("logits", "labels"),
    [
        (torch.zeros(2, 3), torch.tensor([0, 1])),  # 3 columns for 2 classes
        (torch.zeros(2, 2), torch.tensor([0, 2])),  # label out of range
        (torch.zeros(2, 2), torch.tensor([0.0, 1.0])),  # float labels
        (torch.tensor([[float("nan"), 0.0]]), torch.tensor([0])),  # diverged model
    ],
)
def test_classification_rejects_bad_input(logits: torch.Tensor, labels: torch.Tensor) -> None:
    with pytest.raises(ValueError):
        metrics.ClassificationEvaluator(2).update(logits, labels)


# ---------------------------------------------------------------------------------------------
# Tagging
# ---------------------------------------------------------------------------------------------

TAGS = ["indoor", "outdoor", "people"]
#                      indoor outdoor people
TAG_LOGITS = [
    [2.0, 0.5, -1.0],  # image 0
    [1.0, 0.0, -1.0],  # image 1
    [-1.0, -0.5, -2.0],  # image 2
    [-2.0, 3.0, -3.0],  # image 3
]
TAG_TARGETS = [
    [1, 0, 0],  # image 0
    [0, 1, 0],  # image 1
    [1, 0, 0],  # image 2
    [0, 0, 0],  # image 3: all-negative ("without concept")
]


def test_tagging_hand_computed_ap_and_accuracy() -> None:
    # AP = sum_n (R_n - R_{n-1}) P_n, thresholds at each score, highest first.
    #
    # indoor, 2 positives; ranked by logit: img0 (2, pos), img1 (1, neg), img2 (-1, pos),
    # img3 (-2, neg):
    #   n=1 TP1 FP0 P=1   R=1/2   -> (1/2 - 0) * 1   = 1/2
    #   n=2 TP1 FP1 P=1/2 R=1/2   -> 0
    #   n=3 TP2 FP1 P=2/3 R=1     -> (1 - 1/2) * 2/3 = 1/3
    #   n=4 TP2 FP2 P=1/2 R=1     -> 0
    #   AP = 1/2 + 1/3 = 5/6
    # outdoor, 1 positive; ranked: img3 (3, neg), img0 (0.5, neg), img1 (0, pos), img2 (-0.5):
    #   n=1 P=0 R=0; n=2 P=0 R=0; n=3 TP1 FP2 P=1/3 R=1 -> 1 * 1/3; n=4 -> 0
    #   AP = 1/3
    # people: no positive -> left out and listed.
    # mAP = (5/6 + 1/3) / 2 = (5/6 + 2/6) / 2 = 7/12
    #
    # Accuracy: predicted present iff sigmoid(logit) >= 0.5 iff logit >= 0.
    #   indoor  pred [1, 1, 0, 0] vs [1, 0, 1, 0] -> 2 right
    #   outdoor pred [1, 1, 0, 1] vs [0, 1, 0, 0] -> 2 right (logit 0 -> 0.5 -> present)
    #   people  pred [0, 0, 0, 0] vs [0, 0, 0, 0] -> 4 right
    #   accuracy = 8 / 12 = 2/3
    evaluator = metrics.TaggingEvaluator(TAGS)
    logits = torch.tensor(TAG_LOGITS)
    targets = torch.tensor(TAG_TARGETS, dtype=torch.float32)
    evaluator.update(logits[:2], targets[:2])
    evaluator.update(logits[2:], targets[2:])
    result = evaluator.compute()
    assert result.map == pytest.approx(7 / 12, abs=1e-6)
    assert result.accuracy == pytest.approx(2 / 3, abs=1e-6)
    assert result.ap50 is None
    assert result.concepts_without_positives == ["people"]


def test_tagging_accepts_bool_targets_and_reset() -> None:
    evaluator = metrics.TaggingEvaluator(TAGS)
    evaluator.update(torch.zeros(1, 3), torch.ones(1, 3))
    evaluator.reset()
    evaluator.update(torch.tensor(TAG_LOGITS), torch.tensor(TAG_TARGETS, dtype=torch.bool))
    result = evaluator.compute()
    # same numbers as above: the first batch was forgotten
    assert result.map == pytest.approx(7 / 12, abs=1e-6)
    assert result.accuracy == pytest.approx(2 / 3, abs=1e-6)


def test_tagging_without_any_positive_has_no_map() -> None:
    evaluator = metrics.TaggingEvaluator(["a", "b"])
    assert evaluator.compute() == metrics.EvalResult(concepts_without_positives=["a", "b"])
    # two all-negative images: logits [1, -1] and [-1, -1]
    evaluator.update(torch.tensor([[1.0, -1.0], [-1.0, -1.0]]), torch.zeros(2, 2))
    result = evaluator.compute()
    assert result.map is None
    assert result.concepts_without_positives == ["a", "b"]
    # predicted [1, 0] and [0, 0] vs all 0: 3 of 4 pairs right
    assert result.accuracy == pytest.approx(0.75, abs=1e-6)


def test_tagging_rejects_non_binary_targets() -> None:
    with pytest.raises(ValueError, match="0 and 1"):
        metrics.TaggingEvaluator(["a"]).update(torch.zeros(1, 1), torch.full((1, 1), 0.5))


# ---------------------------------------------------------------------------------------------
# Detection
# ---------------------------------------------------------------------------------------------
#
# A COCO file whose category ids are 1, 3, 7. The View's concepts sorted by name give the class
# index, and detection label = index + 1:
#   "cat"   (COCO 3) -> index 0 -> label 1
#   "dog"   (COCO 7) -> index 1 -> label 2
#   "zebra" (COCO 1) -> index 2 -> label 3   (no annotation at all)
# Images, 100 x 100 pixels:
#   a.jpg: cat g1 xywh [10, 10, 20, 20] = xyxy [10, 10, 30, 30]
#          cat g2 xywh [50, 50, 25, 25] = xyxy [50, 50, 75, 75]   (area 625)
#   b.jpg: dog g3 xywh [5, 5, 40, 30]   = xyxy [5, 5, 45, 35]
#   c.jpg: no annotation

CONCEPTS = ["cat", "dog", "zebra"]
CAT, DOG, ZEBRA = 1, 2, 3
COCO_FILE = {
    "images": [
        {"id": 10, "file_name": "a.jpg", "width": 100, "height": 100},
        {"id": 20, "file_name": "b.jpg", "width": 100, "height": 100},
        {"id": 30, "file_name": "c.jpg", "width": 100, "height": 100},
    ],
    "categories": [
        {"id": 1, "name": "zebra"},
        {"id": 3, "name": "cat"},
        {"id": 7, "name": "dog"},
    ],
    "annotations": [
        {"id": 1, "image_id": 10, "category_id": 3, "bbox": [10, 10, 20, 20], "area": 400,
         "iscrowd": 0},
        {"id": 2, "image_id": 10, "category_id": 3, "bbox": [50, 50, 25, 25], "area": 625,
         "iscrowd": 0},
        {"id": 3, "image_id": 20, "category_id": 7, "bbox": [5, 5, 40, 30], "area": 1200,
         "iscrowd": 0},
    ],
}  # fmt: skip


def _target(sample: Sample) -> dict[str, torch.Tensor]:
    """A reader sample as a detector target: 0-based class index + 1 (0 is the background),
    as the trainer's dataset (data/torchdata.py) builds it."""
    return {
        "boxes": torch.tensor(sample.boxes, dtype=torch.float32).reshape(-1, 4),
        "labels": torch.tensor(sample.box_labels, dtype=torch.int64) + 1,
    }


@pytest.fixture
def coco_targets(tmp_path: Path) -> dict[str, dict[str, torch.Tensor]]:
    """The trainer's own path: COCO file -> reader -> targets, by file name."""
    path = tmp_path / "annotations.json"
    path.write_text(json.dumps(COCO_FILE))
    read = coco.read(path.as_uri(), Task.DETECTION, sorted(CONCEPTS))
    # c.jpg has no box: a background image, which validation keeps; the evaluator must count
    # detections on it as false positives.
    assert not read.skipped
    return {sample.path: _target(sample) for sample in read.samples}


def _output(
    boxes: list[list[float]], labels: list[int], scores: list[float]
) -> dict[str, torch.Tensor]:
    return {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "labels": torch.tensor(labels, dtype=torch.int64),
        "scores": torch.tensor(scores, dtype=torch.float32),
    }


NOTHING = _output([], [], [])
# a.jpg: p1 = g1 exactly (IoU 1), score 0.9.
#        p2 = [50, 50, 75, 68], inside g2: 25 x 18 = 450 / 625 -> IoU 0.72, score 0.8
#        (a TP at IoU thresholds 0.50..0.70, a FP at 0.75..0.95).
OUT_A = _output([[10, 10, 30, 30], [50, 50, 75, 68]], [CAT, CAT], [0.9, 0.8])
# b.jpg: p4 = g3 exactly, score 0.95; and a zebra detection, score 0.6, where no zebra exists.
OUT_B = _output([[5, 5, 45, 35], [60, 60, 90, 90]], [DOG, ZEBRA], [0.95, 0.6])
# c.jpg: p3, a cat detection on the image without ground truth, score 0.85.
OUT_C_FALSE_POSITIVE = _output([[0, 0, 20, 20]], [CAT], [0.85])


def test_coco_labels_follow_sorted_concept_names(
    coco_targets: dict[str, dict[str, torch.Tensor]],
) -> None:
    # COCO 3 ("cat") -> 1, COCO 7 ("dog") -> 2, no zebra; boxes turned to xyxy
    assert coco_targets["a.jpg"]["labels"].tolist() == [CAT, CAT]
    assert coco_targets["a.jpg"]["boxes"].tolist() == [[10, 10, 30, 30], [50, 50, 75, 75]]
    assert coco_targets["b.jpg"]["labels"].tolist() == [DOG]
    assert coco_targets["b.jpg"]["boxes"].tolist() == [[5, 5, 45, 35]]
    assert coco_targets["c.jpg"]["labels"].tolist() == []


def test_detection_hand_computed_coco_ap(
    coco_targets: dict[str, dict[str, torch.Tensor]],
) -> None:
    # COCOeval, per category and IoU threshold t in {0.50, 0.55, ..., 0.95}: rank detections by
    # score, P made non-increasing from the right, read at the 101 recall points 0, 0.01, .., 1
    # (the first detection whose R >= the point; 0 past the last R), averaged.
    #
    # cat (2 GT): p1 (0.9), p2 (0.8)
    #   t <= 0.70 (5 thresholds): TP, TP -> R [1/2, 1], P [1, 1] -> P = 1 at all 101 points
    #             AP = 1
    #   t >= 0.75 (5 thresholds): TP, FP -> R [1/2, 1/2], P [1, 1/2] -> P = 1 at the 51 points
    #             0.00..0.50, 0 at the 50 points above -> AP = 51/101
    #   AP@[.5:.95] = (5 * 1 + 5 * 51/101) / 10 = (505 + 255) / 1010 = 760/1010 = 76/101
    #   AP50 = 1
    # dog (1 GT): p4 exact -> AP = 1 at every t.
    # zebra: no GT -> COCOeval gives -1 and leaves it out of the mean; its detection does not
    #   count as a 0.
    # mAP  = (76/101 + 1) / 2 = 177/202 = 0.876237...
    # AP50 = (1 + 1) / 2 = 1
    evaluator = metrics.DetectionEvaluator(len(CONCEPTS))
    evaluator.update([OUT_A, OUT_B], [coco_targets["a.jpg"], coco_targets["b.jpg"]])
    # c.jpg, without ground truth and without a detection, changes nothing.
    evaluator.update([NOTHING], [coco_targets["c.jpg"]])
    result = evaluator.compute()
    assert result.map == pytest.approx(177 / 202, abs=1e-6)
    assert result.ap50 == pytest.approx(1.0, abs=1e-6)
    assert result.accuracy is None
    assert result.concepts_without_positives == []


def test_detection_false_positive_on_image_without_ground_truth(
    coco_targets: dict[str, dict[str, torch.Tensor]],
) -> None:
    # c.jpg is registered although it has no GT, so p3 (0.85) counts as a cat FP.
    # cat ranking: p1 (0.9), p3 (0.85), p2 (0.8)
    #   t <= 0.70: TP, FP, TP -> R [1/2, 1/2, 1], P [1, 1/2, 2/3]
    #              non-increasing from the right: P [1, 2/3, 2/3]
    #              points 0.00..0.50 (51) -> first R >= point is n=1 -> 1
    #              points 0.51..1.00 (50) -> n=3 -> 2/3
    #              AP = (51 + 50 * 2/3) / 101 = (153/3 + 100/3) / 101 = 253/303
    #   t >= 0.75: TP, FP, FP -> R [1/2, 1/2, 1/2], P [1, 1/2, 1/3]
    #              51 points -> 1, 50 points -> 0 -> AP = 51/101 = 153/303 (as before: the
    #              extra FP comes after P was read at R = 1/2)
    #   AP@[.5:.95] = (5 * 253/303 + 5 * 153/303) / 10 = 406/606 = 203/303
    #   AP50 = 253/303
    # dog: 1; zebra: left out.
    # mAP  = (203/303 + 1) / 2 = 506/606 = 253/303 = 0.834983...
    # AP50 = (253/303 + 1) / 2 = 556/606 = 278/303 = 0.917491...
    evaluator = metrics.DetectionEvaluator(len(CONCEPTS))
    evaluator.update([OUT_A], [coco_targets["a.jpg"]])
    evaluator.update([OUT_B, OUT_C_FALSE_POSITIVE], [coco_targets["b.jpg"], coco_targets["c.jpg"]])
    result = evaluator.compute()
    assert result.map == pytest.approx(253 / 303, abs=1e-6)
    assert result.ap50 == pytest.approx(278 / 303, abs=1e-6)


def test_detection_without_any_prediction_is_zero(
    coco_targets: dict[str, dict[str, torch.Tensor]],
) -> None:
    # GT exists (cat, dog), no detection: P = 0 at every recall point -> 0.0 (docs/trainer.md)
    evaluator = metrics.DetectionEvaluator(len(CONCEPTS))
    targets = [coco_targets[name] for name in ("a.jpg", "b.jpg", "c.jpg")]
    evaluator.update([NOTHING] * 3, targets)
    result = evaluator.compute()
    assert result.map == pytest.approx(0.0, abs=1e-6)
    assert result.ap50 == pytest.approx(0.0, abs=1e-6)


def test_detection_without_ground_truth_is_none_never_minus_one(
    coco_targets: dict[str, dict[str, torch.Tensor]],
) -> None:
    evaluator = metrics.DetectionEvaluator(len(CONCEPTS))
    assert evaluator.compute() == metrics.EvalResult()  # nothing seen
    # only c.jpg: no GT anywhere; COCOeval runs on the FP and reports -1 for every category
    evaluator.update([OUT_C_FALSE_POSITIVE], [coco_targets["c.jpg"]])
    result = evaluator.compute()
    assert result.map is None
    assert result.ap50 is None
    evaluator.reset()
    evaluator.update([NOTHING], [coco_targets["c.jpg"]])
    assert evaluator.compute() == metrics.EvalResult()


def test_detection_reset_forgets_images(
    coco_targets: dict[str, dict[str, torch.Tensor]],
) -> None:
    evaluator = metrics.DetectionEvaluator(len(CONCEPTS))
    evaluator.update([NOTHING], [coco_targets["a.jpg"]])
    evaluator.reset()
    evaluator.update([OUT_B], [coco_targets["b.jpg"]])
    # dog alone, exact match: 1 at every threshold; zebra left out
    assert evaluator.compute().map == pytest.approx(1.0, abs=1e-6)


def test_detection_keeps_stdout_clean(
    coco_targets: dict[str, dict[str, torch.Tensor]], capsys: pytest.CaptureFixture[str]
) -> None:
    evaluator = metrics.DetectionEvaluator(len(CONCEPTS))
    evaluator.update([OUT_A], [coco_targets["a.jpg"]])
    evaluator.compute()
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize(
    "output",
    [
        _output([[0, 0, 1, 1]], [0], [0.5]),  # background label
        _output([[0, 0, 1, 1]], [4], [0.5]),  # beyond C = 3
        _output([[0, 0, 1, 1]], [1], [0.5, 0.4]),  # one box, two scores
        {"boxes": torch.zeros(1, 5), "labels": torch.tensor([1]), "scores": torch.ones(1)},
    ],
)
def test_detection_rejects_bad_output(
    output: dict[str, torch.Tensor], coco_targets: dict[str, dict[str, torch.Tensor]]
) -> None:
    with pytest.raises(ValueError):
        metrics.DetectionEvaluator(3).update([output], [coco_targets["a.jpg"]])


def test_detection_rejects_mismatched_batch(
    coco_targets: dict[str, dict[str, torch.Tensor]],
) -> None:
    with pytest.raises(ValueError, match="1 outputs for 2 targets"):
        metrics.DetectionEvaluator(3).update(
            [NOTHING], [coco_targets["a.jpg"], coco_targets["b.jpg"]]
        )


# ---------------------------------------------------------------------------------------------
# Factory
# ---------------------------------------------------------------------------------------------


def test_evaluator_for_each_task() -> None:
    classification = metrics.evaluator_for(Task.CLASSIFICATION, CONCEPTS)
    assert isinstance(classification, metrics.ClassificationEvaluator)
    assert classification.num_classes == 3
    tagging = metrics.evaluator_for(Task.TAGGING, CONCEPTS)
    assert isinstance(tagging, metrics.TaggingEvaluator)
    assert tagging.concepts == CONCEPTS
    detection = metrics.evaluator_for(Task.DETECTION, CONCEPTS)
    assert isinstance(detection, metrics.DetectionEvaluator)
    assert detection.num_classes == 3
