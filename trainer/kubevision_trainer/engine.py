"""The training loop: one epoch of training, one pass of validation, and ``fit`` around them
with best-checkpoint selection, early stopping and resume. It knows no storage, Prometheus or
Kubernetes: it talks to a ``Reporter`` and a ``Checkpoints`` sink."""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import torch
from torch import nn
from torch.utils.data import DataLoader

from kubevision_api.contract import StepName
from kubevision_api.modelversion import MixedPrecision, TrainingOptions
from kubevision_api.status import CheckpointStatus, EpochMetrics, StepState
from kubevision_api.view import Task
from kubevision_trainer import ddp, distributed, finite, runstate, schedule, sharded_eval
from kubevision_trainer.data.torchdata import EpochBatchSampler, derive_seed
from kubevision_trainer.report.reporter import BatchEvent, Reporter
from kubevision_trainer.runstate import RUN_STATE_KEY, RunState

log = logging.getLogger(__name__)


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. the loss became NaN); the message says what to change."""


class NonFiniteError(TrainingError):
    """The loss, a validation result or a tensor about to be saved is NaN or infinite. Nothing
    non-finite is saved: ``last.pt`` stays the last finite one."""


class PreemptedError(RuntimeError):
    """A stop was requested (SIGTERM); ``last.pt`` holds the position to resume from."""


_ADVICE = "lower spec.training.learningRate or add warmup (spec.training.lrSchedule)"


class Checkpoints(Protocol):
    """Where the engine's checkpoints go (``checkpoint.CheckpointStore`` in production)."""

    def save_last(self, state: dict[str, Any]) -> None:
        """Replace ``last.pt`` atomically."""

    def save_best(self, state: dict[str, Any], epoch: int) -> CheckpointStatus:
        """Replace ``best.pt`` atomically; returns what was written."""


@dataclass
class FitResult:
    """How ``fit`` ended."""

    run: RunState
    stopped_early: bool


