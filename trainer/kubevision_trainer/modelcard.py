"""The model card (``model.json`` under the output URI): what a consumer of the best
checkpoint needs to use it (concepts in class-index order, input size, resizer, normalisation,
detection's label offset), how well it did (metrics before training and at the best epoch),
and how it was made (the plan as the recipe, its hash, package versions)."""

from __future__ import annotations

import json
import sys
from typing import Any

import torch
import torchvision

from kubevision_api.plan import TrainingPlan
from kubevision_api.status import EpochMetrics
from kubevision_api.view import Task
from kubevision_trainer import presets, storage

#: The model card's name under the output URI.
MODEL_CARD = "model.json"


def build(
    plan: TrainingPlan,
    final: EpochMetrics,
    *,
    best_epoch: int | None,
    initial: dict[str, Any] | None,
    plan_hash: str,
) -> dict[str, Any]:
    """The model card of ``plan``'s run.

    Args:
        final: the best checkpoint's metrics from the final evaluation.
        best_epoch: the epoch of the best checkpoint.
        initial: validation metrics of the model before any training (JSON form).
        plan_hash: ``plan.training_hash()``.
    """
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
            "bestEpoch": best_epoch,
            **final.model_dump(mode="json", by_alias=True),
            "initial": initial,
        },
        "planHash": plan_hash,
        "recipe": plan.model_dump(mode="json", by_alias=True, exclude={"status_endpoint"}),
        "versions": {
            "python": sys.version.split()[0],
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
        },
    }


def write(output_uri: str, card: dict[str, Any]) -> None:
    """Write ``model.json`` under ``output_uri``, atomically."""
    storage.write_atomic(storage.join(output_uri, MODEL_CARD), json.dumps(card, indent=1).encode())
