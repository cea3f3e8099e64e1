"""Wiring of one training run: TrainingPlan in; dataset, model, engine, reporters and storage
plugged together; records, checkpoints, the dataset manifest and the model card out. Also the
Job's entry point (``kubevision trainer --plan``)."""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from kubevision_api import contract
from kubevision_api.contract import StepName, StorageRole
from kubevision_api.errors import InputError
from kubevision_api.export import ExportStatus
from kubevision_api.plan import TrainingPlan
from kubevision_api.status import StepState
from kubevision_api.view import Task
from kubevision_trainer import (
    checkpoint,
    distributed,
    engine,
    final,
    launch,
    modelcard,
    models,
    outcome,
    preflight,
    presets,
    ranks,
    storage,
    upload,
)
from kubevision_trainer.data import prepare
from kubevision_trainer.data.loading import CachedImage
from kubevision_trainer.data.prepare import Prepared
from kubevision_trainer.data.torchdata import (
    EpochBatchSampler,
    EpochSampler,
    ValidationBatchSampler,
    VisionDataset,
    collate_detection,
    derive_seed,
    smallest_last_batch,
)
from kubevision_trainer.distributed import World
from kubevision_trainer.report import factory
from kubevision_trainer.report.records import RecordsReporter
from kubevision_trainer.report.reporter import MultiReporter, NullReporter, Reporter
from kubevision_trainer.runstate import RunState
from kubevision_trainer.settings import TrainerSettings

log = logging.getLogger(__name__)


def device_for(name: str) -> torch.device:
    """``auto`` is CUDA when available, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _loader_options(plan: TrainingPlan, device: torch.device) -> dict[str, Any]:
    """The DataLoader keywords every loader of a run shares."""
    workers = plan.spec.training.data_loader_workers
    return {
        "num_workers": workers,
        "pin_memory": device.type == "cuda",
        "collate_fn": collate_detection if plan.task is Task.DETECTION else None,
        "persistent_workers": workers > 0,
    }


def evaluation_loader(
    plan: TrainingPlan, images: list[CachedImage], device: torch.device, world: World
) -> DataLoader[Any]:
    """This rank's run of whole batches of ``images`` (``spec.training.batchSize`` each), with
    the evaluation preset (no augmentation): ``ValidationBatchSampler``'s sharding, so the
    gathered predictions are the single-process ones. The validation and test loaders, and
    ``kubevision evaluate``'s."""
    spec = plan.spec
    dataset = VisionDataset(
        images,
        plan.task,
        len(plan.concepts),
        presets.eval_preset(plan.task, spec.image_resizer),
        spec.training.seed,
    )
    return DataLoader(
        dataset,
        batch_sampler=ValidationBatchSampler(
            len(dataset), spec.training.batch_size, world.rank, world.world_size
        ),
        **_loader_options(plan, device),
    )


def loaders(
    plan: TrainingPlan, data: Prepared, device: torch.device, world: World | None = None
) -> tuple[DataLoader[Any], DataLoader[Any]]:
    """Training and validation DataLoaders of this rank (``world``; one process by default):
    its slice of every global training batch, its run of whole validation batches. Workers
    never share RNG state: each item seeds its own augmentations (``torchdata``).

    Raises:
        InputError: fewer than two training images a process (BatchNorm)."""
    world = world or World()
    spec, task = plan.spec, plan.task
    options = spec.training
    train_ds = VisionDataset(
        data.train,
        task,
        len(plan.concepts),
        presets.train_preset(task, spec.image_resizer, spec.augmentation),
        options.seed,
    )
    if world.world_size > 1 and len(train_ds) < smallest_last_batch(world.world_size):
        raise InputError(
            plan.dataset.uri,
            f"{len(train_ds)} training images for {world.world_size} processes: every process "
            "needs at least two (BatchNorm); add images or train on fewer processes "
            "(spec.resources)",
        )
    sampler = EpochSampler(len(train_ds), options.seed, shuffle=True)
    train = DataLoader(
        train_ds,
        batch_sampler=EpochBatchSampler(sampler, options.batch_size, world.rank, world.world_size),
        **_loader_options(plan, device),
    )
    return train, evaluation_loader(plan, data.val, device, world)


