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
from kubevision_trainer.report.reporter import MultiReporter
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


def _bare(data: Path, train_paths: set[str], plan: Any, device: torch.device, epochs: int) -> float:
    """The minimal loop: torchvision ImageFolder (the trainer's training split) + DataLoader +
    model + SGD, nothing else."""
    spec = plan.spec
    transform = presets.train_preset(plan.task, spec.image_resizer, spec.augmentation)
    to_image = torchvision.transforms.v2.functional.pil_to_tensor
    dataset = torchvision.datasets.ImageFolder(
        str(data),
        transform=lambda img: transform(torchvision.tv_tensors.Image(to_image(img.convert("RGB")))),
        is_valid_file=lambda p: str(Path(p).relative_to(data)) in train_paths,
    )
    loader = DataLoader(
        dataset,
        batch_size=spec.training.batch_size,
        shuffle=True,
        num_workers=spec.training.data_loader_workers,
        persistent_workers=spec.training.data_loader_workers > 0,
        pin_memory=device.type == "cuda",
    )
    model = models.build(spec.architecture, plan.task, len(CONCEPTS), spec.image_resizer).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    model.train()

    def epoch() -> int:
        seen = 0
        for cpu_x, cpu_y in loader:
            x, y = cpu_x.to(device, non_blocking=True), cpu_y.to(device, non_blocking=True)
            if device.type == "cuda":
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
                loss = torch.nn.functional.cross_entropy(model(x).float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
            seen += len(x)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return seen

    epoch()  # warm-up
    started = time.perf_counter()
    seen = sum(epoch() for _ in range(epochs))
    return seen / (time.perf_counter() - started)


def _trainer(
    plan: Any, data: main.Prepared, device: torch.device, epochs: int
) -> tuple[float, float]:
    """The trainer's engine (its DataLoaders, LR scheduler, reporter fan-out) for the same
    epochs; returns (training images/s, data pipeline images/s)."""
    train_loader, val_loader = main.loaders(plan, data, device)
    sampler = train_loader.batch_sampler.sampler  # type: ignore[union-attr]
    sampler.set_epoch(0)
    started = time.perf_counter()
    seen = sum(len(images) for images, _ in train_loader)
    pipeline = seen / (time.perf_counter() - started)

    model = models.build(plan.spec.architecture, plan.task, len(CONCEPTS), plan.spec.image_resizer)
    trainer = engine.Engine(
        task=plan.task,
        concepts=plan.concepts,
        model=model,
        train_loader=train_loader,
        val_loader=val_loader,
        options=plan.spec.training,
        device=device,
        reporter=MultiReporter([]),
        checkpoints=CheckpointStore(plan.output_uri),
        meta={},
    )
    progress = engine.Progress()
    trainer.train_one_epoch(1, progress)  # warm-up
    before, started = progress.images_total, time.perf_counter()
    for epoch in range(2, epochs + 2):
        progress.batch = 0
        trainer.train_one_epoch(epoch, progress)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (progress.images_total - before) / (time.perf_counter() - started), pipeline


def main_(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--architecture", default="resnet18")
    parser.add_argument("--size", type=int, default=32, help="Input side, pixels.")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=2, help="Timed epochs (after 1 warm-up).")
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
        prepared = main.prepare_dataset(
            plan, TrainerSettings(cache_dir=Path(tmp) / "cache"), MultiReporter([])
        )
        train_paths = {item.sample.path for item in prepared.train}
        bare = _bare(data, train_paths, plan, device, args.epochs)
        ours, pipeline = _trainer(plan, prepared, device, args.epochs)
    print(f"bare torchvision loop: {bare:8.1f} images/s")
    print(f"kubevision trainer:    {ours:8.1f} images/s")
    print(f"ratio trainer/bare:    {ours / bare:8.3f} (target >= 0.9)")
    print(f"data pipeline alone:   {pipeline:8.1f} images/s")


if __name__ == "__main__":
    main_()
