"""One pycocotools ``COCOeval`` run (iouType ``bbox``) over detection predictions, and what
the evaluation reads from it (docs/metrics.md, "Detection"):

- the summary mAP@[.5:.95] and AP50 (``stats[0]``, ``stats[1]``);
- per category, AP@[.5:.95] and AP50 read from ``eval['precision']`` as ``summarize()`` reads
  them (area ``all``, maxDets 100, mean over the entries > -1), so that each equals the
  ``stats[0]``/``stats[1]`` of a run restricted to that category (``params.catIds = [k]``);
- per category, the 101-point precision-recall curve at IoU 0.5;
- per category, COCOeval's own greedy matching at IoU 0.5 (``evalImgs``' ``dtMatches`` at
  ``iouThrs`` index 0, area ``all``, maxDets 100, with each matched pair's IoU from ``ious``),
  from which :mod:`.lrp` computes LRP without matching again.

The COCO conversion is the validation evaluator's (``metrics.DetectionEvaluator``): image ids
1.. in the evaluated order, category ids = labels 1..C, annotation ids from 1 (COCOeval reads
id 0 as "unmatched"), boxes ``x1, y1, x2, y2`` turned into ``[x, y, width, height]``, and every
image registered, so that detections on an image without ground truth are false positives.
"""

from __future__ import annotations

import contextlib
import io
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from kubevision_trainer.evaluation.lrp import Matches
from kubevision_trainer.evaluation.predictions import DetectionPredictions, FloatArray

logger = logging.getLogger(__name__)

#: COCOeval's ``iouThrs`` index of IoU 0.5, and its ``areaRng`` index of ``all``.
_IOU_HALF = 0
_AREA_ALL = 0


@dataclass(frozen=True)
class CocoFigures:
    """What one COCOeval run gives the evaluation.

    Attributes:
        map: ``stats[0]``, AP@[.5:.95] over the categories with ground truth; None without any.
        ap50: ``stats[1]``, AP at IoU 0.5; None without any ground truth.
        ap: per category (index 0 = label 1), AP@[.5:.95]; None without ground truth.
        ap50_per_category: per category, AP at IoU 0.5; None without ground truth.
        curves: per category, the 101 interpolated precisions at recall 0, 0.01, ..., 1 at
            IoU 0.5 (``precision[0, :, k, 0, -1]``); None without ground truth.
        matches: per category, its detections and COCOeval's matching at IoU 0.5.
    """

    map: float | None
    ap50: float | None
    ap: list[float | None]
    ap50_per_category: list[float | None]
    curves: list[list[float] | None]
    matches: list[Matches]


def _xywh(box: FloatArray) -> list[float]:
    """COCO boxes are ``[x, y, width, height]``; ours are ``x1, y1, x2, y2``."""
    x1, y1, x2, y2 = (float(v) for v in box)
    return [x1, y1, x2 - x1, y2 - y1]


def coco_inputs(
    predictions: DetectionPredictions, num_classes: int
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The ground truth as a COCO dataset dict and the detections as a COCO result list
    (module docstring). Images carry a nominal ``width``/``height`` of 0: COCOeval does not
    read them (vernier's reader requires the keys)."""
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    detections: list[dict[str, Any]] = []
    for image_id, image in enumerate(predictions.images, start=1):
        images.append({"id": image_id, "width": 0, "height": 0})
        for box, label in zip(image.gt_boxes, image.gt_labels, strict=True):
            xywh = _xywh(box)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": int(label),
                    "bbox": xywh,
                    "area": xywh[2] * xywh[3],
                    "iscrowd": 0,
                }
            )
        for box, label, score in zip(image.dt_boxes, image.dt_labels, image.dt_scores, strict=True):
            detections.append(
                {
                    "image_id": image_id,
                    "category_id": int(label),
                    "bbox": _xywh(box),
                    "score": float(score),
                }
            )
    categories = [{"id": c, "name": str(c)} for c in range(1, num_classes + 1)]
    return {"images": images, "annotations": annotations, "categories": categories}, detections


