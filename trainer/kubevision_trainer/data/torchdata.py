"""The torch side of the data: a map-style Dataset over cached images, an epoch-aware sampler
and the collate functions.

Every sample draws its augmentations from its own generator, seeded by (seed, epoch, index):
the batches of an epoch are the same whatever the number of DataLoader workers, and an epoch
re-run after a restart draws exactly what the first run drew."""

from __future__ import annotations

import contextlib
import hashlib
import math
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from PIL import Image
from torch.utils.data import Dataset, Sampler
from torchvision import tv_tensors
from torchvision.transforms import v2

from kubevision_api import imaging
from kubevision_api.view import Task
from kubevision_trainer.data import cache
from kubevision_trainer.data.loading import CachedImage


def derive_seed(*parts: int) -> int:
    """A 63-bit seed from integers (sha256 based, so nearby inputs give unrelated seeds)."""
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """The block draws from the CPU generator seeded with ``seed`` (the generator that v2
    transforms draw from), and the caller's state comes back after it: without DataLoader
    workers, the dataset runs in the training process. ``torch.random.fork_rng`` with
    ``torch.manual_seed`` does the same at 0.28 ms per image, a tenth of a later epoch's work
    per image at 224 px; this costs 0.003 ms."""
    state = torch.get_rng_state()
    torch.default_generator.manual_seed(seed)
    try:
        yield
    finally:
        torch.set_rng_state(state)


def read_image(item: CachedImage) -> torch.Tensor:
    """The picture that training starts from: the item's cached copy as a ``(3, H, W)``
    uint8 tensor, upright; its training-resolution copy (``data.cache``) or, where the cache
    holds the source file, the file decoded at ``item.target``'s reduced scale."""
    if item.local_path.suffix == cache.RAW and item.cached_size is not None:
        return cache.read_raw(item.local_path)
    pil: Image.Image = imaging.decode_image(
        item.local_path.read_bytes(),
        str(item.local_path),
        # The cached copy passed the View's limit when it was loaded.
        max_pixels=item.width * item.height,
        target=None if item.cached_size is not None else item.target,
    )[0]
    tensor: torch.Tensor = v2.functional.pil_to_tensor(pil)
    return tensor


class VisionDataset(Dataset[tuple[torch.Tensor, Any]]):
    """Images and targets for one task.

    Indices are ``epoch * len(self) + i``: the sampler tells each item its epoch, which
    seeds the item's augmentations. Items:

    - classification: ``(image (3, H, W) float32, label int)``
    - tagging: ``(image, targets (C,) float32 multi-hot)``; all zeros for "without concept"
    - detection: ``(image, {"boxes": BoundingBoxes (N, 4) XYXY, "labels": (N,) int64})``,
      labels = class index + 1 (0 is background)
    """

    def __init__(
        self,
        items: Sequence[CachedImage],
        task: Task,
        num_classes: int,
        transform: v2.Compose,
        seed: int,
    ) -> None:
        self.items = list(items)
        self.task = task
        self.num_classes = num_classes
        self.transform = transform
        self.seed = seed

    def __len__(self) -> int:
        return len(self.items)

    def _target(self, item: CachedImage, canvas: tuple[int, int]) -> Any:
        sample = item.sample
        if self.task is Task.CLASSIFICATION:
            return sample.labels[0]
        if self.task is Task.TAGGING:
            target = torch.zeros(self.num_classes, dtype=torch.float32)
            target[list(sample.labels)] = 1.0
            return target
        boxes = torch.tensor(sample.boxes, dtype=torch.float32).reshape(-1, 4)
        if canvas != (item.height, item.width):
            # Decoded at a reduced scale (imaging.decode_image's target): boxes follow.
            scale = torch.tensor(
                [canvas[1] / item.width, canvas[0] / item.height] * 2, dtype=torch.float32
            )
            boxes = boxes * scale
        return {
            "boxes": tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=canvas),
            "labels": torch.tensor(sample.box_labels, dtype=torch.int64) + 1,
        }

    def __getitem__(self, index: int) -> tuple[torch.Tensor, Any]:
        epoch, i = divmod(index, len(self.items))
        item = self.items[i]
        image = tv_tensors.Image(read_image(item))
        target = self._target(item, (int(image.shape[1]), int(image.shape[2])))
        with seeded(derive_seed(self.seed, epoch, i)):
            if self.task is Task.DETECTION:
                image, target = self.transform(image, target)
                target = {
                    "boxes": target["boxes"].as_subclass(torch.Tensor),
                    "labels": target["labels"],
                }
            else:
                image = self.transform(image)
        return image.as_subclass(torch.Tensor), target