def held_out_loader(
    plan: TrainingPlan, data: Prepared, device: torch.device, world: World | None = None
) -> DataLoader[Any] | None:
    """The test split's DataLoader of this rank, built and sharded as the validation loader
    (whole batches, evaluation preset), or None when the plan has no test split. (Not
    ``test_loader``: pytest would collect that name wherever a test imports it.)"""
    if not data.test:
        return None
    return evaluation_loader(plan, data.test, device, world or World())


def run(
    plan: TrainingPlan,
    *,
    device: str = "auto",
    reporters: list[Reporter] | None = None,
    settings: TrainerSettings | None = None,
    should_stop: Callable[[], bool] | None = None,
    report_image: bool = True,
) -> dict[str, Any]:
    """Train ``plan`` to the end (or an early stop), resuming from ``last.pt`` when the
    output holds one, then evaluate the best checkpoint (``final``: ``evaluation.json``, its
    figures, ``report.png``). Returns the model card that was written.

    Under torchrun (``distributed.World.from_env``: more than one process) every worker calls
    this: it joins the process group (left again on return), trains its share of each global
    batch, and only global rank 0 checks storage, writes the manifest, records, checkpoints and
    the model card and tells ``reporters`` (the others ignore theirs; docs/distributed.md, "In
    the trainer"). Every rank returns the same card, less the evaluation's parts (serving
    thresholds, summary) that rank 0 alone computes.

    Args:
        device: ``auto`` (CUDA when available), ``cpu``, ``cuda``, ``cuda:N``; a distributed
            run on CUDA uses ``cuda:LOCAL_RANK``.
        reporters: told every event; a ``RecordsReporter`` is always added first.
        settings: cache folder, I/O threads, timeouts (default: from the environment).
        should_stop: polled once per batch and at each epoch's end; True (on any rank) stops
            the run with ``last.pt`` saved.
        report_image: write ``report.png`` (``kubevision train --no-report`` does not).

    Raises:
        InputError: bad dataset, weights, or an output holding another plan's ``last.pt``.
        engine.TrainingError: the loss diverged.
        engine.PreemptedError: ``should_stop()`` turned True; ``last.pt`` holds the position.
        OSError: storage failed.
        distributed.PeerFailedError: another rank failed at a step all take together.
    """
    settings = settings or TrainerSettings()
    world = World.from_env()
    dev = distributed.device_of(world, device_for(device))
    distributed.init(world, dev, settings.collective_timeout_seconds)
    try:
        return _run(plan, world, dev, reporters, settings, should_stop, report_image)
    finally:
        distributed.destroy()


