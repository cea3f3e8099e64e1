"""Who does what in a distributed run (docs/distributed.md, "In the trainer"): global rank 0 is
the one voice (pre-flight, manifest, records, checkpoints, model card), local rank 0 of each Pod
loads the dataset for its Pod, and a failure at a step the ranks take together is raised on
every rank at once, with the failing rank's outcome, rather than leaving the others waiting for
a collective until it times out. In a single-process run every function here is the plain step.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from torch import nn

from kubevision_api.contract import Outcome, StorageRole
from kubevision_api.errors import InputError
from kubevision_api.plan import TrainingPlan
from kubevision_api.status import CheckpointStatus
from kubevision_trainer import checkpoint, distributed, outcome, storage
from kubevision_trainer.data import prepare
from kubevision_trainer.data.prepare import Prepared
from kubevision_trainer.distributed import World
from kubevision_trainer.settings import TrainerSettings

T = TypeVar("T")


class NullCheckpoints:
    """The checkpoint sink of ranks other than 0: writes nothing (rank 0 holds the same
    weights, and writes them)."""

    def __init__(self, best_uri: str) -> None:
        self.best_uri = best_uri

    def save_last(self, state: dict[str, Any]) -> None:
        """Nothing."""

    def save_best(self, state: dict[str, Any], epoch: int) -> CheckpointStatus:
        """Nothing; the status says so (no digest, no bytes)."""
        return CheckpointStatus(uri=self.best_uri, epoch=epoch, sha256="0" * 64, bytes=0)


def _describe(exc: BaseException, rank: int) -> tuple[Any, ...]:
    if isinstance(exc, InputError):
        return ("input", exc.source, exc.message, exc.record, exc.field)
    ending, message = outcome.classify(exc)
    return ("other", ending.value, message, rank)


def _rebuild(failure: tuple[Any, ...]) -> BaseException:
    if failure[0] == "input":
        _, source, message, record, field = failure
        return InputError(source, message, record=record, field=field)
    _, ending, message, rank = failure
    return distributed.PeerFailedError(Outcome(ending), message, rank)


def together(world: World, work: Callable[[], T] | None) -> list[T | None]:
    """Run ``work`` on this rank (when given), then tell every rank how every rank did (one
    all-gather of small values): returns each rank's result in rank order. A failure of the
    run's kinds (``outcome.HANDLED``) on any rank raises on every rank: the failing rank's own
    exception, an equal ``InputError`` on the others for bad input, else
    ``distributed.PeerFailedError`` with its outcome and message."""
    result: T | None = None
    error: BaseException | None = None
    if work is not None:
        try:
            result = work()
        except outcome.HANDLED as exc:
            error = exc
    reports = distributed.all_gather_objects(
        (None, result) if error is None else (_describe(error, world.rank), None)
    )
    if error is not None:
        raise error
    for failure, _ in reports:
        if failure is not None:
            raise _rebuild(failure)
    return [value for _, value in reports]


def on_main(world: World, work: Callable[[], object]) -> None:
    """Run ``work`` on global rank 0 alone (storage checks and writes: one voice), with its
    failure raised on every rank (:func:`together`)."""
    together(world, work if world.is_main else None)


def prepare_once(plan: TrainingPlan, settings: TrainerSettings, world: World) -> Prepared:
    """The run's dataset, loaded and validated once per Pod: local rank 0 runs
    ``prepare.prepare`` and leaves the result in a scratch file of the cache folder (the Pod's
    own disk); the Pod's other ranks wait (one all-gather, which says where the file is) and read
    it. A failure anywhere raises on every rank (:func:`together`).

    Raises:
        InputError: bad dataset (on every rank).
    """
    if not world.distributed:
        return prepare.prepare(plan, settings)

    loaded: list[Prepared] = []

    def load() -> str:
        data = prepare.prepare(plan, settings)
        loaded.append(data)
        settings.cache_dir.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix="prepared-", suffix=".pickle", dir=settings.cache_dir)
        with os.fdopen(fd, "wb") as file:
            pickle.dump(data, file, protocol=pickle.HIGHEST_PROTOCOL)
        return name

    names = together(world, load if world.is_local_main else None)
    # torchrun numbers a Pod's workers with consecutive global ranks: its local rank 0 is at
    # rank - local rank.
    path = Path(str(names[world.rank - world.local_rank]))
    try:
        if loaded:
            return loaded[0]
        with path.open("rb") as file:
            data: Prepared = pickle.load(file)  # this Pod's own local rank 0 wrote it
        return data
    finally:
        # Once every rank has read it; the barrier is bounded by the collective timeout.
        distributed.barrier()
        if world.is_local_main:
            with contextlib.suppress(OSError):
                path.unlink()


def read_last(store: checkpoint.CheckpointStore, world: World) -> dict[str, Any] | None:
    """``last.pt`` as rank 0 reads it, on every rank (None when the run has none).

    Rank 0 alone reads it and broadcasts its bytes: the output may be a folder that only rank
    0's Pod sees (``file://``), and one read gives every rank the same copy.

    Raises:
        InputError: unreadable (on every rank: each parses the same bytes).
    """
    if not world.distributed:
        return store.load_last()
    read: list[bytes | None] = []

    def fetch() -> None:
        exists = storage.exists(store.last_uri, role=StorageRole.OUTPUT)
        read.append(storage.read_bytes(store.last_uri, role=StorageRole.OUTPUT) if exists else None)

    together(world, fetch if world.is_main else None)
    data: bytes | None = distributed.broadcast_object(read[0] if read else None)
    return None if data is None else checkpoint.from_bytes(data, store.last_uri)


def load_best(model: nn.Module, store: checkpoint.CheckpointStore, world: World) -> int:
    """Load ``best.pt`` into ``model`` on every rank (rank 0 reads it, then broadcasts its
    tensors); returns its epoch.

    Raises:
        InputError: missing or unreadable (on every rank).
    """
    if not world.distributed:
        best = store.load_best()
        model.load_state_dict(best["model"])
        return int(best["epoch"])

    def read() -> int:
        best = store.load_best()
        model.load_state_dict(best["model"])
        return int(best["epoch"])

    epochs = together(world, read if world.is_main else None)
    distributed.broadcast_module(model)
    return int(str(epochs[0]))