class EpochSampler(Sampler[int]):
    """Yields ``epoch * n + i`` for a permutation of ``range(n)`` seeded by (seed, epoch),
    or in order when ``shuffle`` is False. ``set_epoch`` chooses the epoch and the first
    position (for a restart in the middle of an epoch)."""

    def __init__(self, n: int, seed: int, shuffle: bool) -> None:
        self.n = n
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Next iteration yields epoch ``epoch`` from position ``start``."""
        self.epoch = epoch
        self.start = start

    def order(self, epoch: int) -> list[int]:
        """The sample order of ``epoch``, 0-based positions into the dataset."""
        if not self.shuffle:
            return list(range(self.n))
        generator = torch.Generator().manual_seed(derive_seed(self.seed, epoch, 0x5A))
        return [int(i) for i in torch.randperm(self.n, generator=generator)]

    def __iter__(self) -> Iterator[int]:
        base = self.epoch * self.n
        for i in self.order(self.epoch)[self.start :]:
            yield base + i

    def __len__(self) -> int:
        return max(0, self.n - self.start)


def smallest_last_batch(world_size: int) -> int:
    """The fewest images a last batch keeps for itself: two per process (one image in a
    BatchNorm layer with a 1 x 1 feature map cannot be normalised in training mode)."""
    per_process = 2
    return per_process * world_size


def batches_per_epoch(n: int, batch_size: int, world_size: int = 1) -> int:
    """Batches in an epoch of ``n`` images in global batches of ``batch_size``: ceil(n /
    batch_size), less one when the last batch would hold fewer than
    :func:`smallest_last_batch` images (they join the batch before: BatchNorm cannot normalise
    one image in training mode, so every rank needs two; docs/decisions.md, "Training
    semantics"). With more than one process, a last batch of 2 to 2 x world size - 1 images
    is thus batched otherwise than in one process. :class:`EpochBatchSampler` batches so;
    nothing else counts batches."""
    if n <= 0:
        return 0
    left = n % batch_size
    joins = n > batch_size and 0 < left < smallest_last_batch(world_size)
    return math.ceil(n / batch_size) - (1 if joins else 0)


def shard(items: list[int], rank: int, world_size: int) -> list[int]:
    """Rank ``rank``'s contiguous slice of ``items``: slices in rank order make ``items`` up
    again, and their sizes differ by at most one."""
    n = len(items)
    return items[n * rank // world_size : n * (rank + 1) // world_size]


class EpochBatchSampler(Sampler[list[int]]):
    """Global batches of ``batch_size`` from an ``EpochSampler``; this rank yields its
    contiguous slice of each (:func:`shard`), so the ranks' slices of a batch together are the
    single-process batch, whatever the world size. A last batch of fewer than two images per
    process joins the batch before (see :func:`batches_per_epoch`). Every global batch but
    the last is full, so a restart at batch k starts at image ``k * batch_size``: the one place
    that turns a batch position into an image position (:meth:`set_epoch`).

    Args:
        sampler: the epoch's order of images (the single-process one on every rank).
        batch_size: the GLOBAL batch (``spec.training.batchSize``).
        rank, world_size: this process's global rank and the number of processes.
    """

    def __init__(
        self, sampler: EpochSampler, batch_size: int, rank: int = 0, world_size: int = 1
    ) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside a world of {world_size}")
        self.sampler = sampler
        self.batch_size = batch_size
        self.rank = rank
        self.world_size = world_size

    @property
    def epoch_batches(self) -> int:
        """Batches in a whole epoch, wherever the next iteration starts."""
        return batches_per_epoch(self.sampler.n, self.batch_size, self.world_size)

    def set_epoch(self, epoch: int, batch: int = 0) -> None:
        """Next iteration yields epoch ``epoch`` from its batch ``batch`` (0-based; a restart
        in the middle of an epoch passes the batches already done)."""
        self.sampler.set_epoch(epoch, batch * self.batch_size)

    def global_batches(self) -> Iterator[list[int]]:
        """The next iteration's global batches (every rank's images)."""
        smallest = smallest_last_batch(self.world_size)
        batch: list[int] = []
        batches: list[list[int]] = []
        for index in self.sampler:
            batch.append(index)
            if len(batch) == self.batch_size:
                batches.append(batch)
                batch = []
                # Hold one full batch back: it may still have to take a small last batch.
                if len(batches) == 2:
                    yield batches.pop(0)
        if batch and len(batch) < smallest and batches:
            batches[-1].extend(batch)
        elif batch:
            batches.append(batch)
        yield from batches

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.global_batches():
            yield shard(batch, self.rank, self.world_size)

    def __len__(self) -> int:
        """Batches the next iteration yields (fewer than :attr:`epoch_batches` after a
        restart in the middle of an epoch)."""
        return batches_per_epoch(len(self.sampler), self.batch_size, self.world_size)


class ValidationBatchSampler(Sampler[list[int]]):
    """This rank's share of the single-process validation batches: the batches of
    ``batch_size`` over ``range(n)`` in order (the last one may be smaller), split into
    contiguous runs of whole batches, one per rank (:func:`shard` over batch positions).

    Whole batches keep each batch exactly the single-process one (a detector pads a batch to
    its largest image, and batched kernels may round differently for another batch size), so
    the gathered predictions, put back in rank order, are the single-process predictions and
    the metrics equal its metrics. A rank may get no batch when there are fewer batches than
    ranks."""

    def __init__(self, n: int, batch_size: int, rank: int = 0, world_size: int = 1) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside a world of {world_size}")
        #: This rank's batches' places in the single-process batch order.
        self.positions = shard(list(range(math.ceil(n / batch_size))), rank, world_size)
        self.batches = [
            list(range(b * batch_size, min(n, (b + 1) * batch_size))) for b in self.positions
        ]

    def __iter__(self) -> Iterator[list[int]]:
        yield from (list(b) for b in self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def collate_detection(
    batch: Sequence[tuple[torch.Tensor, Any]],
) -> tuple[list[torch.Tensor], list[Any]]:
    """Detection batches stay lists: torchvision detectors take a list of (3, H, W) images and
    a list of target dicts."""
    return [item[0] for item in batch], [item[1] for item in batch]