def run_cocoeval(
    dataset: dict[str, Any], detections: list[dict[str, Any]], cat_ids: list[int] | None = None
) -> COCOeval:
    """``COCOeval`` evaluated, accumulated and summarised (pycocotools' prints go to the
    debug log). ``cat_ids`` restricts it to those categories (``params.catIds``).

    With no detection at all the results are an empty COCO set (``COCO.loadRes`` cannot take
    an empty list): precision is then 0 at every recall for the categories with ground
    truth, and -1 for the others, as with detections elsewhere.
    """
    log = io.StringIO()
    with contextlib.redirect_stdout(log):
        ground_truth = COCO()
        ground_truth.dataset = dataset
        ground_truth.createIndex()
        if detections:
            results = ground_truth.loadRes(detections)
        else:
            results = COCO()
            results.dataset = {
                "images": list(dataset["images"]),
                "annotations": [],
                "categories": list(dataset["categories"]),
            }
            results.createIndex()
        evaluation = COCOeval(ground_truth, results, iouType="bbox")
        if cat_ids is not None:
            evaluation.params.catIds = cat_ids
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    logger.debug("COCOeval:\n%s", log.getvalue())
    return evaluation


def _defined(value: float) -> float | None:
    """COCOeval's -1 (no ground truth) as None."""
    return value if value > -1 else None


def _mean_defined(precision: np.ndarray[Any, Any]) -> float | None:
    """``summarize()``'s reduction: the mean of the entries > -1, None when there is none."""
    kept = precision[precision > -1]
    return float(np.mean(kept)) if len(kept) else None


def _matches(evaluation: COCOeval, category: int, num_images: int) -> Matches:
    """Category ``category``'s detections (every image, top 100 by score per image as
    COCOeval keeps them) and COCOeval's matching of them at IoU 0.5."""
    areas = len(evaluation.params.areaRng)
    start = category * areas * num_images + _AREA_ALL * num_images
    scores: list[FloatArray] = []
    matched: list[np.ndarray[Any, np.dtype[np.bool_]]] = []
    ious: list[FloatArray] = []
    ground_truth = 0
    for cell in evaluation.evalImgs[start : start + num_images]:
        if cell is None:
            continue
        ground_truth += int(np.count_nonzero(cell["gtIgnore"] == 0))
        kept = ~cell["dtIgnore"][_IOU_HALF].astype(bool)
        gt_ids = cell["dtMatches"][_IOU_HALF]
        pair_iou = np.zeros(len(gt_ids))
        hits = np.flatnonzero(gt_ids > 0)
        if len(hits):
            key = (cell["image_id"], cell["category_id"])
            # ``ious`` rows are the detections in the order of dtMatches (both sort by score,
            # stably, and keep the first maxDet); its columns are the category's ground truth
            # in dataset order.
            column = {g["id"]: j for j, g in enumerate(evaluation._gts[key])}
            rows = evaluation.ious[key]
            pair_iou[hits] = [rows[d, column[int(gt_ids[d])]] for d in hits]
        scores.append(np.asarray(cell["dtScores"], dtype=np.float64)[kept])
        matched.append((gt_ids > 0)[kept])
        ious.append(pair_iou[kept])
    if not scores:
        return Matches.empty(ground_truth)
    return Matches(
        scores=np.concatenate(scores),
        true_positive=np.concatenate(matched),
        iou=np.concatenate(ious),
        ground_truth=ground_truth,
    )


def evaluate(predictions: DetectionPredictions, num_classes: int) -> CocoFigures:
    """Run COCOeval once over ``predictions`` and read every figure of :class:`CocoFigures`.

    Args:
        predictions: labels in ``1..num_classes``.
        num_classes: C >= 1.
    """
    dataset, detections = coco_inputs(predictions, num_classes)
    evaluation = run_cocoeval(dataset, detections)
    params = evaluation.params
    if params.areaRngLbl[_AREA_ALL] != "all" or params.iouThrs[_IOU_HALF] != 0.5:
        raise RuntimeError("COCOeval's parameters are not the default ones this module reads")
    # summarize() reads maxDets 100, the last of the default (1, 10, 100).
    precision = evaluation.eval["precision"][:, :, :, _AREA_ALL, -1]  # (T, R, K)
    ap: list[float | None] = []
    ap50: list[float | None] = []
    curves: list[list[float] | None] = []
    matches: list[Matches] = []
    num_images = len(params.imgIds)
    for k in range(num_classes):
        ap.append(_mean_defined(precision[:, :, k]))
        ap50.append(_mean_defined(precision[_IOU_HALF : _IOU_HALF + 1, :, k]))
        curve = precision[_IOU_HALF, :, k]
        curves.append([float(p) for p in curve] if bool((curve > -1).all()) else None)
        matches.append(_matches(evaluation, k, num_images))
    stats = evaluation.stats
    return CocoFigures(
        map=_defined(float(stats[0])),
        ap50=_defined(float(stats[1])),
        ap=ap,
        ap50_per_category=ap50,
        curves=curves,
        matches=matches,
    )
