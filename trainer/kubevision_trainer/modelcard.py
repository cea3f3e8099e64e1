"""The model card (``model.json`` under the output URI): what a consumer of the best
checkpoint needs to use it (concepts in class-index order, input size, resizer, normalisation,
detection's label offset, the per-concept thresholds and NMS IoU for serving), how well it did
(metrics before training and at the best epoch, the final evaluation's summary and files), and
how it was made (the plan as the recipe, its hash, package versions). docs/trainer.md, "The
model card"."""

from __future__ import annotations

import json
import sys
from typing import Any

import torch
import torchvision

from kubevision_api.evaluation import Evaluation, EvaluationArtifacts, EvaluationSummary
from kubevision_api.export import ExportArtifact, ExportStatus
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
    evaluation: Evaluation | None = None,
    artifacts: EvaluationArtifacts | None = None,
    test: EvaluationSummary | None = None,
    test_artifacts: EvaluationArtifacts | None = None,
    export: ExportStatus | None = None,
) -> dict[str, Any]:
    """The model card of ``plan``'s run.

    Args:
        final: the best checkpoint's metrics from the final evaluation.
        best_epoch: the epoch of the best checkpoint.
        initial: validation metrics of the model before any training (JSON form).
        plan_hash: ``plan.training_hash()``.
        evaluation: the final evaluation on the validation split (its thresholds are the
            serving ones: chosen on validation, never on the test split); None leaves out
            ``serving`` and ``evaluation``.
        artifacts: the evaluation's files, recorded relative to the output URI.
        test: the test split's headline numbers, when the plan has one (``evaluation.test``).
        test_artifacts: the test split's files, relative to the output URI
            (``evaluation.testArtifacts``).
        export: the bundle the Exporting step wrote: ``export`` lists its files relative to the
            output URI, with format, size and sha256.
    """
    spec = plan.spec
    card: dict[str, Any] = {
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
    if evaluation is not None:
        card["serving"] = serving(evaluation)
        card["evaluation"] = {
            "summary": evaluation.summary.model_dump(mode="json", by_alias=True),
            "artifacts": _relative(artifacts, plan.output_uri) if artifacts is not None else {},
        }
        if test is not None:
            card["evaluation"]["test"] = test.model_dump(mode="json", by_alias=True)
        if test_artifacts is not None:
            card["evaluation"]["testArtifacts"] = _relative(test_artifacts, plan.output_uri)
    if export is not None:
        base = plan.output_uri.rstrip("/") + "/"
        card["export"] = {
            "folder": export.uri.removeprefix(base),
            "files": [
                {
                    "path": a.uri.removeprefix(base),
                    "format": a.format,
                    "bytes": a.bytes,
                    "sha256": a.sha256,
                }
                for a in export.artifacts
            ],
        }
    return card


def serving(evaluation: Evaluation) -> dict[str, Any]:
    """What a server applies to the model's outputs, from the validation evaluation.

    - ``thresholds``: per concept, by name, in class-index order; a concept is reported when
      its score reaches its threshold. Tagging: the F1-optimal probability (sigmoid of the
      logit) of ``TaggingConcept.best``; detection: the LRP-optimal box score of
      ``DetectionConcept.optimal_lrp``; null when none could be chosen (no ground truth in the
      validation split). Classification has none (the arg-max class): ``thresholds`` is null.
    - ``thresholdOf``: what the thresholds apply to (``probability``, ``score``, or null).
    - ``nmsIou``: detection: the detector's NMS IoU; null for the other tasks.
    """
    thresholds: dict[str, float | None] | None = None
    kind: str | None = None
    if evaluation.tagging is not None:
        kind = "probability"
        thresholds = {
            c.concept: None if c.best is None else c.best.threshold
            for c in evaluation.tagging.concepts
        }
    elif evaluation.detection is not None:
        kind = "score"
        thresholds = {
            c.concept: None if c.optimal_lrp is None else c.optimal_lrp.threshold
            for c in evaluation.detection.concepts
        }
    nms = evaluation.detection.nms_iou if evaluation.detection is not None else None
    return {"thresholds": thresholds, "thresholdOf": kind, "nmsIou": nms}


def _relative(artifacts: EvaluationArtifacts, output_uri: str) -> dict[str, str]:
    """The artifacts' names relative to the output URI (the card travels with its folder)."""
    base = output_uri.rstrip("/") + "/"
    return {
        key: uri[len(base) :] if uri.startswith(base) else uri
        for key, uri in artifacts.model_dump(by_alias=True, exclude_none=True).items()
    }


def write(output_uri: str, card: dict[str, Any]) -> ExportArtifact:
    """Write ``model.json`` under ``output_uri``, atomically; returns its URI, size and sha256
    (the bundle's ``modelcard`` file)."""
    uri = storage.join(output_uri, MODEL_CARD)
    data = json.dumps(card, indent=1).encode()
    digest = storage.write_atomic(uri, data)
    return ExportArtifact(format="modelcard", uri=uri, sha256=digest, bytes=len(data))