def _run(
    plan: TrainingPlan,
    world: World,
    dev: torch.device,
    reporters: list[Reporter] | None,
    settings: TrainerSettings,
    should_stop: Callable[[], bool] | None,
    report_image: bool,
) -> dict[str, Any]:
    main = world.is_main
    storage.configure(
        storage.Timeouts(
            connect_seconds=settings.storage_connect_timeout_seconds,
            read_seconds=settings.storage_read_timeout_seconds,
            attempts=settings.storage_attempts,
        )
    )
    policy = upload.UploadPolicy(
        part_bytes=settings.upload_part_mib * upload.MIB,
        attempts=settings.storage_attempts,
        connect_timeout_seconds=settings.storage_connect_timeout_seconds,
        read_timeout_seconds=settings.storage_read_timeout_seconds,
    )
    store = checkpoint.CheckpointStore(plan.output_uri, policy)
    plan_hash = plan.training_hash()
    steps = StepTracker()
    fanout = MultiReporter([steps, *((reporters or []) if main else [])])
    ok = False
    try:
        fanout.step(StepName.LOADING_DATASET, StepState.RUNNING, "checking storage")
        ranks.on_main(world, lambda: preflight.check(plan))
        data = ranks.prepare_once(plan, settings, world)
        fanout.dataset(data.status)
        ranks.on_main(world, lambda: prepare.write_manifest(plan.output_uri, data))
        fanout.step(
            StepName.LOADING_DATASET,
            StepState.SUCCEEDED,
            f"{data.status.train} train, {data.status.val} val"
            + (f", {data.status.test} test" if data.status.test else "")
            + " images",
        )
        last = ranks.read_last(store, world)
        meta = {
            "planHash": plan_hash,
            "datasetSha256": data.digest,
            "task": plan.task.value,
            "concepts": plan.concepts,
            "architecture": plan.spec.architecture,
            "model": plan.model,
        }
        if last is not None:
            _check_resumable(last, meta, store.last_uri)
        # The initial weights depend on the seed alone, as every later random draw does.
        torch.manual_seed(derive_seed(plan.spec.training.seed, 0xB1D))
        model = models.build(
            plan.spec.architecture, plan.task, len(plan.concepts), plan.spec.image_resizer
        )
        if plan.spec.pretrained_weights is not None and last is None:
            # Rank 0 reads them; DDP gives its weights to the other ranks.
            uri = plan.spec.pretrained_weights.uri
            ranks.on_main(
                world,
                lambda: models.load_partial(
                    model,
                    models.state_dict_from_bytes(
                        storage.read_bytes(uri, role=StorageRole.WEIGHTS), uri
                    ),
                ),
            )
        train_loader, val_loader = loaders(plan, data, dev, world)
        trainer = engine.Engine(
            task=plan.task,
            concepts=plan.concepts,
            model=model,
            train_loader=train_loader,
            val_loader=val_loader,
            options=plan.spec.training,
            device=dev,
            reporter=fanout,
            checkpoints=store if main else ranks.NullCheckpoints(store.best_uri),
            meta=meta,
            should_stop=should_stop or (lambda: False),
            world=world,
        )
        records = RecordsReporter(plan.output_uri) if main else None
        if records is not None:
            # First, so the records are written before the other reporters hear of an epoch.
            fanout.reporters.insert(0, records)
        state = RunState()
        if last is not None:
            # Every reporter hears where the run resumes (Reporter.resumed): counters
            # continue, progress and records start from last.pt, not from 0.
            state = trainer.restore(last)
            log.info("resuming at epoch %d, batch %d", state.epoch + 1, state.batch)
            if state.best_epoch is not None and main:
                fanout.checkpoint(store.best_status(state.best_epoch))
        result = trainer.fit(state)

        fanout.step(StepName.EVALUATING, StepState.RUNNING)
        best_epoch = ranks.load_best(trainer.model, store, world)
        evaluated = final.evaluate_best(
            plan,
            trainer,
            best_epoch,
            fanout,
            records if report_image else None,
            test_loader=held_out_loader(plan, data, dev, world),
        )
        fanout.step(StepName.EVALUATING, StepState.SUCCEEDED, f"best epoch {best_epoch}")

        fanout.step(StepName.EXPORTING, StepState.RUNNING)
        # Imported here: the exporters need onnx, which only this step uses (a process that
        # imports the trainer for its loaders or engine, benchmarks/gpu.py, needs none).
        from kubevision_trainer.export import bundle  # noqa: PLC0415

        exported: list[ExportStatus] = []
        ranks.on_main(
            world,
            lambda: exported.append(bundle.write(plan, trainer.model, evaluated.validation)),
        )
        card = modelcard.build(
            plan,
            evaluated.metrics,
            best_epoch=result.run.best_epoch,
            initial=result.run.initial,
            plan_hash=plan_hash,
            evaluation=evaluated.validation,
            artifacts=None if evaluated.status is None else evaluated.status.artifacts,
            test=None if evaluated.status is None else evaluated.status.test,
            test_artifacts=None if evaluated.status is None else evaluated.status.test_artifacts,
            export=exported[0] if exported else None,
        )
        ranks.on_main(world, lambda: _write_card(plan, card, exported, fanout))
        fanout.step(
            StepName.EXPORTING,
            StepState.SUCCEEDED,
            f"{len(exported[0].artifacts)} files under {exported[0].uri}" if exported else None,
        )
        ok = True
        return card
    except engine.PreemptedError:
        raise  # a pause, not a failure: the step resumes with the next Pod
    except outcome.HANDLED as exc:
        # The step that failed says so (not the one before it, which succeeded).
        fanout.step(steps.failing(), StepState.FAILED, outcome.classify(exc)[1])
        raise
    finally:
        fanout.close(ok)


