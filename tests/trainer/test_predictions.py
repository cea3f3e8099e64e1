"""The validation evaluators' ``predictions()`` (issue 12): what each keeps, in the order seen,
and the merge of ranks' shares, which must give the single-process order. Also the sharded
pass of one process keeping them (``sharded_eval.evaluate(keep_predictions=True)``) on a real
model and DataLoader."""

from __future__ import annotations

import contextlib
import functools

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from kubevision_api.evaluation import EvaluatedSplit
from kubevision_api.modelversion import ImageResizer
from kubevision_api.view import Task
from kubevision_trainer import metrics, models, presets, scoring, sharded_eval
from kubevision_trainer.data.torchdata import ValidationBatchSampler
from kubevision_trainer.evaluation.predictions import (
    ClassificationPredictions,
    DetectionPredictions,
    TaggingPredictions,
)

LOGITS = torch.tensor([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [1.0, 0.0, 0.5], [0.1, 0.2, 0.3]])
LABELS = torch.tensor([0, 1, 2, 1])


def test_classification_predictions_keep_logits_and_labels_in_order() -> None:
    evaluator = metrics.ClassificationEvaluator(3)
    evaluator.update(LOGITS[:3], LABELS[:3])
    evaluator.update(LOGITS[3:], LABELS[3:])
    kept = evaluator.predictions()
    assert isinstance(kept, ClassificationPredictions)
    assert kept.logits.dtype == np.float64 and kept.labels.dtype == np.int64
    np.testing.assert_array_equal(kept.logits, LOGITS.double().numpy())
    np.testing.assert_array_equal(kept.labels, [0, 1, 2, 1])
    # 0 right, 1 right, 2 wrong (argmax 0), 1 wrong (argmax 2): the counters agree.
    assert evaluator.compute().accuracy == 0.5
    evaluator.reset()
    empty = evaluator.predictions()
    assert empty.logits.shape == (0, 3) and empty.labels.shape == (0,)


def test_classification_merge_gives_the_single_process_order() -> None:
    single = metrics.ClassificationEvaluator(3)
    single.update(LOGITS, LABELS)
    rank0, rank1 = metrics.ClassificationEvaluator(3), metrics.ClassificationEvaluator(3)
    rank0.update(LOGITS[:1], LABELS[:1])
    rank0.update(LOGITS[1:2], LABELS[1:2])
    rank1.update(LOGITS[2:], LABELS[2:])
    merged = metrics.ClassificationEvaluator(3)
    merged.merge(rank0)
    merged.merge(rank1)
    np.testing.assert_array_equal(merged.predictions().logits, single.predictions().logits)
    np.testing.assert_array_equal(merged.predictions().labels, [0, 1, 2, 1])
    assert merged.compute() == single.compute()


def test_tagging_predictions_and_merge() -> None:
    targets = torch.tensor([[1, 0], [0, 0], [1, 1]], dtype=torch.float32)
    logits = torch.tensor([[0.5, -1.0], [-2.0, 0.25], [3.0, 1.5]])
    rank0, rank1 = metrics.TaggingEvaluator(["a", "b"]), metrics.TaggingEvaluator(["a", "b"])
    rank0.update(logits[:2], targets[:2])
    rank1.update(logits[2:], targets[2:])
    merged = metrics.TaggingEvaluator(["a", "b"])
    merged.merge(rank0)
    merged.merge(rank1)
    kept = merged.predictions()
    assert isinstance(kept, TaggingPredictions)
    np.testing.assert_array_equal(kept.logits, logits.double().numpy())
    # An image without any concept is an all-False row.
    np.testing.assert_array_equal(kept.targets, [[True, False], [False, False], [True, True]])
    assert metrics.TaggingEvaluator(["a", "b"]).predictions().targets.shape == (0, 2)


def _detection(
    boxes: list[list[float]], labels: list[int], scores: list[float] | None
) -> dict[str, torch.Tensor]:
    out = {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "labels": torch.tensor(labels, dtype=torch.int64),
    }
    if scores is not None:
        out["scores"] = torch.tensor(scores)
    return out


def test_detection_predictions_are_detection_images_in_order() -> None:
    first = (
        _detection([[0, 0, 10, 10]], [1], [0.9]),
        _detection([[1, 1, 9, 9]], [1], None),
    )
    # An image without any box, and a detection on it.
    second = (_detection([[5, 5, 8, 8]], [2], [0.25]), _detection([], [], None))
    rank0, rank1 = metrics.DetectionEvaluator(2), metrics.DetectionEvaluator(2)
    rank0.update([first[0]], [first[1]])
    rank1.update([second[0]], [second[1]])
    merged = metrics.DetectionEvaluator(2)
    merged.merge(rank0)
    merged.merge(rank1)
    kept = merged.predictions()
    assert isinstance(kept, DetectionPredictions)
    assert kept.nms_iou is None and len(kept.images) == 2
    a, b = kept.images
    np.testing.assert_array_equal(a.gt_boxes, [[1, 1, 9, 9]])
    np.testing.assert_array_equal(a.dt_boxes, [[0, 0, 10, 10]])
    np.testing.assert_array_equal(a.dt_scores, [np.float32(0.9)])
    assert a.dt_labels.tolist() == [1] and a.gt_labels.tolist() == [1]
    assert b.gt_boxes.shape == (0, 4) and b.gt_labels.shape == (0,)
    assert b.dt_labels.tolist() == [2] and b.dt_scores.dtype == np.float64