class Engine:
    """Trains ``model`` on ``train_loader`` (whose batch sampler is an ``EpochBatchSampler``,
    which alone knows how many batches an epoch has) and validates on ``val_loader``.

    Args:
        task, concepts: the View's task and concepts in class-index order.
        model: classifier (logits (N, C)) or torchvision detector.
        options: ``spec.training``.
        device: where to train; on CUDA, mixed precision and channels_last apply.
        reporter: receives every event.
        checkpoints: receives ``last.pt`` and ``best.pt`` states.
        meta: plain data stored in every checkpoint (plan hash, dataset hash, concepts...).
        should_stop: polled once per batch (before its backward) and at each epoch's end; True
            on any rank saves ``last.pt`` after the batch and raises ``PreemptedError`` on all.
        world: this process's place in a distributed training (a world of one by default: no
            DDP, no collective). Every rank calls the same methods; only the sink and reporter
            of rank 0 write anything (``main.run`` gives the others null ones).
        compile_backend: torch.compile's backend when ``options.compile`` (``ddp.wrap``).
    """

    def __init__(
        self,
        *,
        task: Task,
        concepts: list[str],
        model: nn.Module,
        train_loader: DataLoader[Any],
        val_loader: DataLoader[Any],
        options: TrainingOptions,
        device: torch.device,
        reporter: Reporter,
        checkpoints: Checkpoints,
        meta: dict[str, Any],
        should_stop: Callable[[], bool] = lambda: False,
        world: distributed.World | None = None,
        compile_backend: str = "inductor",
    ) -> None:
        self.task = task
        self.concepts = concepts
        self.options = options
        self.device = device
        self.reporter = reporter
        self.checkpoints = checkpoints
        self.meta = meta
        self.should_stop = should_stop
        self.train_loader = train_loader
        self.val_loader = val_loader
        batch_sampler = train_loader.batch_sampler
        if not isinstance(batch_sampler, EpochBatchSampler):
            raise TypeError("train_loader must batch with an EpochBatchSampler")
        self.batch_sampler = batch_sampler
        self.steps_per_epoch = batch_sampler.epoch_batches
        self.cuda = device.type == "cuda"
        self.amp_dtype = self._amp_dtype()
        self.world = world or distributed.World()
        model = model.to(device)
        if self.cuda and task is not Task.DETECTION:
            model = model.to(memory_format=torch.channels_last)
        # The plain module (state dicts, validation), and DDP around it for training batches.
        self.train_model, self.model = ddp.wrap(
            model,
            self.world,
            device,
            sync_batch_norm=options.sync_batch_norm,
            compile_backend=compile_backend if options.compile else None,
        )
        self.input_dtype = next(self.model.parameters()).dtype
        self.optimizer = schedule.optimizer(self.model.parameters(), options)
        self.scheduler = schedule.scheduler(self.optimizer, options, self.steps_per_epoch)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        self.selection = runstate.selection(task)

    def _amp_dtype(self) -> torch.dtype | None:
        if not self.cuda or self.options.mixed_precision is MixedPrecision.NONE:
            return None
        if self.options.mixed_precision is MixedPrecision.BF16 and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float16

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type="cuda", dtype=self.amp_dtype)

    def _to_device(self, images: Any, targets: Any) -> tuple[Any, Any]:
        return sharded_eval.to_device(self.task, self.device, self.input_dtype, images, targets)

    def _loss(self, images: Any, targets: Any) -> torch.Tensor:
        """The training batch's mean loss (through DDP in a distributed run)."""
        if self.task is Task.DETECTION:
            losses = self.train_model(images, targets)
            return torch.stack([v for v in losses.values()]).sum()
        logits = self.train_model(images)
        # Mixed precision's float16/bfloat16 logits are widened for the loss; float64 stays.
        logits = logits if logits.dtype == torch.float64 else logits.float()
        if self.task is Task.CLASSIFICATION:
            return nn.functional.cross_entropy(logits, targets)
        return nn.functional.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype))

    # -- state ---------------------------------------------------------------------------

    def state(self, run: RunState) -> dict[str, Any]:
        """The ``last.pt`` payload: state dicts and plain data (loadable with
        ``weights_only=True``)."""
        return {
            "format": 1,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": torch.get_rng_state(),
            RUN_STATE_KEY: asdict(run),
            "meta": self.meta,
        }

    def restore(self, state: dict[str, Any]) -> RunState:
        """Load a ``last.pt`` payload and tell the reporter where the run resumes
        (``Reporter.resumed``); returns the run's state, for ``fit``."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng"])
        run = RunState(**state[RUN_STATE_KEY])
        self.reporter.resumed(
            run.resume_point(
                batches=self.steps_per_epoch, epochs=self.options.epochs, selection=self.selection
            )
        )
        return run

    # -- loops ---------------------------------------------------------------------------

    def _batches(self, epoch: int, start: int) -> Iterator[tuple[int, Any, Any]]:
        self.batch_sampler.set_epoch(epoch, start)
        for index, (images, targets) in enumerate(self.train_loader, start=start):
            yield index, images, targets

    def train_one_epoch(self, epoch: int, run: RunState) -> float:
        """Train epoch ``epoch`` (1-based) from batch ``run.batch``, updating ``run`` after
        each batch; returns the mean batch loss of the epoch.

        Raises:
            TrainingError: the loss is not finite.
            PreemptedError: ``should_stop()`` turned True (``last.pt`` was saved first).
        """
        self.model.train()
        if run.batch == 0:
            # Seeding per epoch makes an epoch re-run after a restart draw the same numbers.
            torch.manual_seed(derive_seed(self.options.seed, epoch, 0xE9))
        self.reporter.start_epoch(epoch, self.options.epochs, self.steps_per_epoch)
        for index, cpu_images, cpu_targets in self._batches(epoch, run.batch):
            started = time.perf_counter()
            images, targets = self._to_device(cpu_images, cpu_targets)
            lr = float(self.optimizer.param_groups[0]["lr"])
            with self._autocast():
                loss = self._loss(images, targets)
            count = len(images)
            # Before backward, every rank learns the global loss, a stop, a non-finite loss.
            agreed = ddp.agree(loss, count, self.should_stop())
            if agreed.non_finite:
                raise NonFiniteError(
                    f"the loss is {agreed.loss} at epoch {epoch}, batch {index} "
                    f"({self._rates(lr)}): {_ADVICE}"
                )
            scale = ddp.loss_scale(count, agreed.count, self.world.world_size)
            if scale != 1.0:
                loss = loss * scale
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()  # type: ignore[no-untyped-call]
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.scheduler.step()
            run.batch = index + 1
            run.loss_sum += agreed.loss
            run.loss_count += 1
            run.batches_total += 1
            run.images_total += agreed.count
            self.reporter.batch(
                BatchEvent(
                    epoch,
                    index,
                    self.steps_per_epoch,
                    lr,
                    agreed.loss,
                    agreed.count,
                    time.perf_counter() - started,
                )
            )
            if agreed.stop and run.batch < self.steps_per_epoch:
                state = self.state(run)
                self._check_state(state, epoch, lr)
                self.checkpoints.save_last(state)
                # The others wait for rank 0's last.pt: a launcher that ends the gang when one
                # rank exits must not cut the upload short.
                distributed.barrier()
                raise PreemptedError(f"stopped at epoch {epoch}, batch {run.batch}")
        return run.loss_sum / max(1, run.loss_count)

    def evaluate(
        self, loader: DataLoader[Any] | None = None, *, keep_predictions: bool = False
    ) -> sharded_eval.Validation:
        """Validation loss (mean over images) and metrics of the whole validation set (or of
        ``loader``'s, batched by a ``ValidationBatchSampler``), sharded over the ranks and
        gathered (``sharded_eval``): every rank gets one process's figures, and rank 0 the
        predictions when ``keep_predictions``.

        Raises:
            NonFiniteError: the model's outputs are NaN or infinite.
            TrainingError: the metrics could not be computed.
        """
        # Every rank validates with rank 0's BatchNorm statistics: the ones it saves.
        distributed.broadcast_buffers(self.model)
        try:
            return sharded_eval.evaluate(
                self.model,
                self.val_loader if loader is None else loader,
                task=self.task,
                concepts=self.concepts,
                seed=self.options.seed,
                to_device=self._to_device,
                autocast=self._autocast,
                keep_predictions=keep_predictions,
            )
        except sharded_eval.ValidationFailedError as exc:
            error = NonFiniteError if exc.non_finite else TrainingError
            raise error(str(exc)) from exc

    def fit(self, run: RunState | None = None) -> FitResult:
        """Train from ``run`` (a fresh run when None) to the last epoch or an early stop.

        Each epoch: train, validate, report the epoch, save ``best.pt`` when the selection
        metric improved (by more than ``minDelta``; the first epoch always counts), then save
        ``last.pt``. Returns where the run ended."""
        run = run or RunState()
        if run.initial is None and run.epoch == 0 and run.batch == 0:
            # The untrained (or pretrained) model's metrics: the baseline every epoch beats.
            first = self.evaluate()
            val_loss, result = first.loss, first.result
            run.initial = EpochMetrics(
                epoch=1,
                val_loss=val_loss,
                accuracy=result.accuracy,
                map=result.map,
                ap50=result.ap50,
            ).model_dump(mode="json", by_alias=True, exclude={"epoch"})
            log.info("before training: %s", run.initial)
        epochs = self.options.epochs
        patience = self.options.early_stopping.patience
        self.reporter.step(StepName.TRAINING, StepState.RUNNING)
        stopped_early = False
        while run.epoch < epochs:
            epoch = run.epoch + 1
            train_loss = self.train_one_epoch(epoch, run)
            lr = float(self.optimizer.param_groups[0]["lr"])
            try:
                validation = self.evaluate()
            except NonFiniteError as exc:
                detail = f"{exc} after epoch {epoch} ({self._rates(lr)}): {_ADVICE}"
                raise NonFiniteError(detail) from exc
            val_loss, result = validation.loss, validation.result
            record = EpochMetrics(
                epoch=epoch,
                learning_rate=lr,
                train_loss=train_loss,
                val_loss=val_loss,
                accuracy=result.accuracy,
                map=result.map,
                ap50=result.ap50,
            )
            for name, number in (
                ("validation loss", val_loss),
                ("accuracy", result.accuracy),
                ("mAP", result.map),
            ):
                if number is not None and not math.isfinite(number):
                    raise NonFiniteError(
                        f"the {name} is {number} after epoch {epoch} ({self._rates(lr)}): {_ADVICE}"
                    )
            value = runstate.selected_value(record, self.selection)
            improved = run.improves(value, self.options.early_stopping.min_delta)
            run.end_epoch(record, value, improved)
            self.reporter.epoch(record, run.best(), self.selection)
            last = self.state(run)
            self._check_state(last, epoch, lr)
            if improved:
                status = self.checkpoints.save_best(self.best_state(epoch, record), epoch)
                self.reporter.checkpoint(status)
            self.checkpoints.save_last(last)
            log.info(
                "epoch %d/%d: train loss %.4f, val loss %.4f, accuracy %s, mAP %s",
                epoch,
                epochs,
                train_loss,
                val_loss,
                record.accuracy,
                record.map,
            )
            if patience and run.stale_epochs >= patience and run.epoch < epochs:
                stopped_early = True
                log.info("early stop: no improvement for %d epochs", patience)
                break
            # Every rank asks (one all-reduce), so all stop after the same epoch.
            if distributed.any_rank(self.should_stop()) and run.epoch < epochs:
                raise PreemptedError(f"stopped after epoch {epoch}")
        self.reporter.step(
            StepName.TRAINING,
            StepState.SUCCEEDED,
            f"early stop after epoch {run.epoch}" if stopped_early else None,
        )
        return FitResult(run, stopped_early)

    def _rates(self, lr: float) -> str:
        """The learning rate in use and the recipe's, for messages."""
        return f"learning rate {lr:g}, spec.training.learningRate {self.options.learning_rate:g}"

    def _check_state(self, state: dict[str, Any], epoch: int, lr: float) -> None:
        """Refuse to save a payload holding a NaN or an infinity (weights that diverged while
        the loss still looked finite, a BatchNorm buffer that overflowed)."""
        where = finite.first_non_finite(state)
        if where is not None:
            raise NonFiniteError(
                f"{where} is not finite after epoch {epoch} ({self._rates(lr)}); last.pt "
                f"keeps the last finite state: {_ADVICE}"
            )

    def best_state(self, epoch: int, record: EpochMetrics) -> dict[str, Any]:
        """The ``best.pt`` payload: the model's state dict and plain data."""
        return {
            "format": 1,
            "model": self.model.state_dict(),
            "epoch": epoch,
            "metrics": record.model_dump(mode="json", by_alias=True),
            "meta": self.meta,
        }
