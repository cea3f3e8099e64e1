"""The trainer on one GPU: ResNet-50 at 224 px, bf16 autocast, channels_last, batch 256, on
12 MP photos made here, one JSON line per figure (``benchmarks/gpu.sh`` runs it).

Figures (images/s unless said; each measured after a warm-up, rounds alternating so that a
change in load hits every contender alike):

- ``cache_fill``: the LoadingDataset step on the photos (read, hash, validate, write the
  training-resolution copies; ``--io-threads`` threads).
- ``model``: the model's consumption: training steps on one synthetic uint8 batch already on
  the device (``presets.model_input``, forward, loss, backward, SGD).
- ``trainer``: the kubevision trainer's epochs (``engine.Engine.train_one_epoch`` over
  ``main.loaders``: DataLoader workers, per-item seeding, the recipe, pinned copies).
- ``bare``: a hand-written loop on the same data and model: a plain ``Dataset`` over the same
  training-resolution copies with the same recipe, ``DataLoader(shuffle=True,
  pin_memory=True)``, the same conversion on the device, SGD. The same comparison as
  ``benchmarks/trainer_throughput.py``: what the trainer's machinery costs.
- ``data_cpu``: the trainer's training DataLoader alone (CPU decode of the cached copies and
  CPU augmentation), each batch copied to the device and converted.
- ``data_gpu``: the same images as JPEG (quality 95) at training resolution, decoded in
  batches on the GPU (``torchvision.io.decode_jpeg(device="cuda")``, nvJPEG), flipped and
  converted there; what a GPU decode path would deliver. Skipped (with its reason) on the CPU,
  where the same code runs on the CPU's decoder (``same_code_on_cpu``, images/s) so that it
  cannot rot.
- ``trainer_compiled``: ``trainer`` with ``spec.training.compile`` (``torch.compile``,
  TorchInductor; the compilation's seconds are a field); ``--quick`` on the CPU uses the
  ``eager`` backend (plumbing only: Inductor needs minutes on two cores).
- ratios: ``trainer_over_bare`` (goal >= 0.97), ``data_over_model`` (``data_cpu / model``,
  goal >= 1.2), ``compiled_over_eager``; and ``gpu``: the device's name.

Nothing is downloaded: the photos come from scikit-image's shipped images
(``testenv.photos``), the weights are random.

    benchmarks/gpu.sh                          # one GPU: 6 concepts x 400 photos of 12 MP
    benchmarks/gpu.sh --device cpu --quick     # CI on the CPU: a few small photos, ResNet-18
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torchvision
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as tvf

from kubevision_api.modelversion import ModelVersion
from kubevision_api.plan import PlanDefaults, TrainingPlan, resolve
from kubevision_api.view import Task
from kubevision_trainer import engine, main, models, presets
from kubevision_trainer.checkpoint import CheckpointStore
from kubevision_trainer.data import prepare
from kubevision_trainer.data.loading import CachedImage
from kubevision_trainer.data.torchdata import read_image
from kubevision_trainer.report.reporter import MultiReporter
from kubevision_trainer.runstate import RunState
from kubevision_trainer.settings import TrainerSettings
from testenv import photos


def emit(figure: str, value: Any, unit: str, **extra: Any) -> None:
    """One JSON line."""
    print(json.dumps({"figure": figure, "value": value, "unit": unit, **extra}), flush=True)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(run: Callable[[], int], device: torch.device) -> tuple[int, float]:
    """``run``'s images and wall seconds, the device's queued work included."""
    _sync(device)
    started = time.perf_counter()
    seen = run()
    _sync(device)
    return seen, time.perf_counter() - started


def _plan(data: Path, args: argparse.Namespace, output: str, *, compile_: bool) -> TrainingPlan:
    view = photos.folder_view(data)
    mv = ModelVersion.model_validate(
        {
            "metadata": {"name": "bench"},
            "spec": {
                "viewRef": {"name": "photos"},
                "architecture": args.architecture,
                "imageResizer": {"width": args.size, "height": args.size},
                # Every image trains: the validation split is one image per concept.
                "datasetSplit": {"validationFraction": 0.01},
                "training": {
                    "epochs": 1000,
                    "batchSize": args.batch_size,
                    "dataLoaderWorkers": args.workers,
                    "mixedPrecision": "bf16",
                    "compile": compile_,
                },
                "output": {"uri": output},
            },
        }
    )
    return resolve(view, mv, PlanDefaults(metrics_port=None))


class Trainer:
    """The trainer's engine over its own DataLoaders (as ``main.run`` builds them)."""

    def __init__(
        self, plan: TrainingPlan, data: prepare.Prepared, device: torch.device, backend: str
    ) -> None:
        self.loader, val = main.loaders(plan, data, device)
        model = models.build(
            plan.spec.architecture, plan.task, len(plan.concepts), plan.spec.image_resizer
        )
        self.engine = engine.Engine(
            task=plan.task,
            concepts=plan.concepts,
            model=model,
            train_loader=self.loader,
            val_loader=val,
            options=plan.spec.training,
            device=device,
            reporter=MultiReporter([]),
            checkpoints=CheckpointStore(plan.output_uri),
            meta={},
            compile_backend=backend,
        )
        self.run = RunState()
        self.epochs = 0

    def epoch(self) -> int:
        """One training epoch; returns the images seen."""
        self.epochs += 1
        before = self.run.images_total
        self.run.batch = 0
        self.engine.train_one_epoch(self.epochs, self.run)
        return self.run.images_total - before


