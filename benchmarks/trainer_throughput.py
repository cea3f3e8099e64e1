"""Trainer throughput against a minimal hand-written torchvision loop, side by side in one run.

Both train the same model on the same data (the digits example's ImageFolder), with the same
batch size, DataLoader workers, torch threads and transforms (the trainer's own train preset),
for the same number of batches after one warm-up epoch. Printed: images/s of each, their
ratio (target >= 0.9 on the CPU), and the data pipeline's images/s on its own (trainer's
DataLoader iterated without a model).

    python benchmarks/trainer_throughput.py [--architecture resnet18] [--size 32] [--epochs 2]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch.utils.data import DataLoader

from kubevision_api.modelversion import Augmentation, AugmentationName, ModelVersion
from kubevision_api.plan import PlanDefaults, resolve
from kubevision_api.view import View
from kubevision_trainer import engine, main, models, presets
from kubevision_trainer.checkpoint import CheckpointStore
from kubevision_trainer.data import prepare
from kubevision_trainer.report.reporter import MultiReporter
from kubevision_trainer.runstate import RunState
from kubevision_trainer.settings import TrainerSettings

ROOT = Path(__file__).resolve().parents[1]
CONCEPTS = ["eight", "five", "four", "nine", "one", "seven", "six", "three", "two", "zero"]


def _dataset(out: Path) -> Path:
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "examples" / "prepare.py"),
            "--out",
            str(out),
            "--only",
            "digits-imagefolder",
        ],
        check=True,
        capture_output=True,
    )
    return out / "digits-imagefolder"


def _plan(data: Path, args: argparse.Namespace, output: str) -> Any:
    view = View.model_validate(
        {
            "metadata": {"name": "digits"},
            "spec": {
                "task": "classification",
                "concepts": [{"name": c} for c in CONCEPTS],
                "dataset": {"uri": f"file://{data}", "format": "imagefolder"},
            },
        }
    )
    mv = ModelVersion.model_validate(
        {
            "metadata": {"name": "bench"},
            "spec": {
                "viewRef": {"name": "digits"},
                "architecture": args.architecture,
                "imageResizer": {"width": args.size, "height": args.size},
                "augmentation": [
                    Augmentation(name=AugmentationName.BRIGHTNESS, probability=1.0).wire()
                ],
                "training": {
                    "epochs": args.epochs + 1,
                    "batchSize": args.batch_size,
                    "dataLoaderWorkers": args.workers,
                    "mixedPrecision": "bf16",
                },
                "output": {"uri": output},
            },
        }
    )
    return resolve(view, mv, PlanDefaults(metrics_port=None))


class Bare:
    """The minimal loop: torchvision ImageFolder (the trainer's training split) + DataLoader +
    model + SGD, nothing else."""

    def __init__(self, data: Path, train_paths: set[str], plan: Any, device: torch.device) -> None:
        spec = plan.spec
        # What a user writes: the same recipe, then torchvision's float conversion and
        # normalisation per image (the trainer does them per batch on the device).
        transform = torchvision.transforms.v2.Compose(
            [
                presets.train_preset(plan.task, spec.image_resizer, spec.augmentation),
                torchvision.transforms.v2.ToDtype(torch.float32, scale=True),
                torchvision.transforms.v2.Normalize(list(presets.MEAN), list(presets.STD)),
            ]
        )
        to_image = torchvision.transforms.v2.functional.pil_to_tensor
        dataset = torchvision.datasets.ImageFolder(
            str(data),
            transform=lambda img: transform(
                torchvision.tv_tensors.Image(to_image(img.convert("RGB")))
            ),
            is_valid_file=lambda p: str(Path(p).relative_to(data)) in train_paths,
        )
        self.loader = DataLoader(
            dataset,
            batch_size=spec.training.batch_size,
            shuffle=True,
            num_workers=spec.training.data_loader_workers,
            persistent_workers=spec.training.data_loader_workers > 0,
            pin_memory=device.type == "cuda",
        )
        model = models.build(spec.architecture, plan.task, len(CONCEPTS), spec.image_resizer)
        self.model = model.to(device)
        if device.type == "cuda":
            self.model = self.model.to(memory_format=torch.channels_last)
        self.opt = torch.optim.SGD(
            self.model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4
        )
        self.device = device

    def epoch(self) -> int:
        """One epoch; returns the images seen."""
        device, seen = self.device, 0
        self.model.train()
        for cpu_x, cpu_y in self.loader:
            x, y = cpu_x.to(device, non_blocking=True), cpu_y.to(device, non_blocking=True)
            if device.type == "cuda":
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
                loss = torch.nn.functional.cross_entropy(self.model(x).float(), y)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            self.opt.step()
            seen += len(x)
        return seen


class Ours:
    """The trainer's engine: its DataLoaders, LR scheduler and reporter fan-out."""

    def __init__(self, plan: Any, data: prepare.Prepared, device: torch.device) -> None:
        self.train_loader, val_loader = main.loaders(plan, data, device)
        model = models.build(
            plan.spec.architecture, plan.task, len(CONCEPTS), plan.spec.image_resizer
        )
        self.engine = engine.Engine(
            task=plan.task,
            concepts=plan.concepts,
            model=model,
            train_loader=self.train_loader,
            val_loader=val_loader,
            options=plan.spec.training,
            device=device,
            reporter=MultiReporter([]),
            checkpoints=CheckpointStore(plan.output_uri),
            meta={},
        )
        self.run = RunState()
        self.epochs = 0

    def epoch(self) -> int:
        """One epoch; returns the images seen."""
        self.epochs += 1
        before = self.run.images_total
        self.run.batch = 0
        self.engine.train_one_epoch(self.epochs, self.run)
        return self.run.images_total - before

    def pipeline(self) -> float:
        """Images/s of the training DataLoader alone."""
        self.engine.batch_sampler.set_epoch(0)
        started = time.perf_counter()
        seen = sum(len(images) for images, _ in self.train_loader)
        return seen / (time.perf_counter() - started)


def _timed(run: Any, device: torch.device) -> tuple[int, float]:
    started = time.perf_counter()
    seen = run()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return seen, time.perf_counter() - started


def main_(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--architecture", default="resnet18")
    parser.add_argument("--size", type=int, default=32, help="Input side, pixels.")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=3, help="Timed epochs of each loop.")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    device = main.device_for(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        data = _dataset(Path(tmp) / "data")
        plan = _plan(data, args, f"file://{tmp}/out/")
        preset = presets.train_preset(plan.task, plan.spec.image_resizer, plan.spec.augmentation)
        print(
            f"model {args.architecture} at {args.size}x{args.size}, batch {args.batch_size}, "
            f"DataLoader workers {args.workers}, torch threads {torch.get_num_threads()}, "
            f"device {device}"
        )
        print("transforms (both loops):", " ".join(str(preset).split()))
        prepared = prepare.prepare(plan, TrainerSettings(cache_dir=Path(tmp) / "cache"))
        train_paths = {item.sample.path for item in prepared.train}
        bare, ours = Bare(data, train_paths, plan, device), Ours(plan, prepared, device)
        pipeline = ours.pipeline()
        bare.epoch()  # warm-up of both
        ours.epoch()
        totals = {"bare": [0, 0.0], "ours": [0, 0.0]}
        # Epochs alternate, so a change in machine load hits both loops alike.
        for _ in range(args.epochs):
            for name, loop in (("bare", bare), ("ours", ours)):
                seen, seconds = _timed(loop.epoch, device)
                totals[name][0] += seen
                totals[name][1] += seconds
        bare_rate = totals["bare"][0] / totals["bare"][1]
        ours_rate = totals["ours"][0] / totals["ours"][1]
    print(f"bare torchvision loop: {bare_rate:8.1f} images/s")
    print(f"kubevision trainer:    {ours_rate:8.1f} images/s")
    print(f"ratio trainer/bare:    {ours_rate / bare_rate:8.3f} (target >= 0.9)")
    print(f"data pipeline alone:   {pipeline:8.1f} images/s")


if __name__ == "__main__":
    main_()
