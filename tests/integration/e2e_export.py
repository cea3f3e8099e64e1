"""The end-to-end checks of a training's serving bundle (issue 14): ``status.export`` as the
API server holds it, against the files in S3: each artifact's sha256 and size those of the
object's bytes (the model card's too); the ONNX graph valid, with the contract's tensor names
and opset, running in onnxruntime at the preprocessing's size with outputs of the task's
shapes; preprocessing.json and postprocessing.json valid against their schemas and agreeing
with the plan; the Triton repository's config.pbtxt parsing with Triton's protobuf definition
and naming the graph's tensors; and the ``Exported`` Event."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from kubevision_api.bundle import Postprocessing, Preprocessing
from kubevision_api.export import (
    DETECTION_OUTPUTS,
    EXPORT_FOLDER,
    INPUT_NAME,
    LOGITS_NAME,
    ONNX_FILE,
    ONNX_OPSET,
    POSTPROCESSING_JSON,
    PREPROCESSING_JSON,
    TRITON_CONFIG,
    TRITON_FOLDER,
    ExportStatus,
)
from kubevision_api.view import Task
from kubevision_operator.status import exported_message
from kubevision_trainer.modelcard import MODEL_CARD
from testenv.operator_helpers import get, wait_for
from tests.integration.e2e_helpers import E2E

#: Batch of the onnxruntime run: not the export's example batch, so a graph whose batch axis
#: was frozen by tracing fails.
BATCH = 3


def _key(env: E2E, uri: str) -> str:
    head = f"s3://{env.bucket}/"
    assert uri.startswith(head), uri
    return uri[len(head) :]


def expected_files(output: str, name: str) -> dict[str, str]:
    """The artifact of each format that the default ``spec.export`` (onnx, triton) writes,
    by URI, for the ModelVersion ``name`` writing to ``output`` (no trailing slash); the model
    card, written last, stays at the output's root."""
    bundle = f"{output}/{EXPORT_FOLDER}"
    triton = f"{bundle}/{TRITON_FOLDER}/{name}"
    return {
        "onnx": f"{bundle}/{ONNX_FILE}",
        "preprocessing": f"{bundle}/{PREPROCESSING_JSON}",
        "postprocessing": f"{bundle}/{POSTPROCESSING_JSON}",
        "triton-config": f"{triton}/{TRITON_CONFIG}",
        "triton-onnx": f"{triton}/1/{ONNX_FILE}",
        "modelcard": f"{output}/{MODEL_CARD}",
    }


def assert_export(
    env: E2E, obj: dict[str, Any], prefix: str, task: str, size: tuple[int, int]
) -> ExportStatus:
    """``status.export`` of a Succeeded ModelVersion (default ``spec.export``) against the
    bundle in S3, as the module docstring says. ``size`` is the plan's (width, height).
    Returns the status's export."""
    status = obj["status"]
    wire = status.get("export")
    assert wire is not None, f"no status.export: {sorted(status)}"
    export = ExportStatus.model_validate(wire)
    name = obj["metadata"]["name"]
    output = f"s3://{env.bucket}/{prefix}"
    assert export.uri == f"{output}/{EXPORT_FOLDER}/", export.uri
    files = {a.format: a.uri for a in export.artifacts}
    assert len(files) == len(export.artifacts), f"a format twice: {wire}"
    assert files == expected_files(output, name), files
    bodies: dict[str, bytes] = {}
    for artifact in export.artifacts:
        body = env.read(_key(env, artifact.uri))
        assert body is not None, f"{artifact.uri} is missing"
        assert (len(body), hashlib.sha256(body).hexdigest()) == (
            artifact.bytes,
            artifact.sha256,
        ), artifact.uri
        bodies[artifact.format] = body
    # Triton's copy is the graph itself.
    assert bodies["triton-onnx"] == bodies["onnx"]
    card = json.loads(bodies["modelcard"])
    assert isinstance(card, dict) and card, export.uri

    kind = Task(task)
    concepts = list(status["concepts"])
    pre = Preprocessing.model_validate_json(bodies["preprocessing"])
    assert (pre.width, pre.height, pre.input_name) == (*size, INPUT_NAME)
    assert (pre.mean is None) == (kind is Task.DETECTION), pre
    post = Postprocessing.model_validate_json(bodies["postprocessing"])
    assert (post.task, post.concepts) == (kind, concepts), post
    outputs = list(DETECTION_OUTPUTS) if kind is Task.DETECTION else [LOGITS_NAME]
    assert post.outputs == outputs
    if kind is Task.CLASSIFICATION:
        assert post.thresholds is None
    else:
        assert post.thresholds is not None and len(post.thresholds) == len(concepts)
        assert all(0.0 <= t <= 1.0 for t in post.thresholds), post.thresholds

    graph = onnx.load_model_from_string(bodies["onnx"])
    onnx.checker.check_model(graph)
    opsets = {o.domain: o.version for o in graph.opset_import}
    assert opsets.get("", opsets.get("ai.onnx")) == ONNX_OPSET, opsets
    session = ort.InferenceSession(bodies["onnx"], providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == [INPUT_NAME]
    assert [o.name for o in session.get_outputs()] == outputs
    images = np.random.default_rng(0).random((BATCH, 3, pre.height, pre.width), np.float32)
    produced = dict(zip(outputs, session.run(None, {INPUT_NAME: images}), strict=True))
    if kind is Task.DETECTION:
        d = post.max_detections
        assert d is not None
        assert produced["boxes"].shape == (BATCH, d, 4)
        assert produced["scores"].shape == produced["labels"].shape == (BATCH, d)
        assert produced["num_detections"].shape == (BATCH,)
        assert produced["labels"].dtype == np.int64
        assert ((produced["labels"] >= 0) & (produced["labels"] < len(concepts))).all()
    else:
        assert produced[LOGITS_NAME].shape == (BATCH, len(concepts))

    config = mc.ModelConfig()
    text_format.Parse(bodies["triton-config"].decode(), config)
    assert (config.name, config.platform) == (name, "onnxruntime_onnx")
    assert [t.name for t in config.input] == [INPUT_NAME]
    assert list(config.input[0].dims) == [3, pre.height, pre.width]
    assert [t.name for t in config.output] == outputs
    return export


def assert_exported_event(env: E2E, name: str, export: ExportStatus) -> None:
    """The operator posted one ``Exported`` Event on the ModelVersion, naming the bundle."""

    def events() -> list[dict[str, Any]]:
        listing = get(env.cp, f"/api/v1/namespaces/{env.namespace}/events")
        return [
            e
            for e in (listing or {}).get("items", [])
            if e["involvedObject"].get("name") == name and e["reason"] == "Exported"
        ]

    found = wait_for("the Exported Event", events, timeout=15)
    assert {(e["type"], e["message"]) for e in found} == {("Normal", exported_message(export))}, (
        found
    )
