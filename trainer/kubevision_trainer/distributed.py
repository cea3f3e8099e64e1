"""The process group of a distributed training and the few collectives the trainer uses.

A worker started by ``torch.distributed.run`` (torchrun) finds its place in the environment that
torchrun sets (``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``LOCAL_WORLD_SIZE``, ``MASTER_ADDR``,
``MASTER_PORT``). A process without them, or with a world of one, is a single-process run: no
process group is created and every collective here is the identity, so the single-process path
stays as it was. On CUDA the group uses NCCL (one GPU per process, ``cuda:LOCAL_RANK``), on the
CPU gloo. Every collective waits at most ``timeout`` (``TrainerSettings.
collective_timeout_seconds``): a rank that died or hangs fails the others instead of blocking
them forever (docs/distributed.md, "In the trainer")."""

from __future__ import annotations

import datetime
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from kubevision_api.contract import Outcome

T = TypeVar("T")

#: torchrun's variables in each worker's environment (torch.distributed.run's documentation).
ENV_RANK = "RANK"
ENV_LOCAL_RANK = "LOCAL_RANK"
ENV_WORLD_SIZE = "WORLD_SIZE"
ENV_LOCAL_WORLD_SIZE = "LOCAL_WORLD_SIZE"


@dataclass(frozen=True)
class World:
    """Where this process stands among the training's processes.

    Attributes:
        rank: global rank, 0..world_size-1 (0 is the one voice: records, checkpoints).
        local_rank: rank within this Pod (node), 0..local_world_size-1; the GPU it uses.
        world_size: processes in the training, every Pod together.
        local_world_size: processes in this Pod.
    """

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    local_world_size: int = 1

    @property
    def is_main(self) -> bool:
        """Global rank 0."""
        return self.rank == 0

    @property
    def is_local_main(self) -> bool:
        """Local rank 0: the process of its Pod that loads the dataset."""
        return self.local_rank == 0

    @property
    def distributed(self) -> bool:
        """More than one process: a process group exists (after :func:`init`)."""
        return self.world_size > 1

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> World:
        """The world torchrun describes in ``environ`` (default: ``os.environ``); one process
        when its variables are absent.

        Raises:
            ValueError: the variables are inconsistent (a rank outside the world).
        """
        env = os.environ if environ is None else environ
        world_size = int(env.get(ENV_WORLD_SIZE, "1"))
        rank = int(env.get(ENV_RANK, "0"))
        local_rank = int(env.get(ENV_LOCAL_RANK, "0"))
        local_world_size = int(env.get(ENV_LOCAL_WORLD_SIZE, str(world_size)))
        if not (0 <= rank < world_size and 0 <= local_rank < local_world_size <= world_size):
            raise ValueError(
                f"inconsistent torchrun environment: {ENV_RANK}={rank}, "
                f"{ENV_LOCAL_RANK}={local_rank}, {ENV_WORLD_SIZE}={world_size}, "
                f"{ENV_LOCAL_WORLD_SIZE}={local_world_size}"
            )
        return cls(rank, local_rank, world_size, local_world_size)


class PeerFailedError(RuntimeError):
    """Another rank failed at a step every rank takes together (loading the dataset, reading
    ``last.pt``...): this rank ends with that rank's outcome and message instead of waiting for
    a collective that will never come.

    Attributes:
        outcome: the failing rank's ``contract.Outcome``.
        message: its one-line message.
        rank: its global rank.
    """

    def __init__(self, outcome: Outcome, message: str, rank: int) -> None:
        super().__init__(f"rank {rank} failed: {message}")
        self.outcome = outcome
        self.message = message
        self.rank = rank

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.outcome, self.message, self.rank))


def device_of(world: World, device: torch.device) -> torch.device:
    """The device this rank trains on: ``cuda:LOCAL_RANK`` when ``device`` is CUDA and the world
    is distributed (one GPU per process), else ``device``."""
    if world.distributed and device.type == "cuda":
        return torch.device("cuda", world.local_rank)
    return device


