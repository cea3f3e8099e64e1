"""The data pipeline at photo scale: images/s per core of a hand-written torchvision pipeline and
of kubevision's, on camera-sized JPEGs, in one run.

The photos: ``testenv.photos.write_photo_folder`` (scikit-image's shipped photos, 6 concepts,
cropped and scaled up bicubically to ``--size``, 12 MP by default, JPEG quality 92, every third
one stored sideways or turned with an EXIF orientation), written to a temporary folder.

Everything runs in this one process on one core: ``torch.set_num_threads(1)``, DataLoader
``num_workers=0``, LoadingDataset's ``io_threads=1``. Throughputs are images per CPU second of
this process (``time.process_time``, user + system, all threads), i.e. images/s per core: a
machine feeds a GPU with about that times the cores given to the DataLoader workers. CPU time,
not wall-clock time, because the machines this runs on are shared: other processes stretch the
wall clock of whichever figure they overlap, far less its CPU time (wall seconds are printed
too, and the 1-minute load average).

The ModelVersion's defaults throughout: the default augmentations
(``kubevision_api.modelversion.default_augmentations()``: horizontal flip 0.5, vertical flip
0.5, 90-degree rotation 0.5, brightness 0.2) and the default ``imageResizer`` (squash to
224 x 224), batch 32, the training seed. The three throughputs are measured in rounds of (a),
(b) (a new, empty cache each round) and (c) in turn, so that a change in the machine's load
hits them alike; each is the best of its rounds. Figures (one JSON line each):

- (a) ``imagefolder``: what a user writes by hand: ``torchvision.datasets.ImageFolder`` (its
  default loader: PIL, full decode, ``convert("RGB")``; it ignores the EXIF orientation, so
  sideways photos stay sideways: less work than kubevision does) and a v2 ``Compose`` of
  ``Resize((224, 224))`` on the PIL image, the same augmentations (``RandomHorizontalFlip``,
  ``RandomVerticalFlip``, ``RandomApply`` of a +-90 degree ``RandomRotation`` with
  ``expand=True``, ``ColorJitter(brightness=0.2)``), ``ToImage``, ``ToDtype(float32,
  scale=True)``, ``Normalize`` (ImageNet). The resize comes first: with a squash to a square,
  flips, quarter turns and brightness commute with it, so this is the same distribution of
  inputs as augmenting the full photo, and the fastest honest order (the augmentations then
  touch 224 x 224 pixels, not 12 M).
- (b) ``kubevision_first_epoch``: ``kubevision_trainer.data.prepare.prepare`` (LoadingDataset:
  read, hash, validate, write the cache) plus one epoch of the trainer's training DataLoader
  (``main.loaders``: ``torchdata.VisionDataset`` with ``presets.train_preset``) over every
  image (the validation images are added to the training side, so that all three figures
  cover the same images).
- (c) ``kubevision_later_epoch``: the next epoch of the same DataLoader (cache warm).
- ``first_over_imagefolder`` = b / a (target >= 1.5), ``later_over_imagefolder`` = c / a
  (target >= 5).
- ``profile_*``: where the time of a later epoch goes, CPU ms per image: reading the cached copy
  into a uint8 tensor (``VisionDataset`` with an identity transform, the per-item seeding
  included), the augmentations (uint8), the resizer, the float conversion and normalisation
  (``presets.model_input``, per collated uint8 batch: the trainer runs it on the device),
  collation (``default_collate`` of batches of 32); and their sum next to (c)'s CPU ms per
  image. docs/performance.md, "Data pipeline at photo scale", has measured figures.

Every figure is the time of the work on files in the page cache (they were just written):
what a local or node-cached dataset costs; object storage adds its reads to (a) and (b).

    python benchmarks/data_pipeline.py                  # 6 x 12 photos of 4000 x 3000
    python benchmarks/data_pipeline.py --images 16 --size 4032x3024
    python benchmarks/data_pipeline.py --quick          # CI: 6 x 2 photos of 2000 x 1500
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch.utils.data import DataLoader, default_collate
from torchvision import tv_tensors
from torchvision.transforms import v2

from kubevision_api.modelversion import (
    Augmentation,
    AugmentationName,
    ImageResizer,
    ModelVersion,
    ResizeMode,
)
from kubevision_api.plan import PlanDefaults, TrainingPlan, resolve
from kubevision_api.view import Task
from kubevision_trainer import main, presets, transforms
from kubevision_trainer.data import prepare
from kubevision_trainer.data.loading import CachedImage
from kubevision_trainer.data.torchdata import VisionDataset
from kubevision_trainer.settings import TrainerSettings
from testenv import photos

#: The unit of the throughput figures: one process, one thread (module docstring).
PER_CORE = "images/s per core"


def emit(figure: str, value: float, unit: str, **extra: Any) -> None:
    """One JSON line: ``{"figure": ..., "value": ..., "unit": ..., **extra}``."""
    print(json.dumps({"figure": figure, "value": round(value, 4), "unit": unit, **extra}))


def _plan(data: Path, batch_size: int, output: str) -> TrainingPlan:
    """A classification plan over ``data`` with the ModelVersion's defaults (augmentations,
    resizer), DataLoader workers 0."""
    view = photos.folder_view(data)
    mv = ModelVersion.model_validate(
        {
            "metadata": {"name": "bench"},
            "spec": {
                "viewRef": {"name": "photos"},
                "architecture": "resnet18",
                "training": {"epochs": 2, "batchSize": batch_size, "dataLoaderWorkers": 0},
                "output": {"uri": output},
            },
        }
    )
    return resolve(view, mv, PlanDefaults(metrics_port=None))


def _by_hand(op: Augmentation) -> v2.Transform:
    """The torchvision transform a user writes for one of the default augmentations.

    Raises:
        ValueError: an augmentation the defaults do not use (the baseline would not be the
            same work).
    """
    if op.name is AugmentationName.HORIZONTAL_FLIP:
        return v2.RandomHorizontalFlip(p=op.probability)
    if op.name is AugmentationName.VERTICAL_FLIP:
        return v2.RandomVerticalFlip(p=op.probability)
    if op.name is AugmentationName.ROTATE90:
        quarter = [v2.RandomRotation((a, a), expand=True) for a in (90.0, -90.0)]
        return v2.RandomApply([v2.RandomChoice(quarter)], p=op.probability)
    if op.name is AugmentationName.BRIGHTNESS:
        return v2.RandomApply([v2.ColorJitter(brightness=op.magnitude)], p=op.probability)
    raise ValueError(f"no hand-written equivalent of augmentation {op.name.value!r}")


def by_hand_transform(resizer: ImageResizer, ops: Iterable[Augmentation]) -> v2.Compose:
    """(a)'s transform (module docstring): squash resize on the PIL image, the augmentations,
    then ``ToImage``, ``ToDtype(float32, scale=True)``, ``Normalize``.

    Raises:
        ValueError: a resizer mode other than squash, or an augmentation without equivalent.
    """
    if resizer.mode is not ResizeMode.SQUASH:
        raise ValueError(f"the baseline mirrors the squash resizer, not {resizer.mode.value}")
    return v2.Compose(
        [
            v2.Resize((resizer.height, resizer.width), antialias=True),
            *(_by_hand(op) for op in ops),
            v2.ToImage(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(mean=list(presets.MEAN), std=list(presets.STD)),
        ]
    )


@dataclasses.dataclass(frozen=True)
class Span:
    """A timed piece of work: the images it handled, this process's CPU seconds (all its
    threads: ``time.process_time``) and the wall-clock seconds."""

    images: int
    cpu_s: float
    wall_s: float

    def __add__(self, other: Span) -> Span:
        return Span(
            self.images + other.images, self.cpu_s + other.cpu_s, self.wall_s + other.wall_s
        )


def _timed(step: Callable[..., Any], *args: Any) -> tuple[Any, Span]:
    """``step(*args)`` and its :class:`Span` (no image counted)."""
    cpu, wall = time.process_time(), time.perf_counter()
    result = step(*args)
    return result, Span(0, time.process_time() - cpu, time.perf_counter() - wall)


def _epoch(loader: Iterable[tuple[torch.Tensor, Any]], task: Task | None = None) -> Span:
    """One pass over ``loader``; with ``task``, each batch also goes through
    ``presets.model_input`` (the float conversion that the trainer runs per batch on the
    device, here on the CPU: counted, so that (b) and (c) do all the work that (a) does)."""

    def run() -> int:
        seen = 0
        for images, _ in loader:
            if task is not None:
                presets.model_input(task, images, torch.float32)
            seen += len(images)
        return seen

    seen, span = _timed(run)
    return dataclasses.replace(span, images=seen)


def imagefolder_epoch(data: Path, plan: TrainingPlan) -> Span:
    """(a): one epoch of ImageFolder + the hand-written transform, one process."""
    spec = plan.spec
    dataset = torchvision.datasets.ImageFolder(
        str(data), transform=by_hand_transform(spec.image_resizer, spec.augmentation)
    )
    loader = DataLoader(dataset, batch_size=spec.training.batch_size, shuffle=True, num_workers=0)
    return _epoch(loader)


def profile(items: list[Any], plan: TrainingPlan) -> dict[str, float]:
    """CPU seconds of each stage of a later epoch over ``items`` (module docstring), summed
    over the images."""
    spec = plan.spec
    preset = presets.train_preset(plan.task, spec.image_resizer, spec.augmentation)
    k = len(spec.augmentation)
    if not isinstance(preset.transforms[k], transforms.Resize):
        raise RuntimeError(f"the train preset's step {k} is not the resizer: {preset}")
    augment, resize = v2.Compose(preset.transforms[:k]), preset.transforms[k]
    tail = v2.Compose([v2.Identity(), *preset.transforms[k + 1 :]])
    reader = VisionDataset(
        items, plan.task, len(plan.concepts), v2.Compose([v2.Identity()]), spec.training.seed
    )
    stages = dict.fromkeys(("read", "augment", "resize", "float_normalise", "collate"), 0.0)
    samples: list[tuple[torch.Tensor, Any]] = []
    for i in range(len(reader)):
        # Index len + i: item i of epoch 1, as a later epoch reads it.
        (image, label), span = _timed(reader.__getitem__, len(reader) + i)
        stages["read"] += span.cpu_s
        torch.manual_seed(i)
        image, span = _timed(augment, tv_tensors.Image(image))
        stages["augment"] += span.cpu_s
        image, span = _timed(resize, image)
        stages["resize"] += span.cpu_s
        image, span = _timed(tail, image)
        stages["augment"] += span.cpu_s  # the recipe's tail: nothing for classifiers
        samples.append((image.as_subclass(torch.Tensor), label))
    size = spec.training.batch_size
    for start in range(0, len(samples), size):
        batch, span = _timed(default_collate, samples[start : start + size])
        stages["collate"] += span.cpu_s
        _, span = _timed(presets.model_input, plan.task, batch[0], torch.float32)
        stages["float_normalise"] += span.cpu_s
    return stages


@dataclasses.dataclass
class Round:
    """One round's measurements and the cached images (all of them, as training images)."""

    imagefolder: Span
    prepare: Span
    first_epoch: Span
    later_epoch: Span
    items: list[CachedImage]


