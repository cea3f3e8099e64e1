"""docs/serving.md's examples are what they claim: the KServe manifests are valid YAML, the
``InferenceService`` has the fields KServe requires and its ``storageUri`` is the bundle's
Triton model repository (``<output>/export/triton``, named by ``kubevision_api.export``) of the
ModelVersion it serves; the example ``config.pbtxt`` parses with Triton's own protobuf
definition; the example JSON files validate against the bundle's schemas."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from kubevision_api.bundle import Postprocessing, Preprocessing
from kubevision_api.export import EXPORT_FOLDER, INPUT_NAME, LOGITS_NAME, TRITON_FOLDER
from kubevision_api.modelversion import ResizeMode
from kubevision_api.view import Task

DOC = Path(__file__).resolve().parents[1] / "docs" / "serving.md"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.DOTALL | re.MULTILINE)


def _blocks(language: str, text: str | None = None) -> list[str]:
    """The fenced blocks of ``language`` ("" for none) in docs/serving.md, in order."""
    source = DOC.read_text() if text is None else text
    return [body for lang, body in FENCE.findall(source) if lang == language]


def _inference_service() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The one InferenceService of the doc's YAML blocks, and the block's other manifests."""
    found = []
    for block in _blocks("yaml"):
        manifests = [m for m in yaml.safe_load_all(block) if m is not None]
        found += [(m, manifests) for m in manifests if m.get("kind") == "InferenceService"]
    assert len(found) == 1, f"{len(found)} InferenceService manifests in {DOC}"
    return found[0]


def test_the_fence_finder_reads_languages_and_bodies() -> None:
    text = "intro\n```yaml\na: 1\n```\nmiddle\n```\nplain\n```\n```json\n{}\n```\n"
    assert _blocks("yaml", text) == ["a: 1\n"]
    assert _blocks("", text) == ["plain\n"]
    assert _blocks("json", text) == ["{}\n"]


def test_the_kserve_example_is_a_valid_inference_service() -> None:
    isvc, manifests = _inference_service()
    assert isvc["apiVersion"] == "serving.kserve.io/v1beta1"
    name = isvc["metadata"]["name"]
    # KServe names the service's host after it: a DNS-1035 label.
    assert re.fullmatch(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?", name), name
    predictor = isvc["spec"]["predictor"]
    model = predictor["model"]
    assert model["modelFormat"]["name"] in ("triton", "onnx")
    assert model["protocolVersion"] == "v2"
    uri = model["storageUri"]
    # s3://<bucket>/<output>/export/triton: the bundle's model repository, of this version.
    match = re.fullmatch(rf"s3://([a-z0-9.-]+)/(.+)/{EXPORT_FOLDER}/{TRITON_FOLDER}", uri)
    assert match is not None, uri
    assert match.group(2).split("/")[-1] == name, (uri, name)
    # The ServiceAccount it runs as exists in the block, with the Secret holding S3's keys
    # and KServe's endpoint annotation, all in the service's namespace.
    namespace = isvc["metadata"]["namespace"]
    by_kind = {(m["kind"], m["metadata"]["name"]): m for m in manifests}
    account = by_kind[("ServiceAccount", predictor["serviceAccountName"])]
    (secret_ref,) = account["secrets"]
    secret = by_kind[("Secret", secret_ref["name"])]
    assert {m["metadata"]["namespace"] for m in by_kind.values()} == {namespace}
    assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= set(secret["stringData"])
    endpoint = secret["metadata"]["annotations"]["serving.kserve.io/s3-endpoint"]
    assert "://" not in endpoint, endpoint
    # The same model, served by Triton under the ModelVersion's name, is the doc's request.
    assert f"/v2/models/{name}/infer" in DOC.read_text()


def test_the_status_example_points_where_the_inference_service_reads() -> None:
    isvc, _ = _inference_service()
    statuses = [
        m["status"]["export"]
        for block in _blocks("yaml")
        for m in yaml.safe_load_all(block)
        if m and "status" in m
    ]
    assert len(statuses) == 1
    export = statuses[0]
    assert export["uri"] + TRITON_FOLDER == isvc["spec"]["predictor"]["model"]["storageUri"]
    assert all(a["uri"].startswith(export["uri"]) for a in export["artifacts"])


def test_the_config_pbtxt_example_parses_with_tritons_definition() -> None:
    isvc, _ = _inference_service()
    (block,) = [b for b in _blocks("") if b.startswith("name:")]
    config = mc.ModelConfig()
    text_format.Parse(block, config)
    assert config.name == isvc["metadata"]["name"]
    assert config.platform == "onnxruntime_onnx"
    assert [(t.name, t.data_type, list(t.dims)) for t in config.input] == [
        (INPUT_NAME, mc.TYPE_FP32, [3, 32, 32])
    ]
    assert [(t.name, t.data_type, list(t.dims)) for t in config.output] == [
        (LOGITS_NAME, mc.TYPE_FP32, [10])
    ]


@pytest.mark.parametrize("index", [0, 1])
def test_the_json_examples_follow_the_schemas(index: int) -> None:
    blocks = _blocks("json")
    assert len(blocks) == 2
    data = json.loads(blocks[index])
    if index == 0:
        pre = Preprocessing.model_validate(data)
        assert (pre.width, pre.height, pre.resizer) == (32, 32, ResizeMode.SQUASH)
        assert pre.scale == 1 / 255
        # Every field is shown, under the name the trainer writes (by alias).
        assert set(data) == set(pre.model_dump(by_alias=True))
    else:
        post = Postprocessing.model_validate(data)
        assert post.task is Task.DETECTION
        assert post.thresholds is not None and len(post.thresholds) == len(post.concepts)
        assert set(data) == set(post.model_dump(by_alias=True))


def test_every_schema_field_is_in_the_tables() -> None:
    text = DOC.read_text()
    for model in (Preprocessing, Postprocessing):
        for name, field in model.model_fields.items():
            alias = field.alias or name
            assert f"`{alias}`" in text, f"{model.__name__}.{name} ({alias}) is not documented"
