"""Validation metrics of the three tasks (docs/trainer.md, "Metrics"), as thin wrappers around kept
libraries: pycocotools' ``COCOeval`` for detection, scikit-learn's
``average_precision_score`` for tagging. No average precision is computed here by hand.

Every evaluator follows the same cycle: ``update`` once per validation batch (tensors may live on
any device; they are copied to the CPU at once, so no GPU memory is held), ``compute`` at the end
of the epoch, ``reset`` before the next one; ``predictions`` gives what was seen in the shapes
of ``evaluation.predictions``, for the final evaluation (docs/metrics.md). ``compute`` never
returns the ``-1`` placeholder that COCOeval uses for "no ground truth": a metric that cannot
be defined is ``None``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import torch
from sklearn.metrics import average_precision_score

from kubevision_api.view import Task
from kubevision_trainer.evaluation import coco
from kubevision_trainer.evaluation.predictions import (
    ClassificationPredictions,
    DetectionImage,
    DetectionPredictions,
    Predictions,
    TaggingPredictions,
)

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

#: Tagging: a concept is predicted present when sigmoid(logit) reaches this (docs/trainer.md).
TAGGING_THRESHOLD = 0.5


@dataclass(frozen=True)
class EvalResult:
    """Metrics of one validation pass; ``None`` where the task has none or it is undefined.

    Attributes:
        accuracy: classification: top-1; tagging: per (image, concept) at 0.5; detection: None.
        map: tagging: macro mean of per-concept AP; detection: COCO mAP@[.5:.95].
        ap50: detection: COCO AP at IoU 0.5; None for the other tasks.
        concepts_without_positives: tagging: concepts without a validation positive, left out
            of ``map`` (names, index order). Empty for the other tasks.
    """

    accuracy: float | None = None
    map: float | None = None
    ap50: float | None = None
    concepts_without_positives: list[str] = field(default_factory=list)


def _check_logits(logits: torch.Tensor, num_classes: int) -> None:
    if logits.ndim != 2 or logits.shape[1] != num_classes:
        raise ValueError(f"logits must have shape (B, {num_classes}); got {tuple(logits.shape)}")
    if not logits.is_floating_point():
        raise ValueError(f"logits must be a float tensor; got {logits.dtype}")
    # A diverged model yields NaN; argmax and sklearn would turn it into a silent number or a
    # less clear error later on.
    if not bool(torch.isfinite(logits).all()):
        raise ValueError("logits contain NaN or infinity")


class ClassificationEvaluator:
    """Top-1 accuracy: the share of images whose highest logit is at their label.

    Ties between logits go to the lowest class index (``torch.argmax``).
    """

    def __init__(self, num_classes: int, *, keep_predictions: bool = True) -> None:
        """Args:
        num_classes: C, the number of concepts (>= 1).
        keep_predictions: keep every image's logits and label for ``predictions()``; without,
            two counters suffice for top-1 and nothing grows with the validation set (nor
            travels in a sharded validation's gather: N x C float64 a pass).
        """
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1; got {num_classes}")
        self.num_classes = num_classes
        self.keep_predictions = keep_predictions
        self.reset()

    def reset(self) -> None:
        """Forget every batch seen."""
        self._correct = 0
        self._total = 0
        self._logits: list[torch.Tensor] = []
        self._labels: list[torch.Tensor] = []

    def update(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        """Add one batch.

        Args:
            logits: ``(B, C)`` float, the network's raw outputs.
            labels: ``(B,)`` int64, class indices in ``0..C-1``.
        """
        _check_logits(logits, self.num_classes)
        if labels.shape != (logits.shape[0],) or labels.dtype != torch.int64:
            raise ValueError(
                f"labels must be int64 of shape ({logits.shape[0]},); "
                f"got {labels.dtype} {tuple(labels.shape)}"
            )
        labels = labels.detach().cpu()
        if labels.numel() and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise ValueError(f"labels must lie in 0..{self.num_classes - 1}")
        logits = logits.detach().cpu()
        predicted = logits.argmax(dim=1)
        self._correct += int((predicted == labels).sum())
        self._total += int(labels.numel())
        if self.keep_predictions:
            self._logits.append(logits.to(torch.float64))
            self._labels.append(labels.clone())

    def merge(self, other: ClassificationEvaluator) -> None:
        """Add the batches ``other`` has seen (another rank's share of the validation set,
        which comes after this one's in the validation order)."""
        self._correct += other._correct
        self._total += other._total
        self._logits.extend(other._logits)
        self._labels.extend(other._labels)

    def predictions(self) -> ClassificationPredictions:
        """Every image's logits and label, in the order seen (merged shares in rank order).

        Raises:
            ValueError: the evaluator was made without ``keep_predictions``.
        """
        if not self.keep_predictions:
            raise ValueError("this evaluator keeps no predictions (keep_predictions=False)")
        if not self._logits:
            return ClassificationPredictions(
                logits=np.zeros((0, self.num_classes)), labels=np.zeros(0, dtype=np.int64)
            )
        return ClassificationPredictions(
            logits=torch.cat(self._logits).numpy(), labels=torch.cat(self._labels).numpy()
        )

    def compute(self) -> EvalResult:
        """Top-1 accuracy over every image seen; None when no image was seen."""
        accuracy = self._correct / self._total if self._total else None
        return EvalResult(accuracy=accuracy)


class TaggingEvaluator:
    """Multi-label metrics (docs/trainer.md, "Metrics").

    - accuracy: mean over every (image, concept) pair of
      ``(sigmoid(logit) >= 0.5) == target``; a rough indicator.
    - map: macro mean, over the concepts with at least one validation positive, of
      ``sklearn.metrics.average_precision_score``, which is the step sum
      ``AP = sum_n (R_n - R_{n-1}) * P_n`` over decreasing score thresholds (no interpolation;
      scikit-learn's documentation of ``average_precision_score``). Concepts without a positive
      have no defined AP: they are left out and named in ``concepts_without_positives``; ``map``
      is None when no concept remains.

    Images without any concept (rows of zeros) are valid all-negative examples.
    """

    def __init__(self, concepts: Sequence[str]) -> None:
        """Args:
        concepts: concept names in class-index order (C >= 1).
        """
        if not concepts:
            raise ValueError("concepts must not be empty")
        self.concepts = list(concepts)
        self.reset()

    def reset(self) -> None:
        """Forget every batch seen."""
        self._logits: list[torch.Tensor] = []
        self._targets: list[torch.Tensor] = []

    def update(self, logits: torch.Tensor, targets: torch.Tensor) -> None:
        """Add one batch.

        Args:
            logits: ``(B, C)`` float, pre-sigmoid scores.
            targets: ``(B, C)`` float or bool, 1 where the concept is present, else 0.
        """
        _check_logits(logits, len(self.concepts))
        if targets.shape != logits.shape:
            raise ValueError(
                f"targets must have the logits' shape {tuple(logits.shape)}; "
                f"got {tuple(targets.shape)}"
            )
        targets = targets.detach().cpu()
        if not bool(((targets == 0) | (targets == 1)).all()):
            raise ValueError("targets must hold only 0 and 1")
        # float64 keeps distinct logits distinct for the ranking that AP depends on.
        self._logits.append(logits.detach().cpu().to(torch.float64))
        self._targets.append(targets.to(torch.bool))

    def merge(self, other: TaggingEvaluator) -> None:
        """Append the batches ``other`` has seen (another rank's share, which comes after
        this one's in the validation order)."""
        self._logits.extend(other._logits)
        self._targets.extend(other._targets)

    def predictions(self) -> TaggingPredictions:
        """Every image's logits and targets, in the order seen (merged shares in rank order)."""
        if not self._logits:
            count = len(self.concepts)
            return TaggingPredictions(
                logits=np.zeros((0, count)), targets=np.zeros((0, count), dtype=np.bool_)
            )
        return TaggingPredictions(
            logits=torch.cat(self._logits).numpy(), targets=torch.cat(self._targets).numpy()
        )

    def compute(self) -> EvalResult:
        """Accuracy at 0.5 and mAP over every image seen (see the class docstring)."""
        if not self._logits:
            return EvalResult(concepts_without_positives=list(self.concepts))
        logits = torch.cat(self._logits)
        targets = torch.cat(self._targets)
        predicted = torch.sigmoid(logits) >= TAGGING_THRESHOLD
        accuracy = float((predicted == targets).to(torch.float64).mean())

        scores = logits.numpy()
        truth = targets.numpy()
        without: list[str] = []
        precisions: list[float] = []
        for index, name in enumerate(self.concepts):
            if not truth[:, index].any():
                without.append(name)
                continue
            # AP only depends on the order of the scores, so logits serve as well as
            # probabilities, and unlike float sigmoid outputs they do not saturate into ties.
            precisions.append(float(average_precision_score(truth[:, index], scores[:, index])))
        mean_ap = float(np.mean(precisions)) if precisions else None
        return EvalResult(accuracy=accuracy, map=mean_ap, concepts_without_positives=without)


def _boxes(value: torch.Tensor, where: str) -> FloatArray:
    if value.ndim != 2 or value.shape[1] != 4:
        raise ValueError(f"{where}: boxes must have shape (K, 4); got {tuple(value.shape)}")
    # A copy: on the CPU .numpy() shares memory, and a caller may reuse its buffers.
    return value.detach().cpu().to(torch.float64, copy=True).numpy()


def _vector(value: torch.Tensor, rows: int, where: str) -> torch.Tensor:
    if value.shape != (rows,):
        raise ValueError(f"{where}: expected shape ({rows},); got {tuple(value.shape)}")
    return value.detach().cpu()


class DetectionEvaluator:
    """COCO box metrics, computed by pycocotools' ``COCOeval`` (iouType ``bbox``).

    Definitions are COCO's detection evaluation (cocodataset.org/#detection-eval, as
    implemented by ``COCOeval.evaluate/accumulate/summarize``): per category and IoU threshold
    in 0.50:0.05:0.95, detections of every image are ranked by score (at most 100 per image),
    greedily matched to unmatched ground truth with IoU >= threshold, and precision, made
    non-increasing, is read at the 101 recall points 0:0.01:1 (0 past the highest recall) and
    averaged. ``map`` is ``stats[0]``, the mean over IoU thresholds and over the categories that
    have ground truth (AP@[.5:.95], area all, maxDets 100); ``ap50`` is ``stats[1]``, at IoU 0.5.

    Categories without validation ground truth get COCOeval's -1 and are left out of its mean;
    with no ground truth at all the metrics are None, never -1. With ground truth but no
    detection at all, both are 0.0 (docs/trainer.md, "Metrics"). Detections on images without
    ground truth count as false positives: every image seen is registered in the ground truth.
    """

    def __init__(self, num_classes: int) -> None:
        """Args:
        num_classes: C, the number of concepts; detection labels are ``1..C`` (0 is the
            background of torchvision's detectors).
        """
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1; got {num_classes}")
        self.num_classes = num_classes
        self.reset()

    def reset(self) -> None:
        """Forget every image seen."""
        self._images: list[DetectionImage] = []

    def _labels(self, value: torch.Tensor, rows: int, where: str) -> IntArray:
        labels = _vector(value, rows, where)
        if labels.dtype != torch.int64:
            raise ValueError(f"{where}: labels must be int64; got {labels.dtype}")
        if rows and (labels.min() < 1 or labels.max() > self.num_classes):
            raise ValueError(f"{where}: labels must lie in 1..{self.num_classes}")
        return labels.numpy().copy()

    def update(
        self,
        outputs: Sequence[Mapping[str, torch.Tensor]],
        targets: Sequence[Mapping[str, torch.Tensor]],
    ) -> None:
        """Add one batch of images.

        Args:
            outputs: per image, a torchvision detector's eval-mode output: ``boxes`` ``(K, 4)``
                float ``x1, y1, x2, y2`` in pixels, ``labels`` ``(K,)`` int64 in ``1..C``,
                ``scores`` ``(K,)`` float.
            targets: per image, ``boxes`` ``(M, 4)`` float ``x1, y1, x2, y2`` in the same pixel
                coordinates, ``labels`` ``(M,)`` int64 in ``1..C``. ``M`` may be 0.
        """
        if len(outputs) != len(targets):
            raise ValueError(f"{len(outputs)} outputs for {len(targets)} targets")
        for position, (output, target) in enumerate(zip(outputs, targets, strict=True)):
            where = f"image {len(self._images) + 1} (batch position {position})"
            gt_boxes = _boxes(target["boxes"], f"{where} target")
            dt_boxes = _boxes(output["boxes"], f"{where} output")
            scores = _vector(output["scores"], len(dt_boxes), f"{where} output scores")
            self._images.append(
                DetectionImage(
                    gt_boxes=gt_boxes,
                    gt_labels=self._labels(target["labels"], len(gt_boxes), f"{where} target"),
                    dt_boxes=dt_boxes,
                    dt_labels=self._labels(output["labels"], len(dt_boxes), f"{where} output"),
                    dt_scores=scores.to(torch.float64, copy=True).numpy(),
                )
            )

    def merge(self, other: DetectionEvaluator) -> None:
        """Append the images ``other`` has seen (another rank's share, which comes after this
        one's in the validation order: image ids follow the single-process order)."""
        self._images.extend(other._images)

    def predictions(self) -> DetectionPredictions:
        """Every image's ground truth and detections, in the order seen (merged shares in rank
        order); ``nms_iou`` is left None (the evaluator does not know the detector)."""
        return DetectionPredictions(images=list(self._images))

    def compute(self) -> EvalResult:
        """COCO mAP@[.5:.95] and AP50 over every image seen (see the class docstring), from the
        same COCO conversion and ``COCOeval`` run as the final evaluation
        (``evaluation.coco``)."""
        dataset, detections = coco.coco_inputs(self.predictions(), self.num_classes)
        if not detections:
            # With ground truth and no detection COCOeval's precision is 0 at every recall
            # point, hence 0.0; without ground truth either there is nothing to measure.
            return EvalResult(map=0.0, ap50=0.0) if dataset["annotations"] else EvalResult()
        stats = coco.run_cocoeval(dataset, detections).stats
        return EvalResult(map=_defined(float(stats[0])), ap50=_defined(float(stats[1])))


def _defined(value: float) -> float | None:
    """COCOeval's -1 (no category has ground truth: every precision is -1) as None."""
    return value if value >= 0 else None


class Evaluator(Protocol):
    """What :func:`evaluator_for` returns, so that one validation loop serves every task.

    ``update``'s arguments are those of the task's evaluator (tensors for classification and
    tagging, lists of dicts for detection); they are typed ``Any`` here because only the task,
    known at run time, tells which, and each evaluator checks them.
    """

    def update(self, outputs: Any, targets: Any, /) -> None:
        """Add one validation batch."""

    def merge(self, other: Any, /) -> None:
        """Add what another evaluator of the same task has seen, after this one's batches
        (the gather of a sharded validation)."""

    def compute(self) -> EvalResult:
        """Metrics over every batch since the last reset."""

    def predictions(self) -> Predictions:
        """Every image seen since the last reset, in order (``evaluation.predictions``)."""

    def reset(self) -> None:
        """Forget every batch seen."""


def evaluator_for(
    task: Task, concepts: Sequence[str], *, keep_predictions: bool = True
) -> Evaluator:
    """The evaluator of ``task``.

    Args:
        task: the View's task.
        concepts: concept names in class-index order (the status snapshot, sorted by name).
        keep_predictions: False spares classification's evaluator its logits (an epoch's
            validation needs only top-1); tagging and detection keep them anyway (AP needs them).
    """
    if task == Task.CLASSIFICATION:
        return ClassificationEvaluator(len(concepts), keep_predictions=keep_predictions)
    if task == Task.TAGGING:
        return TaggingEvaluator(concepts)
    if task == Task.DETECTION:
        return DetectionEvaluator(len(concepts))
    raise ValueError(f"unknown task {task!r}")