def _write_card(
    plan: TrainingPlan, card: dict[str, Any], exported: list[ExportStatus], fanout: Reporter
) -> None:
    """Write the model card; with the bundle (rank 0), tell the reporters of every file of it,
    the card included."""
    written = modelcard.write(plan.output_uri, card)
    if exported:
        status = exported[0]
        fanout.export(status.model_copy(update={"artifacts": [*status.artifacts, written]}))


def _check_resumable(last: dict[str, Any], meta: dict[str, Any], uri: str) -> None:
    old = last.get("meta", {})
    for key, what in (("planHash", "plan"), ("datasetSha256", "dataset manifest")):
        if old.get(key) != meta[key]:
            raise InputError(
                uri,
                f"was written for another {what} ({str(old.get(key))[:12]} != "
                f"{str(meta[key])[:12]}); refusing to resume: write to another output "
                "(spec.output.uri, or `kubevision train --output URI`) or remove this one",
                field=key,
            )


class StepTracker(NullReporter):
    """Remembers how far the trainer's steps got, so that a failure is charged to the step
    that was running, or to the next one when it came between two steps."""

    def __init__(self) -> None:
        self.reached: list[StepName] = []
        self.done: set[StepName] = set()

    def step(self, name: StepName, state: StepState, message: str | None = None) -> None:
        if name not in self.reached:
            self.reached.append(name)
        if state is StepState.SUCCEEDED:
            self.done.add(name)

    def failing(self) -> StepName:
        """The step a failure now belongs to."""
        trainer_steps = [s for s in StepName if s is not StepName.SCHEDULING]
        for name in trainer_steps:
            if name not in self.done:
                return name
        return trainer_steps[-1]


class StopFlag:
    """Set by SIGTERM (preemption): the engine saves ``last.pt`` after the current batch."""

    def __init__(self) -> None:
        self.event = threading.Event()

    def install(self) -> None:
        """Route SIGTERM to the flag (main thread only)."""
        signal.signal(signal.SIGTERM, lambda signum, frame: self.event.set())

    def __call__(self) -> bool:
        return self.event.is_set()


def _terminate(path: str, outcome: contract.Outcome, message: str) -> int:
    """Write the termination line (``contract.termination_line``) and return the outcome's
    exit code. In a launched worker the line goes to the launcher (``launch``)."""
    line = contract.termination_line(outcome, message)
    # A worker of a launch writes where the launcher picks the first failure's line (a peer
    # that fails later, e.g. on the collective the first one left, must not overwrite it).
    if not launch.record_worker_line(line):
        # Outside a Pod the termination log may not be writable; stderr still has the line.
        with contextlib.suppress(OSError):
            Path(path).write_text(line)
    print(line, file=sys.stderr)  # noqa: T201  (the entry point's one line to the user)
    return outcome.exit_code


def run_plan_file(path: str, *, device: str = "auto", termination_log: str) -> int:
    """The training Job's entry point: run the plan in ``path``; the last error goes to
    ``termination_log`` in one line. Returns the exit code of the run's ``contract.Outcome``:
    0 done, 2 bad input, 1 training failed or another error, 143 preempted (SIGTERM,
    ``last.pt`` saved)."""
    stop = StopFlag()
    stop.install()
    try:
        try:
            plan = TrainingPlan.model_validate_json(Path(path).read_text())
        except OSError as exc:
            raise InputError(path, f"cannot read the plan: {exc.strerror}") from exc
        except ValueError as exc:
            raise InputError(path, f"not a TrainingPlan: {exc}") from exc
        run(plan, device=device, reporters=factory.job_reporters(plan), should_stop=stop)
    except outcome.HANDLED as exc:
        ending, message = outcome.classify(exc)
        return _terminate(termination_log, ending, message)
    return contract.Outcome.SUCCEEDED.exit_code
