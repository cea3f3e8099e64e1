"""Wiring of one training run: TrainingPlan in; dataset, model, engine, reporters and storage
plugged together; records and checkpoints out. Also the Job's entry point
(``kubevision trainer --plan``)."""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import signal
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch.utils.data import BatchSampler, DataLoader

from kubevision_api import contract
from kubevision_api.contract import StepName, StorageRole
from kubevision_api.errors import InputError
from kubevision_api.modelversion import (
    DatasetStatus,
    EpochMetrics,
    SkippedImages,
    StepState,
)
from kubevision_api.plan import TrainingPlan
from kubevision_api.view import Task
from kubevision_trainer import checkpoint, engine, models, presets, storage
from kubevision_trainer.data import balance, boxes, coverage, loading, readers, split
from kubevision_trainer.data.loading import CachedImage
from kubevision_trainer.data.torchdata import (
    EpochBatchSampler,
    EpochSampler,
    VisionDataset,
    collate_detection,
    derive_seed,
)
from kubevision_trainer.report import factory, prometheus
from kubevision_trainer.report.records import RecordsReporter
from kubevision_trainer.report.reporter import MultiReporter, Reporter
from kubevision_trainer.settings import TrainerSettings

log = logging.getLogger(__name__)

DATASET = "dataset.json"
MODEL_CARD = "model.json"


@dataclass
class Prepared:
    """The dataset of a run, read, split and validated."""

    train: list[CachedImage]
    val: list[CachedImage]
    status: DatasetStatus
    manifest: dict[str, Any]
    digest: str