def init(world: World, device: torch.device, timeout_seconds: float) -> None:
    """Join the process group of ``world`` (nothing for a world of one): NCCL on CUDA, after
    ``torch.cuda.set_device(local_rank)``, gloo on the CPU. The rendezvous address comes from
    torchrun's ``MASTER_ADDR``/``MASTER_PORT``; every later collective times out after
    ``timeout_seconds``.

    Raises:
        RuntimeError, ValueError: torch.distributed could not form the group in time.
    """
    if not world.distributed or dist.is_initialized():
        return
    backend = "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(world.local_rank)
        backend = "nccl"
    dist.init_process_group(
        backend=backend,
        rank=world.rank,
        world_size=world.world_size,
        timeout=datetime.timedelta(seconds=timeout_seconds),
    )


def destroy() -> None:
    """Leave the process group, if one exists."""
    if dist.is_initialized():
        dist.destroy_process_group()


def active() -> bool:
    """A process group of more than one process exists."""
    return dist.is_initialized() and dist.get_world_size() > 1


def _tensor_device() -> torch.device:
    # NCCL only moves CUDA tensors; gloo only CPU ones.
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_sum(values: list[float]) -> list[float]:
    """Element-wise sum of ``values`` over every rank (float64, one collective); ``values`` as
    they are in a single-process run."""
    if not active():
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64, device=_tensor_device())
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return [float(v) for v in tensor.cpu()]


def any_rank(flag: bool) -> bool:
    """True on every rank when ``flag`` is True on at least one (one all-reduce)."""
    return all_reduce_sum([1.0 if flag else 0.0])[0] > 0


def barrier() -> None:
    """Wait for every rank (bounded by the group's timeout)."""
    if active():
        dist.barrier()


def broadcast_object(value: T | None, src: int = 0) -> T:
    """``value`` of rank ``src`` on every rank (pickled; for small plain data, a checkpoint's
    bytes or a dataset description). Only ``src``'s argument is used."""
    if not active():
        return value  # type: ignore[return-value]
    box: list[Any] = [value if dist.get_rank() == src else None]
    dist.broadcast_object_list(box, src=src, device=_tensor_device())
    result: T = box[0]
    return result


def all_gather_objects(value: T) -> list[T]:
    """Every rank's ``value`` on every rank, in rank order (for small values: each rank holds
    world size x the largest one for a moment)."""
    if not active():
        return [value]
    everything: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(everything, value)
    return everything


def gather_objects(value: T, dst: int = 0) -> list[T] | None:
    """Every rank's ``value`` on rank ``dst``, in rank order; None on the other ranks."""
    if not active():
        return [value]
    rank = dist.get_rank()
    out: list[Any] | None = [None] * dist.get_world_size() if rank == dst else None
    if dist.get_backend() == "nccl":
        # NCCL has no gather of objects; all_gather_object holds every rank's value a moment.
        everything: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(everything, value)
        return everything if rank == dst else None
    dist.gather_object(value, out, dst=dst)
    return out


def broadcast_module(module: torch.nn.Module, src: int = 0) -> None:
    """Overwrite every parameter and buffer of ``module`` with rank ``src``'s (in place, one
    broadcast per tensor); for weights only rank ``src`` has read (``best.pt``)."""
    if not active():
        return
    with torch.no_grad():
        for tensor in module.state_dict().values():
            dist.broadcast(tensor, src=src)


def broadcast_buffers(module: torch.nn.Module, src: int = 0) -> None:
    """Overwrite every buffer of ``module`` (BatchNorm's running statistics) with rank
    ``src``'s, in place. DDP copies rank 0's buffers to the others at the start of each
    training forward pass only, so after an epoch's last batch each rank holds statistics
    updated with its own slice; validation and every save must see rank 0's, the ones
    ``best.pt`` holds. Parameters need no copy: DDP keeps them equal."""
    if not active():
        return
    with torch.no_grad():
        for tensor in module.buffers():
            dist.broadcast(tensor, src=src)
