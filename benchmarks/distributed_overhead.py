"""What the distributed path costs on one device: images/s of a training step of the single-
process path against the same step on the distributed path with a world of one process, on
the same data, side by side in one run (rounds alternate, so a change in load hits both).

- single-process path: model (channels_last, bf16 autocast on CUDA) -> loss -> backward ->
  SGD step, and the loss read back once a step (the trainer records every batch's loss);
- distributed path: the same model wrapped in ``DistributedDataParallel`` over a real process
  group of one process (NCCL on CUDA, gloo on the CPU), so DDP's gradient buckets are
  all-reduced, plus the trainer's one agreement all-reduce of 4 numbers a batch ([loss x
  count, count, stop, non-finite], read back before backward).

The trainer itself takes the single-process path whenever the world has one process (no
process group, no DDP), so this is the cost of each rank's distributed machinery without the
network: the part of a multi-GPU run's overhead that scaling cannot hide. Target: < 3 %.

    python benchmarks/distributed_overhead.py                 # CUDA: ResNet-50, 224 px, bf16
    python benchmarks/distributed_overhead.py --quick         # CPU CI: ResNet-50 at 64 px
"""

from __future__ import annotations

import argparse
import datetime
import os
import socket
import time
from collections.abc import Callable

import torch
import torch.distributed as dist
import torchvision
from torch.nn.parallel import DistributedDataParallel


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _model(device: torch.device) -> torch.nn.Module:
    torch.manual_seed(0)
    model: torch.nn.Module = torchvision.models.resnet50(num_classes=1000)
    return model.to(device).to(memory_format=torch.channels_last)


def _step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    images: torch.Tensor,
    labels: torch.Tensor,
    agree: Callable[[torch.Tensor, int], float],
) -> None:
    with torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=images.is_cuda):
        loss = torch.nn.functional.cross_entropy(model(images).float(), labels)
    agree(loss, len(images))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()  # type: ignore[no-untyped-call]
    optimizer.step()


def _single(loss: torch.Tensor, count: int) -> float:
    return float(loss.detach())  # the batch's loss, read back as the trainer records it


def _distributed(loss: torch.Tensor, count: int) -> float:
    value = float(loss.detach())
    finite = bool(torch.isfinite(loss.detach()))
    summed = torch.tensor([value * count, float(count), 0.0, float(not finite)], device=loss.device)
    dist.all_reduce(summed)
    return float(summed[0].item()) / max(1.0, float(summed[1].item()))


def main_(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="CPU CI: 64 px, batch 8, 3 steps.")
    parser.add_argument("--size", type=int, default=224, help="Input side, pixels.")
    parser.add_argument("--batch-size", type=int, default=128, help="Images a step.")
    parser.add_argument("--steps", type=int, default=30, help="Timed steps a round.")
    parser.add_argument("--rounds", type=int, default=3, help="Alternating rounds of each.")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    if args.quick:
        args.size, args.batch_size, args.steps, args.rounds = 64, 8, 3, 2
    name = args.device
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = True
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(args.batch_size, 3, args.size, args.size, generator=generator)
    images = images.to(device).contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, 1000, (args.batch_size,), generator=generator).to(device)

    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(_free_port()))
    dist.init_process_group(
        "nccl" if device.type == "cuda" else "gloo",
        rank=0,
        world_size=1,
        timeout=datetime.timedelta(seconds=600),
    )
    try:
        plain = _model(device)
        device_ids = [device.index or 0] if device.type == "cuda" else None
        wrapped = DistributedDataParallel(_model(device), device_ids=device_ids)
        loops = {
            "single-process path": (plain, _single),
            "distributed path (1 process)": (wrapped, _distributed),
        }
        optimizers = {
            key: torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
            for key, (model, _) in loops.items()
        }
        totals = dict.fromkeys(loops, 0.0)
        for key, (model, agree) in loops.items():  # warm-up (cudnn autotuning, allocator)
            model.train()
            for _ in range(2):
                _step(model, optimizers[key], images, labels, agree)
        for _ in range(args.rounds):
            for key, (model, agree) in loops.items():
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                started = time.perf_counter()
                for _ in range(args.steps):
                    _step(model, optimizers[key], images, labels, agree)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                totals[key] += time.perf_counter() - started
    finally:
        dist.destroy_process_group()
    seen = args.rounds * args.steps * args.batch_size
    rates = {key: seen / seconds for key, seconds in totals.items()}
    print(
        f"ResNet-50 at {args.size}x{args.size}, batch {args.batch_size}, channels_last, "
        f"{'bf16 autocast' if device.type == 'cuda' else 'fp32'}, device {device}, "
        f"{args.rounds} x {args.steps} steps each"
        + ("" if device.type == "cuda" else f", {torch.get_num_threads()} torch threads")
    )
    for key, value in rates.items():
        print(f"{key:30s} {value:9.1f} images/s")
    single, distributed = rates.values()
    cost = 1 - distributed / single
    ratio = distributed / single
    print(f"{'distributed / single':30s} {ratio:9.3f} (cost {cost:+.1%}, target < 3 %)")


if __name__ == "__main__":
    main_()