class _Copies(Dataset[tuple[torch.Tensor, int]]):
    """The bare loop's dataset: the same cached copies, the same recipe, no seeding."""

    def __init__(self, items: list[CachedImage], transform: Any) -> None:
        self.items, self.transform = items, transform

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        item = self.items[index]
        image = self.transform(tv_tensors.Image(read_image(item)))
        return image.as_subclass(torch.Tensor), item.sample.labels[0]


class Bare:
    """The hand-written loop (module docstring)."""

    def __init__(self, plan: TrainingPlan, data: prepare.Prepared, device: torch.device) -> None:
        spec = plan.spec
        recipe = presets.train_preset(plan.task, spec.image_resizer, spec.augmentation)
        workers = spec.training.data_loader_workers
        self.loader = DataLoader(
            _Copies(data.train, recipe),
            batch_size=spec.training.batch_size,
            shuffle=True,
            drop_last=True,
            num_workers=workers,
            persistent_workers=workers > 0,
            pin_memory=device.type == "cuda",
        )
        torch.manual_seed(0)
        self.model = models.build(
            spec.architecture, plan.task, len(plan.concepts), spec.image_resizer
        ).to(device)
        if device.type == "cuda":
            self.model = self.model.to(memory_format=torch.channels_last)
        self.optimizer = torch.optim.SGD(
            self.model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4
        )
        self.device = device
        mean = torch.tensor(presets.MEAN, device=device).view(1, 3, 1, 1)
        std = torch.tensor(presets.STD, device=device).view(1, 3, 1, 1)
        self.mean, self.std = mean, std

    def step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """One SGD step on a uint8 batch already on the device."""
        x = ((x.float() / 255 - self.mean) / self.std).contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, torch.bfloat16, enabled=self.device.type == "cuda"):
            loss = torch.nn.functional.cross_entropy(self.model(x).float(), y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        self.optimizer.step()

    def epoch(self) -> int:
        """One epoch; returns the images seen."""
        self.model.train()
        seen = 0
        for x, y in self.loader:
            self.step(x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True))
            seen += len(x)
        return seen

    def consumption(self, steps: int) -> tuple[int, float]:
        """``model``: steps on one batch already on the device."""
        x, y = next(iter(self.loader))
        x, y = x.to(self.device), y.to(self.device)

        def run() -> int:
            for _ in range(steps):
                self.step(x, y)
            return steps * len(x)

        return _timed(run, self.device)


def data_cpu(trainer: Trainer, device: torch.device) -> int:
    """One pass of the trainer's training DataLoader, batches copied and converted."""
    trainer.engine.batch_sampler.set_epoch(0)
    seen = 0
    for images, _ in trainer.loader:
        batch = images.to(device, non_blocking=True)
        presets.model_input(Task.CLASSIFICATION, batch, torch.float32)
        seen += len(images)
    return seen


def jpeg_copies(items: list[CachedImage]) -> list[torch.Tensor]:
    """The training-resolution copies as JPEG files (quality 95), as uint8 byte tensors."""
    out = []
    for item in items:
        planes = read_image(item).permute(1, 2, 0).numpy()
        buffer = io.BytesIO()
        Image.fromarray(planes).save(buffer, "JPEG", quality=95)
        out.append(torch.frombuffer(bytearray(buffer.getvalue()), dtype=torch.uint8))
    return out


def data_gpu(files: list[torch.Tensor], size: int, batch: int, device: torch.device) -> int:
    """nvJPEG batches: decode, resize, random flip and convert on the GPU."""
    seen = 0
    for start in range(0, len(files), batch):
        decoded = torchvision.io.decode_jpeg(files[start : start + batch], device=device)
        images = torch.stack([tvf.resize(image, [size, size], antialias=True) for image in decoded])
        flip = torch.rand(len(images), device=device) < 0.5
        images = torch.where(flip.view(-1, 1, 1, 1), images.flip(-1), images)
        presets.model_input(Task.CLASSIFICATION, images, torch.float32)
        seen += len(images)
    return seen


def _best(runs: list[tuple[int, float]]) -> tuple[float, int, float]:
    """The best rate of rounds, its images and seconds."""
    rate, images, seconds = max((n / s, n, s) for n, s in runs)
    return rate, images, seconds