def device_for(name: str) -> torch.device:
    """``auto`` is CUDA when available, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def prepare_dataset(plan: TrainingPlan, settings: TrainerSettings, reporter: Reporter) -> Prepared:
    """Read the annotations, split, balance, and load every image (validated and cached).

    Raises:
        InputError: bad annotations or images, or an empty train or val split.
    """
    result = readers.read_dataset(plan.dataset, plan.task, plan.concepts)
    options = plan.spec.dataset_split
    train, val = split.split(
        result.samples, options.validation_fraction, options.seed, options.stratified
    )
    train = split.leave_out_background(train, plan.task, result.skipped)
    if not train or not val:
        raise InputError(
            result.source,
            f"the {'training' if not train else 'validation'} split is empty "
            f"({len(result.samples)} images); add images or change "
            "spec.datasetSplit.validationFraction",
        )
    # Before reading any image, then again once boxes under 1 px at the resizer's size are gone.
    check = functools.partial(
        coverage.check,
        result,
        plan.concepts,
        task=plan.task,
        allow_empty=plan.dataset.allow_empty_concepts,
    )
    check(train, val)
    loaded = loading.load_images(
        train + val,
        settings.cache_dir,
        threads=settings.io_threads,
        options=loading.LoadOptions.of(plan),
    )
    result.boxes.drop(boxes.UNDER_ONE_PIXEL, sum(item.small_boxes for item in loaded))
    train_items, val_items = loaded[: len(train)], loaded[len(train) :]
    train_items = split.leave_out_background(train_items, plan.task, result.skipped)
    covered = check([item.sample for item in train_items], [item.sample for item in val_items])
    balanced = train_items
    if options.balancing.enabled:
        by_path = {item.sample.path: item for item in train_items}
        order = balance.balance(
            [item.sample for item in train_items],
            len(plan.concepts),
            options.balancing.max_expansion_ratio,
            options.seed,
        )
        balanced = [by_path[s.path] for s in order]
    images = [
        {
            "path": item.sample.path,
            "split": side,
            "sha256": item.sha256,
            "concepts": [plan.concepts[i] for i in item.sample.labels],
            "boxes": len(item.sample.boxes),
        }
        for side, items in (("train", train_items), ("val", val_items))
        for item in items
    ]
    manifest: dict[str, Any] = {
        "source": result.source,
        "format": plan.dataset.format.value,
        "task": plan.task.value,
        "concepts": plan.concepts,
        "images": images,
        "skipped": dict(sorted(result.skipped.items())),
        "ignoredAnnotations": dict(sorted(result.ignored_annotations.items())),
    }
    detection = plan.task is Task.DETECTION
    background_val = sum(1 for item in val_items if not item.sample.boxes) if detection else 0
    if detection:
        manifest.update(backgroundVal=background_val, boxes=result.boxes.manifest())
    digest = storage.sha256(json.dumps(images, sort_keys=True).encode())
    status = DatasetStatus(
        train=len(train_items),
        val=len(val_items),
        train_balanced=len(balanced) if options.balancing.enabled else None,
        skipped=[SkippedImages(reason=r, count=c) for r, c in sorted(result.skipped.items())],
        ignored_annotations=sum(result.ignored_annotations.values()),
        concepts_without_val_positives=covered.without_val,
        concepts_without_train_positives=covered.without_train,
        background_val=background_val,
        boxes=result.boxes.status() if detection else None,
    )
    reporter.dataset(status)
    return Prepared(balanced, val_items, status, manifest, digest)


def loaders(
    plan: TrainingPlan, data: Prepared, device: torch.device
) -> tuple[DataLoader[Any], DataLoader[Any]]:
    """Training and validation DataLoaders. Workers never share RNG state: each item seeds
    its own augmentations (``torchdata``)."""
    spec, task = plan.spec, plan.task
    options = spec.training
    num_classes = len(plan.concepts)
    train_ds = VisionDataset(
        data.train,
        task,
        num_classes,
        presets.train_preset(task, spec.image_resizer, spec.augmentation),
        options.seed,
    )
    val_ds = VisionDataset(
        data.val, task, num_classes, presets.eval_preset(task, spec.image_resizer), options.seed
    )
    sampler = EpochSampler(len(train_ds), options.seed, shuffle=True)
    collate = collate_detection if task is Task.DETECTION else None
    common: dict[str, Any] = {
        "num_workers": options.data_loader_workers,
        "pin_memory": device.type == "cuda",
        "collate_fn": collate,
        "persistent_workers": options.data_loader_workers > 0,
    }
    train = DataLoader(
        train_ds, batch_sampler=EpochBatchSampler(sampler, options.batch_size), **common
    )
    val = DataLoader(
        val_ds,
        batch_sampler=BatchSampler(
            EpochSampler(len(val_ds), options.seed, shuffle=False),
            options.batch_size,
            drop_last=False,
        ),
        **common,
    )
    return train, val


def _model_card(
    plan: TrainingPlan, final: EpochMetrics, progress: engine.Progress, plan_hash: str
) -> dict[str, Any]:
    spec = plan.spec
    return {
        "apiVersion": plan.api_version,
        "kind": "ModelCard",
        "namespace": plan.namespace,
        "modelVersion": plan.model_version,
        "view": plan.view,
        "task": plan.task.value,
        "model": plan.model,
        "concepts": plan.concepts,
        "architecture": spec.architecture,
        "input": {
            "width": spec.image_resizer.width,
            "height": spec.image_resizer.height,
            "resizer": spec.image_resizer.mode.value,
            "normalisation": presets.normalisation(plan.task),
            "detectionLabelOffset": 1 if plan.task is Task.DETECTION else 0,
        },
        "metrics": {
            "bestEpoch": progress.best_epoch,
            **final.model_dump(mode="json", by_alias=True),
            "initial": progress.initial,
        },
        "planHash": plan_hash,
        "recipe": plan.model_dump(mode="json", by_alias=True, exclude={"status_endpoint"}),
        "versions": {
            "python": sys.version.split()[0],
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
        },
    }


def run(
    plan: TrainingPlan,
    *,
    device: str = "auto",
    reporters: list[Reporter] | None = None,
    settings: TrainerSettings | None = None,
    should_stop: Any = None,
) -> dict[str, Any]:
    """Train ``plan`` to the end (or an early stop), resuming from ``last.pt`` when the
    output holds one. Returns the model card that was written.

    Raises:
        InputError: bad dataset, weights, or an output holding another plan's ``last.pt``.
        engine.TrainingError: the loss diverged.
        engine.PreemptedError: ``should_stop()`` turned True; ``last.pt`` holds the position.
    """
    settings = settings or TrainerSettings()
    dev = device_for(device)
    store = checkpoint.CheckpointStore(plan.output_uri)
    plan_hash = plan.training_hash()
    fanout = MultiReporter(reporters or [])
    ok = False
    try:
        fanout.step(StepName.LOADING_DATASET, StepState.RUNNING)
        data = prepare_dataset(plan, settings, fanout)
        storage.write_atomic(
            storage.join(plan.output_uri, DATASET),
            json.dumps(data.manifest, indent=1).encode(),
        )
        fanout.step(
            StepName.LOADING_DATASET,
            StepState.SUCCEEDED,
            f"{data.status.train} train, {data.status.val} val images",
        )
        last = store.load_last()
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
            uri = plan.spec.pretrained_weights.uri
            models.load_partial(
                model,
                models.state_dict_from_bytes(
                    storage.read_bytes(uri, role=StorageRole.WEIGHTS), uri
                ),
            )
        train_loader, val_loader = loaders(plan, data, dev)
        progress = engine.Progress(**last["progress"]) if last is not None else engine.Progress()
        records = RecordsReporter(
            plan.output_uri, progress.history, (progress.epoch + 1, progress.batch)
        )
        fanout.reporters.insert(0, records)
        trainer = engine.Engine(
            task=plan.task,
            concepts=plan.concepts,
            model=model,
            train_loader=train_loader,
            val_loader=val_loader,
            options=plan.spec.training,
            device=dev,
            reporter=fanout,
            checkpoints=store,
            meta=meta,
            should_stop=should_stop or (lambda: False),
        )
        if last is not None:
            trainer.restore(last)
            # The Job's reporters were made before last.pt was read: without this, a resumed
            # trainer's Prometheus counters (batches, images) would start over from 0 and the
            # pushed series would no longer equal epochs x batches per epoch.
            # (prometheus.py's start_batches/start_images, which factory cannot know yet.)
            for reporter in fanout.reporters:
                if isinstance(reporter, prometheus.PrometheusReporter):
                    reporter.batches.inc(progress.batches_total)
                    reporter.images.inc(progress.images_total)
            log.info("resuming at epoch %d, batch %d", progress.epoch + 1, progress.batch)
            if progress.best_epoch is not None:
                fanout.checkpoint(store.best_status(progress.best_epoch))
        result = trainer.fit(progress)

        fanout.step(StepName.EVALUATING, StepState.RUNNING)
        best = store.load_best()
        trainer.model.load_state_dict(best["model"])
        val_loss, evaluation = trainer.evaluate()
        final = EpochMetrics(
            epoch=int(best["epoch"]),
            val_loss=val_loss,
            accuracy=evaluation.accuracy,
            map=evaluation.map,
            ap50=evaluation.ap50,
        )
        fanout.step(StepName.EVALUATING, StepState.SUCCEEDED, f"best epoch {final.epoch}")

        fanout.step(StepName.EXPORTING, StepState.RUNNING)
        card = _model_card(plan, final, result.progress, plan_hash)
        storage.write_atomic(
            storage.join(plan.output_uri, MODEL_CARD), json.dumps(card, indent=1).encode()
        )
        fanout.step(StepName.EXPORTING, StepState.SUCCEEDED)
        ok = True
        return card
    finally:
        fanout.close(ok)


def _check_resumable(last: dict[str, Any], meta: dict[str, Any], uri: str) -> None:
    old = last.get("meta", {})
    for key, what in (("planHash", "plan"), ("datasetSha256", "dataset manifest")):
        if old.get(key) != meta[key]:
            raise InputError(
                uri,
                f"was written for another {what} ({str(old.get(key))[:12]} != "
                f"{str(meta[key])[:12]}); refusing to resume: use a new output URI",
                field=key,
            )


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
    exit code."""
    line = contract.termination_line(outcome, message)
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
    except InputError as exc:
        return _terminate(termination_log, contract.Outcome.INVALID_INPUT, str(exc))
    except engine.PreemptedError as exc:
        return _terminate(termination_log, contract.Outcome.PREEMPTED, str(exc))
    except engine.TrainingError as exc:
        return _terminate(termination_log, contract.Outcome.TRAINING_FAILED, str(exc))
    except (OSError, RuntimeError) as exc:
        # Storage or torch failures (CUDA out of memory, a lost endpoint): the one line the
        # operator shows as the Failed condition's message.
        return _terminate(termination_log, contract.Outcome.ERROR, f"{type(exc).__name__}: {exc}")
    return contract.Outcome.SUCCEEDED.exit_code
