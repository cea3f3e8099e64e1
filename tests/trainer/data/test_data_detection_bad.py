"""Detection datasets as careless users make them (issue 10, findings 2, 8 and 9): boxes past
the border train, clipped or dropped and counted in dataset.json and the status; boxes under
1 px at the resizer's size are dropped and counted; background images stay out of training but
in validation, where validation mAP equals pycocotools' COCOeval on the same images."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from kubevision_api.status import DatasetStatus
from kubevision_trainer import main, metrics
from kubevision_trainer.data import prepare as data_prepare
from kubevision_trainer.data import split
from kubevision_trainer.report.reporter import NullReporter
from kubevision_trainer.settings import TrainerSettings
from tests.trainer.data import bad_data_helpers as bad

SIZE = 64
DETECTOR = "fasterrcnn_mobilenet_v3_large_320_fpn"


def _write(tmp_path: Path, boxes: dict[str, list[list[float]]]) -> str:
    """A COCO dataset of 64x64 PNGs, one per entry of ``boxes`` (its ``[x, y, w, h]`` boxes of
    the one category ``target``; none for a background image). ``area`` and ``iscrowd`` are
    written too, so that pycocotools can read the file as it is."""
    folder = tmp_path / "data"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for image_id, (name, listed) in enumerate(sorted(boxes.items()), start=1):
        pixels = rng.integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8)
        Image.fromarray(pixels, "RGB").save(folder / name)
        images.append({"id": image_id, "file_name": name, "width": SIZE, "height": SIZE})
        for bbox in listed:
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": 1,
                    "bbox": bbox,
                    "area": bbox[2] * bbox[3],
                    "iscrowd": 0,
                }
            )
    document = {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": 1, "name": "target"}],
    }
    (folder / "coco.json").write_text(json.dumps(document))
    return (folder / "coco.json").as_uri()


class _Status(NullReporter):
    def __init__(self) -> None:
        self.status: DatasetStatus | None = None

    def dataset(self, status: DatasetStatus) -> None:
        self.status = status


@pytest.mark.slow
def test_boxes_past_the_border_train_and_are_counted(tmp_path: Path) -> None:
    boxes = {f"{i:02d}.png": [[8.0 + i, 8.0, 20.0, 16.0]] for i in range(10)}
    boxes["00.png"].append([50.0, 40.0, 20.0, 30.0])  # past the right and bottom: clipped
    boxes["01.png"].append([-4.0, -2.0, 14.0, 12.0])  # left of and above: clipped
    boxes["02.png"].append([70.0, 10.0, 8.0, 8.0])  # right of the image: dropped
    boxes["03.png"].append([10.0, 10.0, 0.0, 8.0])  # zero width: dropped
    boxes["04.png"].append([30.0, 30.0, 1.5, 6.0])  # 0.75 px wide at 32 px: dropped
    uri = _write(tmp_path, boxes)
    training = bad.plan(
        tmp_path,
        "detection",
        ["target"],
        {"uri": uri, "format": "coco"},
        architecture=DETECTOR,
        resizer={"width": 32, "height": 32},
    )
    reporter = _Status()
    main.run(
        training,
        device="cpu",
        reporters=[reporter],
        settings=TrainerSettings(cache_dir=tmp_path / "cache"),
    )
    manifest = json.loads((tmp_path / "out" / data_prepare.MANIFEST).read_text())
    assert manifest["boxes"] == {
        "clipped": 2,
        "dropped": {"OutsideImage": 1, "UnderOnePixelAfterResize": 1, "ZeroSize": 1},
    }
    assert sum(image["boxes"] for image in manifest["images"]) == 12
    assert reporter.status is not None
    assert reporter.status.model_dump(mode="json", by_alias=True)["boxes"] == {
        "clipped": 2,
        "dropped": [
            {"reason": "OutsideImage", "count": 1},
            {"reason": "UnderOnePixelAfterResize", "count": 1},
            {"reason": "ZeroSize", "count": 1},
        ],
    }
    assert (tmp_path / "out" / "model.json").exists()


def _val_targets(training: Any, prepared: data_prepare.Prepared) -> list[dict[str, torch.Tensor]]:
    _, val_loader = main.loaders(training, prepared, torch.device("cpu"))
    return [target for _, targets in val_loader for target in targets]


def test_background_images_are_validated_and_counted(tmp_path: Path) -> None:
    boxes: dict[str, list[list[float]]] = {
        f"box{i:02d}.png": [[4.0 * i, 10.0, 16.0, 20.0]] for i in range(10)
    }
    boxes.update({f"bg{i:02d}.png": [] for i in range(6)})
    uri = _write(tmp_path, boxes)
    fraction = 0.4
    training = bad.plan(
        tmp_path,
        "detection",
        ["target"],
        {"uri": uri, "format": "coco"},
        architecture=DETECTOR,
        resizer={"width": SIZE, "height": SIZE},  # boxes keep their pixels
        datasetSplit={"validationFraction": fraction, "stratified": False},
    )
    prepared = bad.prepare(training, tmp_path)

    # The validation split is every image whose draw is under the fraction, background or not.
    expected_val = sorted(name for name in boxes if split.draw(0, name) < fraction)
    background_val = [name for name in expected_val if not boxes[name]]
    background_train = [n for n in boxes if not boxes[n] and n not in expected_val]
    assert background_val and background_train  # both sides hold some: the test means it
    assert [item.sample.path for item in prepared.val] == expected_val
    assert all(item.sample.boxes for item in prepared.train)
    assert prepared.manifest["backgroundVal"] == len(background_val)
    assert prepared.manifest["skipped"] == {"NoBoxes": len(background_train)}
    assert prepared.status.background_val == len(background_val)

    # Every ground-truth box found (score 0.9), one false positive (0.95) per background image.
    targets = _val_targets(training, prepared)
    outputs = []
    detections = []
    ids = {name: i for i, name in enumerate(sorted(boxes), start=1)}
    for item, target in zip(prepared.val, targets, strict=True):
        gt = target["boxes"]
        found = gt if len(gt) else torch.tensor([[5.0, 5.0, 25.0, 25.0]])
        score = 0.9 if len(gt) else 0.95
        outputs.append(
            {
                "boxes": found,
                "labels": torch.ones(len(found), dtype=torch.int64),
                "scores": torch.full((len(found),), score),
            }
        )
        for x1, y1, x2, y2 in found.tolist():
            detections.append(
                {
                    "image_id": ids[item.sample.path],
                    "category_id": 1,
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "score": score,
                }
            )
    evaluator = metrics.DetectionEvaluator(1)
    evaluator.update(outputs, targets)
    result = evaluator.compute()

    # pycocotools on the annotation file itself, restricted to the validation images.
    with contextlib.redirect_stdout(io.StringIO()):
        ground_truth = COCO(str(tmp_path / "data" / "coco.json"))
        evaluation = COCOeval(ground_truth, ground_truth.loadRes(detections), iouType="bbox")
        evaluation.params.imgIds = [ids[name] for name in expected_val]
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    assert result.map == float(evaluation.stats[0])
    assert result.ap50 == float(evaluation.stats[1])
    # By hand: the false positives rank first, so precision is N / (N + K) at every recall.
    found_boxes = len(expected_val) - len(background_val)
    assert result.map == pytest.approx(found_boxes / (found_boxes + len(background_val)))
    assert result.map < 1.0
