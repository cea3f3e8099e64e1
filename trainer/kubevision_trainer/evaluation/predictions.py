"""What a model predicted on a set of images, on the CPU, in the shapes the evaluation reads
(``kubevision_trainer.evaluation``). Built by the validation loop's evaluators
(``metrics.py``), gathered from every rank in the single-process image order."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class ClassificationPredictions:
    """Attributes:
    logits: ``(N, C)`` float64, the network's raw outputs, one row per image.
    labels: ``(N,)`` int64, the true class index of each image, in ``0..C-1``.
    """

    logits: FloatArray
    labels: IntArray


@dataclass(frozen=True)
class TaggingPredictions:
    """Attributes:
    logits: ``(N, C)`` float64 pre-sigmoid scores.
    targets: ``(N, C)`` bool, True where the image carries the concept (rows may be all
        False: an image without any concept).
    """

    logits: FloatArray
    targets: BoolArray


@dataclass(frozen=True)
class DetectionImage:
    """One image's ground truth and detections, boxes ``x1, y1, x2, y2`` in pixels, labels
    in ``1..C`` (0 is the detector's background).

    Attributes:
        gt_boxes: ``(M, 4)`` float64; ``M`` may be 0.
        gt_labels: ``(M,)`` int64.
        dt_boxes: ``(K, 4)`` float64; ``K`` may be 0.
        dt_labels: ``(K,)`` int64.
        dt_scores: ``(K,)`` float64 in [0, 1].
    """

    gt_boxes: FloatArray
    gt_labels: IntArray
    dt_boxes: FloatArray
    dt_labels: IntArray
    dt_scores: FloatArray


@dataclass(frozen=True)
class DetectionPredictions:
    """Attributes:
    images: per image, in the evaluated order.
    nms_iou: the detector's NMS IoU threshold (recorded, not used), None when unknown.
    """

    images: list[DetectionImage]
    nms_iou: float | None = None


Predictions = ClassificationPredictions | TaggingPredictions | DetectionPredictions
