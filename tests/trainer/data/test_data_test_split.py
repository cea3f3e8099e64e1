"""The held-out test split through the LoadingDataset step: the images that draw it (background
ones included) are loaded and cached like validation images, listed in dataset.json with split
"test", counted in the status, and served by main.held_out_loader, sharded as validation is."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from kubevision_api.errors import InputError
from kubevision_api.evaluation import EvaluatedSplit
from kubevision_api.plan import TrainingPlan
from kubevision_trainer import main
from kubevision_trainer.data import prepare as data_prepare
from kubevision_trainer.data import split
from kubevision_trainer.data.loading import CachedImage
from kubevision_trainer.distributed import World
from kubevision_trainer.settings import TrainerSettings
from tests.trainer.data import bad_data_helpers as bad
from tests.trainer.data import test_data_detection_bad as detection

VAL, TEST = 0.3, 0.3


def _boxes() -> dict[str, list[list[float]]]:
    boxes = {f"box{i:02d}.png": [[3.0 * i, 10.0, 16.0, 20.0]] for i in range(16)}
    boxes.update({f"bg{i:02d}.png": [] for i in range(6)})
    return boxes


def _plan(tmp_path: Path, uri: str, test_fraction: float) -> TrainingPlan:
    return bad.plan(
        tmp_path,
        "detection",
        ["target"],
        {"uri": uri, "format": "coco"},
        architecture=detection.DETECTOR,
        resizer={"width": detection.SIZE, "height": detection.SIZE},
        training={"epochs": 1, "batchSize": 2, "dataLoaderWorkers": 0},
        datasetSplit={
            "validationFraction": VAL,
            "testFraction": test_fraction,
            "stratified": False,
        },
    )


def test_test_images_are_prepared_counted_and_loaded(tmp_path: Path) -> None:
    boxes = _boxes()
    uri = detection._write(tmp_path, boxes)
    prepared = bad.prepare(_plan(tmp_path, uri, TEST), tmp_path)

    expected_val = sorted(n for n in boxes if split.draw(0, n) < VAL)
    expected_test = sorted(n for n in boxes if VAL <= split.draw(0, n) < VAL + TEST)
    # The case means something: the test split holds boxes and background images.
    assert [n for n in expected_test if boxes[n]] and [n for n in expected_test if not boxes[n]]
    assert [item.sample.path for item in prepared.val] == expected_val
    assert [item.sample.path for item in prepared.test] == expected_test
    assert not {item.sample.path for item in prepared.train} & set(expected_test)
    assert prepared.status.test == len(expected_test)
    listed = [image["path"] for image in prepared.manifest["images"] if image["split"] == "test"]
    assert listed == expected_test
    assert all(item.local_path.exists() for item in prepared.test)  # cached as the others are

    # The loader: every test image once, in order, with its boxes; sharded over 2 ranks as
    # whole batches that, put back in rank order, are the single-process batches.
    dev = torch.device("cpu")
    training = _plan(tmp_path, uri, TEST)
    loader = main.held_out_loader(training, prepared, dev)
    assert loader is not None
    counts = [len(t["boxes"]) for _, targets in loader for t in targets]
    assert counts == [len(boxes[n]) for n in expected_test]
    shards = [
        main.held_out_loader(training, prepared, dev, World(rank=r, world_size=2)) for r in (0, 1)
    ]
    sharded = [len(t["boxes"]) for shard in shards if shard for _, ts in shard for t in ts]
    assert sharded == counts

    # Without a test fraction: no test image, the same validation images, no loader.
    plain = bad.prepare(_plan(tmp_path, uri, 0.0), tmp_path)
    assert plain.test == [] and plain.status.test == 0
    assert [item.sample.path for item in plain.val] == expected_val
    assert all(image["split"] != "test" for image in plain.manifest["images"])
    assert main.held_out_loader(_plan(tmp_path, uri, 0.0), plain, dev) is None


def test_an_empty_test_split_is_refused(tmp_path: Path) -> None:
    boxes = {f"box{i}.png": [[4.0, 4.0, 16.0, 16.0]] for i in range(8)}
    tiny = next(
        f / 1000
        for f in range(1, 200)
        if not [n for n in boxes if VAL <= split.draw(0, n) < VAL + f / 1000]
    )
    uri = detection._write(tmp_path, boxes)
    with pytest.raises(InputError, match=r"the test split is empty .* or testFraction"):
        bad.prepare(_plan(tmp_path, uri, tiny), tmp_path)


def test_scoring_images_are_the_splits_a_training_scores(tmp_path: Path) -> None:
    boxes = _boxes()
    uri = detection._write(tmp_path, boxes)
    training = _plan(tmp_path, uri, TEST)
    prepared = bad.prepare(training, tmp_path)
    settings = TrainerSettings(cache_dir=tmp_path / "cache", io_threads=2)

    def seen(items: list[CachedImage]) -> list[tuple[str, str, int]]:
        return [(i.sample.path, i.sha256, len(i.sample.boxes)) for i in items]

    validation = data_prepare.scoring_images(training, settings, EvaluatedSplit.VALIDATION)
    assert seen(validation) == seen(prepared.val)
    test = data_prepare.scoring_images(training, settings, EvaluatedSplit.TEST)
    assert seen(test) == seen(prepared.test)
    every = data_prepare.scoring_images(training, settings, EvaluatedSplit.DATASET)
    assert [i.sample.path for i in every] == sorted(boxes)  # background images too

    plain = _plan(tmp_path, uri, 0.0)
    with pytest.raises(InputError, match="has no test split") as info:
        data_prepare.scoring_images(plain, settings, EvaluatedSplit.TEST)
    assert info.value.field == "spec.datasetSplit.testFraction"