def test_sharded_pass_keeps_the_predictions_of_a_real_model() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    # uint8 pixels, as the recipes deliver them; the pass converts them (presets.model_input).
    images = torch.randint(0, 256, (7, 3, 2, 2), dtype=torch.uint8)
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0])
    loader: DataLoader[tuple[torch.Tensor, ...]] = DataLoader(
        TensorDataset(images, labels), batch_sampler=ValidationBatchSampler(7, 3, 0, 1)
    )
    common = {
        "task": Task.CLASSIFICATION,
        "concepts": ["a", "b", "c"],
        "seed": 1,
        "to_device": functools.partial(
            sharded_eval.to_device, Task.CLASSIFICATION, torch.device("cpu"), torch.float32
        ),
        "autocast": contextlib.nullcontext,
    }
    plain = sharded_eval.evaluate(model, loader, **common)  # type: ignore[arg-type]
    assert plain.predictions is None
    kept = sharded_eval.evaluate(model, loader, keep_predictions=True, **common)  # type: ignore[arg-type]
    assert (kept.loss, kept.result) == (plain.loss, plain.result)
    assert isinstance(kept.predictions, ClassificationPredictions)
    with torch.no_grad():
        expected = model(presets.model_input(Task.CLASSIFICATION, images, torch.float32))
        expected = expected.double().numpy()
    np.testing.assert_allclose(kept.predictions.logits, expected, rtol=1e-6)
    np.testing.assert_array_equal(kept.predictions.labels, labels.numpy())
    right = int((expected.argmax(axis=1) == labels.numpy()).sum())
    assert kept.result.accuracy == right / 7


def test_nms_iou_of_each_detector_kind() -> None:
    size = ImageResizer(width=64, height=64)
    # torchvision's defaults: R-CNN box NMS 0.5, RetinaNet 0.5, FCOS 0.6, SSDlite 0.55.
    for architecture, expected in (
        ("fasterrcnn_mobilenet_v3_large_320_fpn", 0.5),
        ("ssdlite320_mobilenet_v3_large", 0.55),
    ):
        model = models.build(architecture, Task.DETECTION, 2, size)
        assert models.nms_iou(model) == expected, architecture
    assert models.nms_iou(nn.Linear(2, 2)) is None


def test_an_epoch_evaluator_keeps_no_classification_logits() -> None:
    evaluator = metrics.evaluator_for(Task.CLASSIFICATION, ["a", "b", "c"], keep_predictions=False)
    evaluator.update(LOGITS, LABELS)
    assert evaluator.compute().accuracy == 0.5
    assert isinstance(evaluator, metrics.ClassificationEvaluator) and evaluator._logits == []
    with pytest.raises(ValueError, match="keeps no predictions"):
        evaluator.predictions()


def test_score_a_plain_model_as_kubevision_evaluate_does() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3)).double()
    images = torch.randint(0, 256, (7, 3, 2, 2), dtype=torch.uint8)
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0])
    loader: DataLoader[tuple[torch.Tensor, ...]] = DataLoader(
        TensorDataset(images, labels), batch_sampler=ValidationBatchSampler(7, 3, 0, 1)
    )
    scored = scoring.score(
        model,
        loader,
        task=Task.CLASSIFICATION,
        concepts=["a", "b", "c"],
        split=EvaluatedSplit.DATASET,
        model_version="ns/mv",
    )
    with torch.no_grad():
        # Run in the model's own dtype (float64); the validation pass keeps logits as float32.
        inputs = presets.model_input(Task.CLASSIFICATION, images, torch.float64)
        expected = model(inputs).float().double().numpy()
    assert isinstance(scored.predictions, ClassificationPredictions)
    np.testing.assert_allclose(scored.predictions.logits, expected, rtol=1e-6)
    evaluation = scored.evaluation
    assert evaluation is not None and evaluation.classification is not None
    assert (evaluation.split, evaluation.images, evaluation.model_version) == (
        EvaluatedSplit.DATASET,
        7,
        "ns/mv",
    )
    right = int((expected.argmax(axis=1) == labels.numpy()).sum())
    assert evaluation.classification.accuracy == scored.result.accuracy == right / 7
    assert sum(map(sum, evaluation.classification.confusion_matrix)) == 7