def measure_round(data: Path, plan: TrainingPlan, cache_dir: Path, device: torch.device) -> Round:
    """(a), then (b) with an empty cache in ``cache_dir``, then (c) (module docstring)."""
    imagefolder = imagefolder_epoch(data, plan)
    settings = TrainerSettings(cache_dir=cache_dir, io_threads=1)
    prepared, preparing = _timed(prepare.prepare, plan, settings)
    # Every image on the training side: the three figures cover the same photos.
    everything = dataclasses.replace(prepared, train=prepared.train + prepared.val + prepared.test)
    loader = main.loaders(plan, everything, device)[0]
    sampler: Any = loader.batch_sampler
    sampler.set_epoch(0)
    first = _epoch(loader, plan.task)
    sampler.set_epoch(1)
    later = _epoch(loader, plan.task)
    return Round(imagefolder, preparing, first, later, everything.train)


def emit_throughput(figure: str, span: Span, **extra: Any) -> float:
    """The JSON line of a throughput, images per CPU second; returns it."""
    rate = span.images / span.cpu_s
    emit(
        figure,
        rate,
        PER_CORE,
        images=span.images,
        cpu_s=round(span.cpu_s, 6),
        wall_s=round(span.wall_s, 6),
        **extra,
    )
    return rate


def parse_size(text: str) -> tuple[int, int]:
    """``WIDTHxHEIGHT`` in pixels."""
    width, _, height = text.partition("x")
    return int(width), int(height)


