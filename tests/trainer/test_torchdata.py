"""EpochSampler and VisionDataset: per-(seed, epoch) orders, per-(epoch, index) augmentations
independent of call order and of the global RNG, which they leave untouched."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader
from torchvision import tv_tensors

from kubevision_api.modelversion import Augmentation, AugmentationName, ImageResizer
from kubevision_api.view import Task
from kubevision_trainer import presets
from kubevision_trainer.data.loading import CachedImage
from kubevision_trainer.data.sample import Sample
from kubevision_trainer.data.torchdata import (
    EpochBatchSampler,
    EpochSampler,
    VisionDataset,
    batches_per_epoch,
    collate_detection,
    derive_seed,
    read_image,
)

SIZE = 16
RESIZER = ImageResizer(width=SIZE, height=SIZE)
#: Random on every read: a flip half of the time and a brightness jitter always.
AUGMENT = [
    Augmentation(name=AugmentationName.HORIZONTAL_FLIP, probability=0.5),
    Augmentation(name=AugmentationName.BRIGHTNESS, probability=1.0, magnitude=0.5),
]


def cached_images(
    tmp_path: Path, count: int, boxes: tuple[tuple[float, float, float, float], ...] = ()
) -> list[CachedImage]:
    """``count`` PNGs of random pixels (so flips and jitter show), 24x16 (WxH)."""
    rng = np.random.default_rng(7)
    items = []
    for i in range(count):
        path = tmp_path / f"img{i}.png"
        Image.fromarray(rng.integers(0, 256, (16, 24, 3), dtype=np.uint8), "RGB").save(path)
        sample = Sample(
            path=path.name,
            uri=path.as_uri(),
            labels=(i % 2,),
            boxes=boxes,
            box_labels=tuple(0 for _ in boxes),
        )
        items.append(CachedImage(sample=sample, sha256="", local_path=path, width=24, height=16))
    return items


def classification_dataset(tmp_path: Path, count: int = 4, seed: int = 3) -> VisionDataset:
    transform = presets.train_preset(Task.CLASSIFICATION, RESIZER, AUGMENT)
    return VisionDataset(cached_images(tmp_path, count), Task.CLASSIFICATION, 2, transform, seed)


# -- EpochSampler --------------------------------------------------------------------------


def test_derive_seed_is_stable_and_63_bit() -> None:
    assert derive_seed(1, 2, 3) == derive_seed(1, 2, 3)
    assert derive_seed(1, 2, 3) != derive_seed(1, 2, 4)
    # "1:23" and "12:3" must not collide: the separator matters.
    assert derive_seed(1, 23) != derive_seed(12, 3)
    assert 0 <= derive_seed(0) < 2**63


def test_sampler_order_is_deterministic_per_seed_and_epoch() -> None:
    first, second = EpochSampler(20, seed=5, shuffle=True), EpochSampler(20, seed=5, shuffle=True)
    first.set_epoch(3)
    second.set_epoch(3)
    order = list(first)
    assert order == list(second) == list(first)  # iterating again gives the same order
    # Indices carry the epoch: epoch * n + position.
    assert sorted(order) == list(range(60, 80))
    assert order != list(range(60, 80))  # shuffled
    assert EpochSampler(20, seed=6, shuffle=True).order(3) != first.order(3)


def test_sampler_order_differs_across_epochs() -> None:
    sampler = EpochSampler(20, seed=5, shuffle=True)
    orders = [sampler.order(epoch) for epoch in range(1, 5)]
    assert all(sorted(o) == list(range(20)) for o in orders)
    assert len({tuple(o) for o in orders}) == 4


def test_set_epoch_start_skips_the_first_positions() -> None:
    sampler = EpochSampler(10, seed=1, shuffle=True)
    sampler.set_epoch(2)
    full = list(sampler)
    sampler.set_epoch(2, 4)
    assert list(sampler) == full[4:]
    assert len(sampler) == 6
    sampler.set_epoch(3)
    assert len(sampler) == 10
    assert [i // 10 for i in sampler] == [3] * 10


def test_sampler_without_shuffle_is_in_order() -> None:
    sampler = EpochSampler(5, seed=1, shuffle=False)
    sampler.set_epoch(1, 2)
    assert list(sampler) == [7, 8, 9]


# -- VisionDataset -------------------------------------------------------------------------


def test_same_epoch_and_index_give_the_same_tensor(tmp_path: Path) -> None:
    dataset = classification_dataset(tmp_path)
    image, label = dataset[5]  # epoch 1, item 1
    # uint8 leaves the dataset: the float conversion runs per batch on the device.
    assert tuple(image.shape) == (3, SIZE, SIZE) and image.dtype == torch.uint8
    assert type(image) is torch.Tensor  # plain tensors leave the dataset, not tv_tensors
    assert label == 1
    again, _ = dataset[5]
    assert torch.equal(image, again)


def test_items_draw_as_with_manual_seed_and_leave_the_callers_rng(tmp_path: Path) -> None:
    dataset = classification_dataset(tmp_path)
    torch.manual_seed(7)
    before = torch.get_rng_state()
    image, _ = dataset[5]
    assert torch.equal(torch.get_rng_state(), before)
    # The draws of torch.manual_seed(derive_seed(seed, epoch, index)), as documented.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(dataset.seed, 1, 1))
        expected = dataset.transform(tv_tensors.Image(read_image(dataset.items[1])))
    assert torch.equal(image, expected.as_subclass(torch.Tensor))


def test_call_order_does_not_matter(tmp_path: Path) -> None:
    dataset = classification_dataset(tmp_path)
    forward = [dataset[i][0] for i in range(8)]
    backward = [dataset[i][0] for i in reversed(range(8))][::-1]
    for a, b in zip(forward, backward, strict=True):
        assert torch.equal(a, b)
    # A fresh dataset (a restarted trainer) draws the same too.
    fresh = classification_dataset(tmp_path)
    assert torch.equal(fresh[6][0], forward[6])


def test_global_seed_does_not_change_an_item(tmp_path: Path) -> None:
    dataset = classification_dataset(tmp_path)
    torch.manual_seed(1)
    first = dataset[2][0]
    torch.manual_seed(2)
    assert torch.equal(dataset[2][0], first)


def test_augmentations_differ_across_epochs_and_seeds(tmp_path: Path) -> None:
    dataset = classification_dataset(tmp_path)
    n = len(dataset)
    for i in range(n):
        views = [dataset[epoch * n + i][0] for epoch in range(3)]
        assert not torch.equal(views[0], views[1])
        assert not torch.equal(views[1], views[2])
    other_seed = classification_dataset(tmp_path, seed=4)
    assert not torch.equal(other_seed[0][0], dataset[0][0])


def test_without_augmentation_every_epoch_is_the_same(tmp_path: Path) -> None:
    transform = presets.eval_preset(Task.CLASSIFICATION, RESIZER)
    dataset = VisionDataset(cached_images(tmp_path, 2), Task.CLASSIFICATION, 2, transform, 0)
    assert torch.equal(dataset[0][0], dataset[2][0])


def test_getitem_leaves_the_global_rng_alone(tmp_path: Path) -> None:
    dataset = classification_dataset(tmp_path)
    torch.manual_seed(11)
    state = torch.get_rng_state()
    expected = torch.rand(3)
    torch.set_rng_state(state)
    for i in range(6):
        dataset[i]
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(torch.rand(3), expected)


def test_tagging_target_is_multi_hot(tmp_path: Path) -> None:
    items = cached_images(tmp_path, 1)
    items[0] = CachedImage(
        sample=Sample(path="a", uri="", labels=(0, 2)),
        sha256="",
        local_path=items[0].local_path,
        width=24,
        height=16,
    )
    transform = presets.eval_preset(Task.TAGGING, RESIZER)
    _, target = VisionDataset(items, Task.TAGGING, 3, transform, 0)[0]
    assert target.tolist() == [1.0, 0.0, 1.0] and target.dtype == torch.float32


def test_detection_items_are_deterministic_and_labels_shifted(tmp_path: Path) -> None:
    boxes = ((2.0, 2.0, 10.0, 8.0),)
    transform = presets.train_preset(Task.DETECTION, RESIZER, AUGMENT)
    dataset = VisionDataset(cached_images(tmp_path, 2, boxes), Task.DETECTION, 1, transform, 9)
    image, target = dataset[1]
    assert tuple(image.shape) == (3, SIZE, SIZE)
    assert type(target["boxes"]) is torch.Tensor and tuple(target["boxes"].shape) == (1, 4)
    assert target["labels"].tolist() == [1]  # class 0 + 1: 0 is background
    again_image, again = dataset[1]
    assert torch.equal(again_image, image) and torch.equal(again["boxes"], target["boxes"])
    # Boxes follow the flip: over a few epochs both the flipped and the plain box appear.
    # Squash 24x16 -> 16x16: x * 2/3, so x in (2, 10) -> (4/3, 20/3), or flipped (28/3, 44/3).
    seen = {round(float(dataset[2 * e + 1][1]["boxes"][0, 0]), 3) for e in range(8)}
    assert seen == {round(4 / 3, 3), round(28 / 3, 3)}


def test_detection_image_without_boxes(tmp_path: Path) -> None:
    transform = presets.eval_preset(Task.DETECTION, RESIZER)
    dataset = VisionDataset(cached_images(tmp_path, 1), Task.DETECTION, 1, transform, 0)
    _, target = dataset[0]
    assert tuple(target["boxes"].shape) == (0, 4)
    assert tuple(target["labels"].shape) == (0,) and target["labels"].dtype == torch.int64


def test_collate_detection_keeps_lists(tmp_path: Path) -> None:
    boxes = ((2.0, 2.0, 10.0, 8.0),)
    transform = presets.eval_preset(Task.DETECTION, RESIZER)
    dataset = VisionDataset(cached_images(tmp_path, 3, boxes), Task.DETECTION, 1, transform, 0)
    images, targets = collate_detection([dataset[0], dataset[1]])
    assert len(images) == len(targets) == 2
    assert all(tuple(img.shape) == (3, SIZE, SIZE) for img in images)


@pytest.mark.parametrize("workers", [0, 2])
def test_batches_do_not_depend_on_workers(tmp_path: Path, workers: int) -> None:
    # Each item seeds itself from (seed, epoch, index), so worker processes draw what the main
    # process draws.
    dataset = classification_dataset(tmp_path, count=6)
    sampler = EpochSampler(len(dataset), seed=1, shuffle=True)
    sampler.set_epoch(2)
    loader = DataLoader(dataset, batch_size=3, sampler=sampler, num_workers=workers)
    batches = [images for images, _ in loader]
    expected = [
        torch.stack([dataset[i][0] for i in list(sampler)[k : k + 3]]) for k in range(0, 6, 3)
    ]
    assert len(batches) == 2
    for got, want in zip(batches, expected, strict=True):
        assert torch.equal(got, want)


@pytest.mark.parametrize(
    ("n", "batch", "sizes"),
    [
        (9, 4, [4, 5]),  # a lone ninth image joins the batch before
        (8, 4, [4, 4]),
        (10, 4, [4, 4, 2]),
        (1, 4, [1]),  # nothing to join: a one-image dataset still trains
        (5, 1, [1, 1, 1, 1, 1]),
    ],
)
def test_epoch_batches_never_leave_one_image_alone(n: int, batch: int, sizes: list[int]) -> None:
    sampler = EpochSampler(n, seed=0, shuffle=True)
    batches = EpochBatchSampler(sampler, batch)
    sampler.set_epoch(3)
    got = list(batches)
    assert [len(b) for b in got] == sizes
    assert len(batches) == len(sizes) == batches_per_epoch(n, batch)
    assert sorted(i for b in got for i in b) == [3 * n + i for i in range(n)]
    # A restart at batch 1 yields exactly the batches that followed batch 0; the epoch's
    # length stays what it was.
    batches.set_epoch(3, 1)
    assert sampler.start == batch
    assert list(batches) == got[1:]
    assert len(batches) == len(sizes) - 1
    assert batches.epoch_batches == len(sizes)
    batches.set_epoch(4)
    assert [len(b) for b in batches] == sizes
