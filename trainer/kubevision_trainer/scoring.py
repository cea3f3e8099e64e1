"""A model scored on a set of images: one sharded validation pass that keeps every image's
predictions, and the figures of ``evaluation.json`` computed from them on rank 0
(docs/metrics.md). Used by the final evaluation of a training (the validation split; the test
split beside it) and by ``kubevision evaluate`` (a checkpoint and a loader, no training)."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from dataclasses import dataclass
from typing import Any

from torch import nn
from torch.utils.data import DataLoader

from kubevision_api.evaluation import EvaluatedSplit, Evaluation
from kubevision_api.view import Task
from kubevision_trainer import engine, evaluation, metrics, models, ranks, sharded_eval
from kubevision_trainer.distributed import World
from kubevision_trainer.evaluation.predictions import DetectionPredictions, Predictions


@dataclass(frozen=True)
class Score:
    """What :func:`score` found.

    Attributes:
        loss: mean over images of the task's loss (every rank).
        result: the epoch metrics of the pass (``EpochMetrics``' figures; every rank).
        evaluation: every figure of ``evaluation.json``; rank 0 only (None on the others).
        predictions: every image's predictions in the single-process order; rank 0 only.
    """

    loss: float
    result: metrics.EvalResult
    evaluation: Evaluation | None
    predictions: Predictions | None


def score(
    scorer: engine.Engine | nn.Module,
    loader: DataLoader[Any],
    *,
    task: Task,
    concepts: list[str],
    split: EvaluatedSplit,
    seed: int = 0,
    world: World | None = None,
    model_version: str | None = None,
    best_epoch: int | None = None,
) -> Score:
    """Score a model on ``loader``'s images, sharded over the ranks like a validation pass.

    Args:
        scorer: a training's ``Engine`` (its model, device, mixed precision and seed), or a
            plain model already on its device with its weights loaded (``kubevision evaluate``:
            full precision, the device and dtype of its parameters).
        loader: this rank's batches, batched by a ``ValidationBatchSampler`` (each rank a run of
            whole batches of the single-process order); every image of the set is scored.
        task, concepts: the View's task and concept names in class-index order.
        split: which images these are (recorded in ``evaluation.json``).
        seed: spec.training.seed, which seeds a detector's loss draws (an Engine's own is used).
        world: this process's place in a distributed run (an Engine's own is used; one process
            by default).
        model_version: ``namespace/name``; best_epoch: the scored checkpoint's epoch (recorded).

    Raises:
        engine.NonFiniteError: the model's outputs are NaN or infinite (on every rank).
        engine.TrainingError: the metrics or the evaluation could not be computed (on every
            rank).
    """
    if isinstance(scorer, engine.Engine):
        model, world = scorer.model, scorer.world
        validation = scorer.evaluate(loader, keep_predictions=True)
    else:
        model, world = scorer, world or World()
        validation = _validate(scorer, loader, task, concepts, seed)
    predictions = validation.predictions
    if isinstance(predictions, DetectionPredictions):
        predictions = dataclasses.replace(predictions, nms_iou=models.nms_iou(model))
    computed: list[Evaluation] = []

    def figures() -> None:
        assert predictions is not None  # rank 0 asked for them
        try:
            computed.append(
                evaluation.evaluate(
                    task,
                    concepts,
                    predictions,
                    split=split,
                    model_version=model_version,
                    best_epoch=best_epoch,
                )
            )
        except ValueError as exc:
            # A plain ValueError would end rank 0 alone and leave the others waiting.
            raise engine.TrainingError(f"the {split.value} evaluation failed: {exc}") from exc

    # Rank 0 computes; a failure there is raised on every rank.
    ranks.on_main(world, figures)
    return Score(
        loss=validation.loss,
        result=validation.result,
        evaluation=computed[0] if computed else None,
        predictions=predictions,
    )


def _validate(
    model: nn.Module, loader: DataLoader[Any], task: Task, concepts: list[str], seed: int
) -> sharded_eval.Validation:
    """A plain model's validation pass with predictions, in full precision."""
    parameter = next(model.parameters())
    try:
        return sharded_eval.evaluate(
            model,
            loader,
            task=task,
            concepts=concepts,
            seed=seed,
            to_device=functools.partial(
                sharded_eval.to_device, task, parameter.device, parameter.dtype
            ),
            autocast=contextlib.nullcontext,
            keep_predictions=True,
        )
    except sharded_eval.ValidationFailedError as exc:
        error = engine.NonFiniteError if exc.non_finite else engine.TrainingError
        raise error(str(exc)) from exc
