"""What the whole detection evaluation costs against pycocotools' COCOeval alone, on the same
synthetic predictions, side by side in one run (rounds alternate, so a change in load hits
both).

- COCOeval alone: ``evaluate()``, ``accumulate()``, ``summarize()`` on COCO objects built
  beforehand (their building is not timed): what pycocotools costs by itself;
- whole evaluation: ``kubevision_trainer.evaluation.evaluate(Task.DETECTION, ...)`` from the
  predictions to the ``Evaluation`` of ``evaluation.json`` (COCO conversion, the same COCOeval
  run, per-concept AP and curves, optimal LRP and operating points, the schema's validation;
  the PNG figures are not part of it).

The predictions are seeded: per image 0-8 annotated boxes, each detected with probability 0.85
by a jittered box (10 % of them under another concept's label), plus 0-6 background
detections; 10 concepts. Target: whole / COCOeval < 2.

    python benchmarks/evaluation.py            # 5,000 images
    python benchmarks/evaluation.py --quick    # CI: 200 images
"""

from __future__ import annotations

import argparse
import contextlib
import io
import time

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from kubevision_api.evaluation import EvaluatedSplit
from kubevision_api.view import Task
from kubevision_trainer.evaluation import evaluate
from kubevision_trainer.evaluation.coco import coco_inputs
from kubevision_trainer.evaluation.predictions import DetectionImage, DetectionPredictions

SIDE = 640.0


def _boxes(rng: np.random.Generator, count: int) -> np.ndarray:
    corner = rng.uniform(0, SIDE - 100, (count, 2))
    size = rng.uniform(12, 100, (count, 2))
    return np.concatenate([corner, corner + size], axis=1)


def synthetic(images: int, concepts: int, seed: int) -> DetectionPredictions:
    """Seeded synthetic detector output (module docstring)."""
    rng = np.random.default_rng(seed)
    out: list[DetectionImage] = []
    for _ in range(images):
        gt = _boxes(rng, int(rng.integers(0, 9)))
        gt_labels = rng.integers(1, concepts + 1, len(gt))
        found = rng.random(len(gt)) < 0.85
        jitter = gt[found] + rng.normal(0, 4, (int(found.sum()), 4))
        jitter = np.concatenate(
            [np.minimum(jitter[:, :2], jitter[:, 2:]), np.maximum(jitter[:, :2], jitter[:, 2:])],
            axis=1,
        )
        confused = rng.random(len(jitter)) < 0.1
        labels = np.where(confused, rng.integers(1, concepts + 1, len(jitter)), gt_labels[found])
        background = _boxes(rng, int(rng.integers(0, 7)))
        out.append(
            DetectionImage(
                gt_boxes=gt,
                gt_labels=gt_labels.astype(np.int64),
                dt_boxes=np.concatenate([jitter, background]),
                dt_labels=np.concatenate(
                    [labels, rng.integers(1, concepts + 1, len(background))]
                ).astype(np.int64),
                dt_scores=np.concatenate(
                    [rng.beta(5, 2, len(jitter)), rng.beta(2, 5, len(background))]
                ),
            )
        )
    return DetectionPredictions(images=out, nms_iou=0.5)


def cocoeval_alone(predictions: DetectionPredictions, concepts: int) -> float:
    """Seconds of COCOeval's evaluate + accumulate + summarize (COCO objects built first)."""
    dataset, detections = coco_inputs(predictions, concepts)
    with contextlib.redirect_stdout(io.StringIO()):
        ground_truth = COCO()
        ground_truth.dataset = dataset
        ground_truth.createIndex()
        results = ground_truth.loadRes(detections)
        started = time.perf_counter()
        evaluation = COCOeval(ground_truth, results, iouType="bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
        return time.perf_counter() - started


def whole(predictions: DetectionPredictions, names: list[str]) -> float:
    """Seconds of the whole evaluation (module docstring)."""
    started = time.perf_counter()
    evaluate(Task.DETECTION, names, predictions, split=EvaluatedSplit.VALIDATION)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--concepts", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=1, help="Timed rounds (best kept).")
    parser.add_argument("--quick", action="store_true", help="CI: 200 images, 2 rounds.")
    args = parser.parse_args()
    images, rounds = (200, 2) if args.quick else (args.images, args.rounds)
    names = [f"concept-{k}" for k in range(1, args.concepts + 1)]
    predictions = synthetic(images, args.concepts, args.seed)
    boxes = sum(len(im.gt_boxes) for im in predictions.images)
    detections = sum(len(im.dt_boxes) for im in predictions.images)
    print(
        f"{images} images, {args.concepts} concepts, {boxes} annotated boxes, "
        f"{detections} detections (seed {args.seed})"
    )
    alone: list[float] = []
    full: list[float] = []
    for _ in range(rounds):
        alone.append(cocoeval_alone(predictions, args.concepts))
        full.append(whole(predictions, names))
    print(f"COCOeval alone (evaluate+accumulate+summarize) {min(alone):8.3f} s")
    print(f"whole evaluation (evaluation.json)             {min(full):8.3f} s")
    print(f"whole / COCOeval alone {min(full) / min(alone):.2f} (target < 2)")


if __name__ == "__main__":
    main()