def main_(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", help="cuda, cpu or auto.")
    parser.add_argument("--quick", action="store_true", help="CI on the CPU: tiny, ResNet-18.")
    parser.add_argument("--architecture", default="resnet50")
    parser.add_argument("--size", type=int, default=224, help="Input side, pixels.")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--photos", type=int, default=400, help="Photos per concept (6).")
    parser.add_argument("--photo-size", default="4000x3000", help="WIDTHxHEIGHT of each photo.")
    parser.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 2))
    parser.add_argument("--rounds", type=int, default=2, help="Timed epochs of each loop.")
    parser.add_argument("--steps", type=int, default=20, help="Timed steps of `model`.")
    parser.add_argument("--no-compile", action="store_true", help="Skip trainer_compiled.")
    args = parser.parse_args(argv)
    if args.quick:
        args.architecture, args.size, args.batch_size = "resnet18", 64, 8
        args.photos, args.photo_size, args.workers = 4, "800x600", 0
        args.rounds, args.steps = 1, 2
    device = main.device_for(args.device)
    torch.manual_seed(0)
    backend = "eager" if args.quick and device.type == "cpu" else "inductor"
    width, _, height = args.photo_size.partition("x")
    emit(
        "setup",
        {
            "architecture": args.architecture,
            "size": args.size,
            "batch_size": args.batch_size,
            "photos": args.photos * len(photos.CONCEPTS),
            "photo_size": args.photo_size,
            "dataloader_workers": args.workers,
            "cpu_cores": os.cpu_count(),
            "device": str(device),
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
        },
        "",
    )
    emit("gpu", torch.cuda.get_device_name(device) if device.type == "cuda" else None, "name")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        size = (int(width), int(height))
        photos.write_photo_folder(root / "photos", args.photos, size, workers=os.cpu_count() or 1)
        emit("photos_written", round(time.perf_counter() - started, 2), "s")
        plan = _plan(root / "photos", args, (root / "out").as_uri() + "/", compile_=False)
        settings = TrainerSettings(cache_dir=root / "cache", io_threads=os.cpu_count() or 1)
        started = time.perf_counter()
        data = prepare.prepare(plan, settings)
        seconds = time.perf_counter() - started
        total = len(data.train) + len(data.val)
        emit("cache_fill", round(total / seconds, 2), "images/s", images=total, seconds=seconds)

        trainer, bare = Trainer(plan, data, device, backend), Bare(plan, data, device)
        bare.consumption(1)  # warm-up
        model_runs = [bare.consumption(args.steps) for _ in range(2)]
        model_rate, steps, seconds = _best(model_runs)
        # Rates rounded as printed: the ratios below are quotients of the printed figures.
        model_rate = round(model_rate, 2)
        emit("model", model_rate, "images/s", images=steps, seconds=seconds)

        trainer.epoch(), bare.epoch()  # warm-up: workers, cuDNN's algorithm choice
        runs: dict[str, list[tuple[int, float]]] = {"trainer": [], "bare": [], "data_cpu": []}
        for _ in range(args.rounds):
            runs["trainer"].append(_timed(trainer.epoch, device))
            runs["bare"].append(_timed(bare.epoch, device))
            runs["data_cpu"].append(_timed(lambda: data_cpu(trainer, device), device))
        rates = {}
        for name, measured in runs.items():
            rate, images, seconds = _best(measured)
            rates[name] = round(rate, 2)
            emit(name, rates[name], "images/s", images=images, seconds=round(seconds, 6))

        if device.type == "cuda":
            files = jpeg_copies(data.train)
            data_gpu(files, args.size, args.batch_size, device)  # warm-up
            gpu_runs = [
                _timed(lambda: data_gpu(files, args.size, args.batch_size, device), device)
                for _ in range(args.rounds)
            ]
            rate, images, seconds = _best(gpu_runs)
            emit("data_gpu", round(rate, 2), "images/s", images=images, seconds=round(seconds, 6))
        else:
            # The same code on the CPU's decoder, so that it cannot rot where CI runs.
            files = jpeg_copies(data.train)
            images, seconds = _timed(
                lambda: data_gpu(files, args.size, args.batch_size, device), device
            )
            emit(
                "data_gpu",
                None,
                "images/s",
                skipped="nvJPEG decodes on CUDA devices only",
                same_code_on_cpu=round(images / seconds, 2),
            )

        compiled_rate = math.nan
        if not args.no_compile:
            compiled_plan = _plan(
                root / "photos", args, (root / "out-c").as_uri() + "/", compile_=True
            )
            compiled = Trainer(compiled_plan, data, device, backend)
            _, compiling = _timed(compiled.epoch, device)  # compiles
            measured = [_timed(compiled.epoch, device) for _ in range(args.rounds)]
            compiled_rate, images, seconds = _best(measured)
            compiled_rate = round(compiled_rate, 2)
            emit(
                "trainer_compiled",
                compiled_rate,
                "images/s",
                images=images,
                seconds=round(seconds, 6),
                backend=backend,
                first_epoch_s=round(compiling, 2),
            )
    emit("trainer_over_bare", round(rates["trainer"] / rates["bare"], 6), "ratio", goal=">= 0.97")
    emit("data_over_model", round(rates["data_cpu"] / model_rate, 6), "ratio", goal=">= 1.2")
    if not math.isnan(compiled_rate):
        emit("compiled_over_eager", round(compiled_rate / rates["trainer"], 6), "ratio")


if __name__ == "__main__":
    main_()
