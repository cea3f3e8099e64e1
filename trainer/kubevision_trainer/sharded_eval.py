"""Validation of a run, sharded over the ranks of a distributed training (docs/distributed.md,
"In the trainer").

Each rank evaluates its contiguous run of whole single-process validation batches
(``torchdata.ValidationBatchSampler``) with the plain module (no DDP, no collective inside the
model), into its own evaluator; the evaluators and the per-batch loss sums are gathered to
rank 0, merged in rank order (which is the single-process order), and computed once; rank 0
broadcasts the result, so every rank takes the same best-checkpoint and early-stop decisions;
the merged predictions, when asked for (the final evaluation), stay on rank 0.
Each batch's random draws (a detector's loss samples RoIs) are seeded by the batch's position:
the figures are those of one process, whatever the world size. With one process nothing is
gathered."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from kubevision_api.view import Task
from kubevision_trainer import distributed, metrics, presets
from kubevision_trainer.data.torchdata import derive_seed
from kubevision_trainer.evaluation.predictions import Predictions


class ValidationFailedError(RuntimeError):
    """Validation could not produce metrics; ``non_finite`` when the outputs were NaN/inf."""

    def __init__(self, message: str, *, non_finite: bool) -> None:
        super().__init__(message)
        self.non_finite = non_finite


@dataclass(frozen=True)
class Validation:
    """One validation pass.

    Attributes:
        loss: mean over images of the task's loss (every rank).
        result: the epoch metrics (every rank).
        predictions: every image's predictions in the single-process order, on rank 0 when
            asked for (``keep_predictions``); None otherwise and on the other ranks.
    """

    loss: float
    result: metrics.EvalResult
    predictions: Predictions | None = None


def to_device(
    task: Task, device: torch.device, dtype: torch.dtype, images: Any, targets: Any
) -> tuple[Any, Any]:
    """A loader's batch on ``device`` as the network takes it (``presets.model_input``):
    a detector's lists of float [0, 1] images and target dicts, a classifier's normalised
    image tensor in ``dtype`` (the model's: float32, or float64 where a test builds it so),
    channels-last on CUDA. The uint8 images cross to the device before the conversion: a
    quarter of float32's bytes."""
    nb = device.type == "cuda"
    if task is Task.DETECTION:
        images = [img.to(device, non_blocking=nb) for img in images]
        targets = [{k: v.to(device, non_blocking=nb) for k, v in t.items()} for t in targets]
        return presets.model_input(task, images, dtype), targets
    images = presets.model_input(task, images.to(device, non_blocking=nb), dtype)
    if nb:
        images = images.contiguous(memory_format=torch.channels_last)
    return images, targets.to(device, non_blocking=nb)


@dataclass
class _Share:
    """What one rank sends to rank 0: its evaluator, sum of per-image losses and image count
    per batch (in its batch order), and the first problem it met."""

    evaluator: metrics.Evaluator
    losses: list[tuple[float, int]]
    problem: str | None = None


def _norm_layers_eval(model: nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._NormBase | nn.GroupNorm | nn.LayerNorm):
            module.eval()


def _batch(
    model: nn.Module,
    task: Task,
    images: Any,
    targets: Any,
    evaluator: metrics.Evaluator,
) -> tuple[float, str | None]:
    """One batch: its sum of per-image losses, and a problem (non-finite logits) or None."""
    count = len(images)
    if task is Task.DETECTION:
        # torchvision detectors return losses only in train mode; norm layers stay in eval
        # mode so that validation data never updates their running statistics.
        model.train()
        _norm_layers_eval(model)
        losses = model(images, targets)
        # The detector's loss is a mean over the batch: weighted by its images.
        total = float(torch.stack(list(losses.values())).sum()) * count
        model.eval()
        outputs = model(images)
        evaluator.update(
            [{k: (v.float() if v.is_floating_point() else v).cpu() for k, v in o.items()}
             for o in outputs],
            [{k: v.cpu() for k, v in t.items()} for t in targets],
        )  # fmt: skip
        return total, None
    model.eval()
    logits = model(images).float()
    if not bool(torch.isfinite(logits).all()):
        return 0.0, "the model's outputs on the validation set are NaN or infinite"
    if task is Task.CLASSIFICATION:
        total = float(nn.functional.cross_entropy(logits, targets, reduction="sum"))
    else:
        # Tagging: the mean over concepts of each image, summed over the images.
        per_image = nn.functional.binary_cross_entropy_with_logits(
            logits, targets, reduction="none"
        ).mean(dim=1)
        total = float(per_image.sum())
    evaluator.update(logits.cpu(), targets.cpu())
    return total, None


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: DataLoader[Any],
    *,
    task: Task,
    concepts: list[str],
    seed: int,
    to_device: Callable[[Any, Any], tuple[Any, Any]],
    autocast: Callable[[], contextlib.AbstractContextManager[Any]],
    keep_predictions: bool = False,
) -> Validation:
    """Validation loss (mean over images of the task's loss) and metrics over the whole
    validation set, on every rank; with ``keep_predictions``, rank 0 also gets every image's
    predictions in the single-process order (the others get None).

    Args:
        model: the plain module (never the DDP wrapper); left in train mode.
        loader: this rank's batches; its batch sampler's ``positions`` are their places in the
            single-process batch order (0.. when it has none).
        seed: spec.training.seed; a batch's random draws are seeded by (seed, its position).
        to_device, autocast: the engine's.

    Raises:
        ValidationFailedError: some rank's outputs were not finite, or rank 0 could not compute
            the metrics; raised on every rank.
    """
    evaluator = metrics.evaluator_for(task, concepts, keep_predictions=keep_predictions)
    share = _Share(evaluator, [])
    positions = list(getattr(loader.batch_sampler, "positions", range(len(loader))))
    cuda = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    for position, (cpu_images, cpu_targets) in zip(positions, loader, strict=True):
        images, targets = to_device(cpu_images, cpu_targets)
        # Every batch draws the same numbers whichever rank runs it; the global RNG is left
        # as it was (training's draws do not depend on validation).
        with torch.random.fork_rng(devices=cuda), autocast():
            torch.manual_seed(derive_seed(seed, position, 0xE7A1))
            total, problem = _batch(model, task, images, targets, evaluator)
        if problem is not None:
            share.problem = problem
            break
        share.losses.append((total, len(images)))
    model.train()
    shares = distributed.gather_objects(share)
    combined: _Combined | None = None
    predictions: Predictions | None = None
    if shares is not None:
        combined, merged = _combine(task, concepts, shares, keep_predictions)
        if keep_predictions and merged is not None:
            # Rank 0's alone: broadcasting them would cost every epoch for nothing.
            predictions = merged.predictions()
    combined = distributed.broadcast_object(combined)
    if combined.failure is not None:
        raise ValidationFailedError(combined.failure, non_finite=combined.non_finite)
    assert combined.result is not None
    return Validation(combined.loss, combined.result, predictions)


@dataclass
class _Combined:
    """What rank 0 broadcasts: the loss and metrics, or why there are none."""

    loss: float = 0.0
    result: metrics.EvalResult | None = None
    failure: str | None = None
    non_finite: bool = False


def _combine(
    task: Task, concepts: list[str], shares: list[_Share], keep_predictions: bool
) -> tuple[_Combined, metrics.Evaluator | None]:
    """Rank 0: every rank's share merged in rank order, and computed; the merged evaluator
    (None when some rank failed)."""
    for share in shares:
        if share.problem is not None:
            return _Combined(failure=share.problem, non_finite=True), None
    evaluator = metrics.evaluator_for(task, concepts, keep_predictions=keep_predictions)
    loss, count = 0.0, 0
    for share in shares:
        evaluator.merge(share.evaluator)
        for total, images in share.losses:
            loss += total
            count += images
    try:
        result = evaluator.compute()
    except ValueError as exc:
        return _Combined(failure=f"the validation metrics failed: {exc}"), None
    return _Combined(loss=loss / max(1, count), result=result), evaluator
