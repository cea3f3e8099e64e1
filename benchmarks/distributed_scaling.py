"""Distributed training's scaling, in one run: images/s of the real trainer path (``main.run``)
with 1 process (the single-process path, no torchrun) and with 2 processes on the CPU (gloo),
or 1..N GPUs (NCCL, one process each), launched by ``kubevision_trainer.launch`` as
``kubevision train --nproc N`` does, and the scaling efficiency rate(N) / (N x rate(1)).

Weak scaling: each process trains ``--batch-per-process`` images a step, so the global batch
(``spec.training.batchSize``) is N x that. Images/s is the wall clock of whole epochs' batches
as rank 0 sees them (data loading, DDP's gradient all-reduce and the per-batch agreement
included; validation and checkpoints excluded), after a warm-up (the first epoch, or in
``--quick`` mode the first 3 batches). On the CPU every process gets ``--threads`` torch
threads (1 by default, torchrun's own default for several processes), so 2 processes use
twice the cores of 1: efficiency 1.0 is perfect scaling.

    python benchmarks/distributed_scaling.py [--quick] [--architecture resnet18] [--size 32]
        [--batch-per-process 32] [--epochs 2] [--per-class N] [--max-processes N]
        [--threads 1] [--device auto]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from kubevision_api.modelversion import ModelVersion
from kubevision_api.plan import PlanDefaults, TrainingPlan, resolve
from kubevision_api.view import View
from kubevision_trainer import launch, main
from kubevision_trainer.report.reporter import BatchEvent, NullReporter

ROOT = Path(__file__).resolve().parents[1]
CONCEPTS = ["eight", "five", "four", "nine", "one", "seven", "six", "three", "two", "zero"]


def _dataset(out: Path, per_class: int | None) -> Path:
    """The digits example's ImageFolder (1,797 scans), or its first ``per_class`` of each."""
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "examples" / "prepare.py"),
            *("--out", str(out), "--only", "digits-imagefolder"),
        ],
        check=True,
        capture_output=True,
    )
    root = out / "digits-imagefolder"
    if per_class is not None:
        for folder in (f for f in root.iterdir() if f.is_dir()):
            for extra in sorted(folder.iterdir())[per_class:]:
                extra.unlink()
    return root


def _plan(data: Path, args: argparse.Namespace, processes: int, cuda: bool, output: str) -> Any:
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
    resources = (
        {"gpus": processes} if cuda else {"gpus": 0, "processesPerNode": processes, "nodes": 1}
    )
    mv = ModelVersion.model_validate(
        {
            "metadata": {"name": f"scaling-{processes}"},
            "spec": {
                "viewRef": {"name": "digits"},
                "architecture": args.architecture,
                "imageResizer": {"width": args.size, "height": args.size},
                "resources": resources,
                "training": {
                    "epochs": args.epochs,
                    "batchSize": args.batch_per_process * processes,
                    "dataLoaderWorkers": args.workers,
                    "mixedPrecision": "bf16" if cuda else "none",
                },
                "output": {"uri": output},
            },
        }
    )
    return resolve(view, mv, PlanDefaults(metrics_port=None))


class Timer(NullReporter):
    """Rank 0's batch ends, with the wall clock."""

    def __init__(self) -> None:
        self.ends: list[tuple[int, int, int, float]] = []

    def batch(self, event: BatchEvent) -> None:
        self.ends.append((event.epoch, event.index, event.images, time.perf_counter()))


def rate(ends: list[tuple[int, int, int, float]], skip_epochs: int, skip_batches: int) -> float:
    """Images/s over the timed batches: within each epoch after the first ``skip_epochs``, from
    the end of batch ``skip_batches - 1`` (or the epoch's first) to the epoch's last."""
    images, seconds = 0, 0.0
    for epoch in sorted({e for e, _, _, _ in ends}):
        if epoch <= skip_epochs:
            continue
        batches = [b for b in ends if b[0] == epoch]
        start = max(skip_batches, 1) - 1
        if len(batches) <= start + 1:
            continue
        images += sum(b[2] for b in batches[start + 1 :])
        seconds += batches[-1][3] - batches[start][3]
    if seconds <= 0:
        raise SystemExit("too few batches to time: more images, fewer per process or epochs")
    return images / seconds


