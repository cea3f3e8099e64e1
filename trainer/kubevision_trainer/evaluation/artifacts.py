"""An evaluation's files under a folder of the output (docs/metrics.md, "Artifacts"):
``evaluation.json`` always, ``confusion_matrix.png`` for classification, ``pr_curves.png`` for
tagging and detection. Every file is written atomically (``storage.write_atomic``): a reader
sees the old file or the new one, never a part."""

from __future__ import annotations

from kubevision_api.evaluation import (
    CONFUSION_MATRIX_PNG,
    EVALUATION_JSON,
    PR_CURVES_PNG,
    Evaluation,
    EvaluationArtifacts,
)
from kubevision_api.view import Task
from kubevision_trainer import storage
from kubevision_trainer.evaluation import plots


def title(evaluation: Evaluation) -> str:
    """The figures' title: the model version (when known), the split and the image count."""
    who = evaluation.model_version or "model"
    epoch = f", epoch {evaluation.best_epoch}" if evaluation.best_epoch is not None else ""
    return f"{who}{epoch}: {evaluation.split.value} split, {evaluation.images} images"


def write(
    folder_uri: str, evaluation: Evaluation, *, report_uri: str | None = None
) -> EvaluationArtifacts:
    """Write ``evaluation``'s files under ``folder_uri``; returns their URIs.

    Args:
        folder_uri: the output URI (validation split, ``kubevision evaluate``) or its
            ``test/`` folder.
        report_uri: the run's ``report.png``, when it has one, recorded as is.

    Raises:
        storage.StorageError: a write failed.
    """
    json_uri = storage.join(folder_uri, EVALUATION_JSON)
    storage.write_atomic(json_uri, evaluation.model_dump_json(by_alias=True, indent=1).encode())
    artifacts = EvaluationArtifacts(evaluation=json_uri, report=report_uri)
    heading = title(evaluation)
    if evaluation.task is Task.CLASSIFICATION and evaluation.classification is not None:
        uri = storage.join(folder_uri, CONFUSION_MATRIX_PNG)
        png = plots.confusion_matrix(evaluation.classification, evaluation.concepts, heading)
        storage.write_atomic(uri, png)
        artifacts.confusion_matrix = uri
    elif evaluation.tagging is not None or evaluation.detection is not None:
        uri = storage.join(folder_uri, PR_CURVES_PNG)
        storage.write_atomic(uri, plots.pr_curves(evaluation, heading))
        artifacts.pr_curves = uri
    return artifacts