def main_(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=12, help="Photos per concept (6 concepts).")
    parser.add_argument("--size", type=parse_size, default="4000x3000", help="WIDTHxHEIGHT px.")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3, help="Rounds of (a), (b), (c).")
    parser.add_argument(
        "--quick", action="store_true", help="CI: 2 photos a concept, 2000x1500, 2 rounds."
    )
    args = parser.parse_args(argv)
    per_concept, size = (2, (2000, 1500)) if args.quick else (args.images, args.size)
    if args.quick:
        args.rounds = 2
    torch.set_num_threads(1)
    device = torch.device("cpu")
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "photos"
        _, generated = _timed(photos.write_photo_folder, data, per_concept, size)
        files = sorted(data.rglob("*.jpg"))
        plan = _plan(data, args.batch_size, f"file://{tmp}/out/")
        resizer = plan.spec.image_resizer
        print(
            json.dumps(
                {
                    "setup": {
                        "photos": len(files),
                        "size": f"{size[0]}x{size[1]}",
                        "mean_file_mb": round(
                            sum(f.stat().st_size for f in files) / len(files) / 1e6, 2
                        ),
                        "generated_s": round(generated.wall_s, 1),
                        "resizer": f"{resizer.mode.value} {resizer.width}x{resizer.height}",
                        "augmentations": [op.wire() for op in plan.spec.augmentation],
                        "batch_size": args.batch_size,
                        "torch_threads": torch.get_num_threads(),
                        "dataloader_workers": 0,
                        "machine_cores": os.cpu_count(),
                        "load_average": round(os.getloadavg()[0], 2),
                    }
                }
            )
        )
        rounds = [
            measure_round(data, plan, Path(tmp) / f"cache-{r}", device) for r in range(args.rounds)
        ]
        stages = profile(rounds[-1].items, plan)
    a = emit_throughput("imagefolder", min((r.imagefolder for r in rounds), key=_cpu))
    best = min(rounds, key=lambda r: _cpu(r.prepare + r.first_epoch))
    b = emit_throughput(
        "kubevision_first_epoch",
        best.prepare + best.first_epoch,
        prepare_cpu_s=round(best.prepare.cpu_s, 6),
        epoch_cpu_s=round(best.first_epoch.cpu_s, 6),
    )
    later = min((r.later_epoch for r in rounds), key=_cpu)
    c = emit_throughput("kubevision_later_epoch", later)
    emit("first_over_imagefolder", b / a, "ratio", target=">= 1.5")
    emit("later_over_imagefolder", c / a, "ratio", target=">= 5")
    count = len(rounds[-1].items)
    for stage, seconds in stages.items():
        emit(f"profile_{stage}", 1000 * seconds / count, "CPU ms/image")
    emit(
        "profile_sum",
        1000 * sum(stages.values()) / count,
        "CPU ms/image",
        later_epoch=round(1000 * later.cpu_s / later.images, 4),
    )


def _cpu(span: Span) -> float:
    return span.cpu_s


if __name__ == "__main__":
    main_()