def _worker(plan_file: str, result: str, device: str, skip: tuple[int, int]) -> int:
    plan = TrainingPlan.model_validate_json(Path(plan_file).read_text())
    timer = Timer()
    main.run(plan, device=device, reporters=[timer])
    if launch.global_rank() == 0:
        Path(result).write_text(json.dumps({"rate": rate(timer.ends, *skip)}))
    return 0


def _measure(tmp: Path, data: Path, args: argparse.Namespace, processes: int, cuda: bool) -> float:
    output = f"file://{tmp}/out-{processes}/"
    plan_file, result = tmp / f"plan-{processes}.json", tmp / f"result-{processes}.json"
    plan_file.write_text(_plan(data, args, processes, cuda, output).model_dump_json(by_alias=True))
    skip = ["--skip-epochs", str(args.skip_epochs), "--skip-batches", str(args.skip_batches)]
    worker = [__file__, "--worker", str(plan_file), str(result), "--device", args.device, *skip]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    env.setdefault("KUBEVISION_CACHE_DIR", str(tmp / "cache"))
    command = [sys.executable, *worker]
    if processes > 1:
        command = [sys.executable, __file__, "--launch", str(processes), "--", *worker]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{processes} processes failed:\n{done.stderr[-3000:]}")
    value: float = json.loads(result.read_text())["rate"]
    return value


def main_(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="CI: 40 images a class, 1 epoch, 16 a process."
    )
    parser.add_argument("--per-class", type=int, help="Images a class (default: all).")
    parser.add_argument("--architecture", default="resnet18")
    parser.add_argument("--size", type=int, default=32, help="Input side, pixels.")
    parser.add_argument("--batch-per-process", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=2, help="The first is the warm-up.")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers a process.")
    parser.add_argument("--threads", type=int, default=1, help="Torch threads a CPU process.")
    parser.add_argument("--max-processes", type=int, help="Default: 2 on the CPU, every GPU.")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--worker", nargs=2, metavar=("PLAN", "RESULT"), help=argparse.SUPPRESS)
    parser.add_argument("--launch", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--skip-epochs", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--skip-batches", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.launch:
        entry = args.rest[1:] if args.rest[:1] == ["--"] else args.rest
        start = launch.Launch(nodes=1, nproc_per_node=args.launch)
        sys.exit(launch.run(start, entry, termination_log=None))
    if args.worker:
        sys.exit(
            _worker(
                args.worker[0], args.worker[1], args.device, (args.skip_epochs, args.skip_batches)
            )
        )
    if args.quick:
        args.epochs, args.batch_per_process, args.per_class = 1, 16, 40
        args.skip_epochs, args.skip_batches = 0, 3
    cuda = main.device_for(args.device).type == "cuda"
    most = args.max_processes or (torch.cuda.device_count() if cuda else 2)
    print(
        f"model {args.architecture} at {args.size}x{args.size}, {args.batch_per_process} images "
        f"a process a step, {args.epochs} epoch(s), "
        f"{args.per_class or 'all'} images a class, device {'cuda' if cuda else 'cpu'}"
        + ("" if cuda else f", {args.threads} torch thread(s) a process")
    )
    rates: dict[int, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        data = _dataset(Path(tmp) / "data", args.per_class)
        for processes in range(1, most + 1):
            rates[processes] = _measure(Path(tmp), data, args, processes, cuda)
            efficiency = rates[processes] / (processes * rates[1])
            print(
                f"{processes} process(es), global batch {processes * args.batch_per_process:4d}:"
                f" {rates[processes]:8.1f} images/s, scaling efficiency {efficiency:.3f}"
            )


if __name__ == "__main__":
    main_()
