"""The EXPORTING step's bundle (issue 14; docs/serving.md): from the best checkpoint's model,
``<output>/export/`` with the model in each of ``spec.export.formats``, ``preprocessing.json``,
``postprocessing.json`` and, with ONNX and ``spec.export.triton``, a Triton model repository
(``triton.config_pbtxt``); every file written atomically (``storage.write_atomic``) and
listed with its size and sha256 in the returned ``ExportStatus``. Rank 0 calls it
(``ranks.on_main``)."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from torch import nn

from kubevision_api.bundle import Postprocessing, Preprocessing
from kubevision_api.evaluation import Evaluation
from kubevision_api.export import (
    DETECTION_OUTPUTS,
    EXPORT_FOLDER,
    LOGITS_NAME,
    ONNX_FILE,
    POSTPROCESSING_JSON,
    PREPROCESSING_JSON,
    TORCHSCRIPT_FILE,
    TRITON_CONFIG,
    TRITON_FOLDER,
    ExportArtifact,
    ExportFormat,
    ExportStatus,
)
from kubevision_api.plan import TrainingPlan
from kubevision_api.view import Task
from kubevision_trainer import modelcard, models, presets, storage
from kubevision_trainer.export import graphs, triton

log = logging.getLogger(__name__)

#: The file of each format under export/.
FILES = {ExportFormat.ONNX: ONNX_FILE, ExportFormat.TORCHSCRIPT: TORCHSCRIPT_FILE}

_ACTIVATION = {Task.CLASSIFICATION: "softmax", Task.TAGGING: "sigmoid", Task.DETECTION: "none"}


def preprocessing(plan: TrainingPlan) -> Preprocessing:
    """``preprocessing.json``: the resizer's size and mode, and the normalisation of
    ``presets.model_input`` (null for detectors, which normalise inside the graph)."""
    resizer = plan.spec.image_resizer
    norm = presets.normalisation(plan.task)
    return Preprocessing(
        width=resizer.width,
        height=resizer.height,
        resizer=resizer.mode,
        mean=None if norm is None else norm["mean"],
        std=None if norm is None else norm["std"],
    )


def postprocessing(
    plan: TrainingPlan, model: nn.Module, evaluation: Evaluation | None
) -> Postprocessing:
    """``postprocessing.json``: concepts in class-index order, the activation, the graph's
    outputs and, for tagging and detection, each concept's threshold from the validation
    evaluation (``modelcard.serving``: the F1-optimal probability, the LRP-optimal score), else
    ``default_threshold`` with source ``default``; the detector's NMS IoU and D."""
    task = plan.task
    spec = Postprocessing.model_fields
    default = float(spec["default_threshold"].default)
    thresholds: list[float] | None = None
    sources: list[Any] | None = None
    if task is not Task.CLASSIFICATION:
        chosen = modelcard.serving(evaluation)["thresholds"] if evaluation is not None else None
        found = [None if chosen is None else chosen.get(c) for c in plan.concepts]
        thresholds = [default if t is None else float(t) for t in found]
        sources = ["default" if t is None else "evaluation" for t in found]
    detection = task is Task.DETECTION
    return Postprocessing(
        task=task,
        concepts=plan.concepts,
        activation=_ACTIVATION[task],
        outputs=list(DETECTION_OUTPUTS) if detection else [LOGITS_NAME],
        thresholds=thresholds,
        threshold_source=sources,
        default_threshold=default,
        nms_iou=models.nms_iou(model) if detection else None,
        max_detections=graphs.detections_per_image(model) if detection else None,
        box_format="xyxy" if detection else None,
    )


def write(plan: TrainingPlan, model: nn.Module, evaluation: Evaluation | None) -> ExportStatus:
    """Write the bundle of ``plan``'s best checkpoint under ``<output>/export/``.

    Args:
        model: the best checkpoint's model, on the training device; a CPU float32 copy in eval
            mode is exported (``graphs.serving_copy``), ``model`` itself is left untouched.
        evaluation: the validation split's evaluation (its thresholds are the serving ones),
            or None (every threshold the default).

    Returns:
        Each file's URI, size and sha256 (of the bytes written), in the order written.

    Raises:
        errors.ExportError: a format failed; names the format and the architecture.
        storage.StorageError: a write failed (the file it replaced is intact).
    """
    folder = storage.join(plan.output_uri, EXPORT_FOLDER)
    artifacts: list[ExportArtifact] = []
    if not plan.spec.export.formats:
        return ExportStatus(uri=folder + "/", artifacts=artifacts)  # the model card alone

    def put(kind: str, name: str, data: bytes) -> None:
        uri = storage.join(folder, name)
        digest = storage.write_atomic(uri, data)
        artifacts.append(ExportArtifact(format=kind, uri=uri, sha256=digest, bytes=len(data)))

    copy = graphs.serving_copy(model)
    architecture, resizer = plan.spec.architecture, plan.spec.image_resizer
    graphs_written: dict[ExportFormat, bytes] = {}
    for fmt in plan.spec.export.formats:
        started = time.monotonic()
        data = graphs.export_bytes(fmt, copy, plan.task, resizer, architecture)
        log.info("exported %s to %s in %.1f s", architecture, fmt.value, time.monotonic() - started)
        put(fmt.value, FILES[fmt], data)
        graphs_written[fmt] = data
    put("preprocessing", PREPROCESSING_JSON, _json(preprocessing(plan)))
    put("postprocessing", POSTPROCESSING_JSON, _json(postprocessing(plan, copy, evaluation)))
    onnx_graph = graphs_written.get(ExportFormat.ONNX)
    if plan.spec.export.triton and onnx_graph is not None:
        # Triton requires the model's name to equal its folder's.
        name = plan.model_version
        text = triton.config_pbtxt(name, onnx_graph, triton.DEFAULT_MAX_BATCH_SIZE)
        put("triton-config", f"{TRITON_FOLDER}/{name}/{TRITON_CONFIG}", text.encode())
        put("triton-onnx", f"{TRITON_FOLDER}/{name}/1/{ONNX_FILE}", onnx_graph)
    return ExportStatus(uri=folder + "/", artifacts=artifacts)


def _json(model: Preprocessing | Postprocessing) -> bytes:
    return (json.dumps(model.model_dump(mode="json", by_alias=True), indent=1) + "\n").encode()
