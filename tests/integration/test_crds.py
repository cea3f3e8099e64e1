"""The generated CRDs on a real API server: the examples are accepted, the table of bad manifests
is refused at the field paths pydantic names, printer columns show status values, and
``kubectl explain`` shows the models' descriptions.

The control plane is the session fixture ``control_plane`` (testenv/fixtures.py).
"""

from __future__ import annotations

import json
import re
import urllib.error
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from kubevision_api import crdgen
from kubevision_api.evaluation import (
    EvaluatedSplit,
    EvaluationArtifacts,
    EvaluationStatus,
    EvaluationSummary,
    Indicator,
)
from kubevision_api.meta import GROUP, VERSION
from kubevision_api.modelversion import SPLIT_FRACTIONS_MESSAGE, ModelVersion
from kubevision_api.status import ModelVersionStatus
from kubevision_api.view import ModelEntry, ModelSummary, View, ViewStatus
from testenv.controlplane import ControlPlane
from tests.api.invalid_manifests import (
    CASES,
    VALID_UPDATES,
    Case,
    ValidUpdate,
    model_version,
    view,
)

ROOT = Path(__file__).resolve().parents[2]
CRDS = ROOT / "crds"
EXAMPLES = sorted(ROOT.glob("examples/*/*.yaml"))
MODELS: dict[str, type[View] | type[ModelVersion]] = {"View": View, "ModelVersion": ModelVersion}
PLURALS = {"View": "views", "ModelVersion": "modelversions"}


@pytest.fixture(scope="module")
def cluster(control_plane: ControlPlane) -> ControlPlane:
    """The control plane with the CRDs of crds/ applied and Established."""
    control_plane.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRDS))
    control_plane.kubectl(
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        *(f"crd/{PLURALS[kind]}.{GROUP}" for kind in PLURALS),
    )
    return control_plane


@pytest.fixture(scope="module")
def namespace(cluster: ControlPlane) -> Iterator[str]:
    """A namespace of this module's objects (each named after its case)."""
    name = f"crds-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", name)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false")


def _path(kind: str, namespace: str, name: str | None = None, sub: str | None = None) -> str:
    path = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURALS[kind]}"
    if name:
        path += f"/{name}"
    if sub:
        path += f"/{sub}"
    return path + "?fieldValidation=Strict"


def _call(
    cluster: ControlPlane, method: str, path: str, body: dict[str, Any] | None = None
) -> tuple[int, dict[str, Any]]:
    """(HTTP status, decoded body); 4xx/5xx are answers here, not exceptions."""
    try:
        return 200, cluster.request(method, path, body)
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def _create(cluster: ControlPlane, namespace: str, doc: dict[str, Any]) -> dict[str, Any]:
    code, body = _call(cluster, "POST", _path(doc["kind"], namespace), doc)
    assert code == 200, body.get("message", body)
    return body


def _replace(
    cluster: ControlPlane,
    namespace: str,
    stored: dict[str, Any],
    new: dict[str, Any],
    sub: str = "",
) -> tuple[int, dict[str, Any]]:
    """PUT ``new`` over ``stored`` (custom resources need the resourceVersion)."""
    body = json.loads(json.dumps(new))
    body["metadata"]["resourceVersion"] = stored["metadata"]["resourceVersion"]
    path = _path(new["kind"], namespace, new["metadata"]["name"], sub or None)
    return _call(cluster, "PUT", path, body)


def names_path(message: str, path: str) -> bool:
    """Whether ``message`` names ``path`` itself, not a parent or child of it."""
    return re.search(rf"(?<![\w.]){re.escape(path)}(?![\w.\[])", message) is not None


def test_names_path_is_exact() -> None:
    # The matcher can fail: a child or a parent of the path does not count.
    assert names_path('unknown field "spec.colour"', "spec.colour")
    assert not names_path("spec.training.epochs: Invalid value", "spec.training")
    assert not names_path("spec.concepts[2]: Duplicate value", "spec.concepts")
    assert not names_path("status.spec.task: x", "spec.task")


def pydantic_verdict(case: Case) -> list[str]:
    """The paths pydantic refuses the case at (update: the immutable paths changed)."""
    model = MODELS[case.kind]
    if case.operation == "update":
        assert case.old is not None
        return crdgen.immutable_changes(
            model.model_validate(case.old), model.model_validate(case.manifest)
        )
    try:
        model.model_validate(case.manifest)
    except ValidationError as exc:
        return crdgen.error_paths(exc)
    return []


# ---- CRDs and examples ------------------------------------------------------------------------


def test_crds_are_served_with_their_names(cluster: ControlPlane) -> None:
    resources = cluster.kubectl("api-resources", f"--api-group={GROUP}", "-o", "wide").stdout
    assert re.search(
        r"^modelversions\s+mv\s+kubevision.dev/v1alpha1\s+true\s+ModelVersion", resources, re.M
    ), resources
    assert re.search(r"^views\s+vw\s+kubevision.dev/v1alpha1\s+true\s+View", resources, re.M)
    # The short names shadow no built-in resource.
    every = cluster.kubectl("api-resources", "--no-headers").stdout.splitlines()
    short = [line.split()[1] for line in every if len(line.split()) == 5]
    assert short.count("mv") == 1 and short.count("vw") == 1
    assert "No resources found" in cluster.kubectl("get", "kubevision", "-A").stderr


def test_examples_exist() -> None:
    assert EXAMPLES, "no examples/*/*.yaml found"


@pytest.mark.parametrize("manifest", EXAMPLES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_example_is_accepted_and_defaulted_like_pydantic(
    cluster: ControlPlane, namespace: str, manifest: Path
) -> None:
    cluster.kubectl(
        "apply", "--server-side", "--validate=strict", "-n", namespace, "-f", str(manifest)
    )
    doc = yaml.safe_load(manifest.read_text())
    stored = json.loads(
        cluster.kubectl(
            "get", PLURALS[doc["kind"]], doc["metadata"]["name"], "-n", namespace, "-o", "json"
        ).stdout
    )
    # The API server's defaults are pydantic's: the immutability rules (server) and
    # crdgen.immutable_changes (Python) compare the same values.
    assert stored["spec"] == MODELS[doc["kind"]].model_validate(doc).spec.wire()


# ---- the table ----------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_invalid_manifest_is_refused_at_its_path(
    cluster: ControlPlane, namespace: str, case: Case
) -> None:
    if case.operation == "create":
        code, answer = _call(cluster, "POST", _path(case.kind, namespace), case.manifest)
    elif case.operation == "update":
        assert case.old is not None
        stored = _create(cluster, namespace, case.old)
        code, answer = _replace(cluster, namespace, stored, case.manifest)
    else:
        without = {k: v for k, v in case.manifest.items() if k != "status"}
        stored = _create(cluster, namespace, without)
        code, answer = _replace(cluster, namespace, stored, case.manifest, sub="status")
    message = str(answer.get("message", answer))
    assert code in (400, 422), f"accepted ({code}): {case.id}"
    assert names_path(message, case.path), f"expected {case.path!r} in: {message}"
    # Case by case, pydantic says the same.
    assert case.path in pydantic_verdict(case)


@pytest.mark.parametrize("update", VALID_UPDATES, ids=lambda u: u.id)
def test_valid_update_is_accepted(
    cluster: ControlPlane, namespace: str, update: ValidUpdate
) -> None:
    stored = _create(cluster, namespace, update.old)
    code, answer = _replace(cluster, namespace, stored, update.new)
    assert code == 200, answer.get("message", answer)
    model = MODELS[update.old["kind"]]
    assert (
        crdgen.immutable_changes(model.model_validate(update.old), model.model_validate(update.new))
        == []
    )


@pytest.mark.parametrize(
    ("case_id", "spec", "world"),
    [
        # No training and no resources: the structural defaults (32 over 1 Pod x 1 GPU) apply
        # before the rule runs, and processesPerNode's has() guards its absence.
        ("world-defaults", {"viewRef": {"name": "pets"}, "architecture": "resnet18"}, 1),
        (
            "world-cpu-2x2",
            {
                **model_version()["spec"],
                "resources": {"gpus": 0, "nodes": 2, "processesPerNode": 2},
            },
            4,
        ),
        ("world-gpu-2x8", {**model_version()["spec"], "resources": {"gpus": 8, "nodes": 2}}, 16),
    ],
)
def test_batch_sizes_that_divide_the_world_size_are_accepted(
    cluster: ControlPlane, namespace: str, case_id: str, spec: dict[str, Any], world: int
) -> None:
    doc = {**model_version(name=case_id), "spec": spec}
    stored = _create(cluster, namespace, doc)
    resources = ModelVersion.model_validate(stored).spec.resources
    assert resources.world_size() == world


def test_split_fractions_rule_message_and_accepted_fractions(
    cluster: ControlPlane, namespace: str
) -> None:
    doc = model_version(name="split-too-much")
    doc["spec"]["datasetSplit"] = {"validationFraction": 0.5, "testFraction": 0.5}
    code, answer = _call(cluster, "POST", _path("ModelVersion", namespace), doc)
    assert code == 422, answer
    assert "spec.datasetSplit.testFraction: Invalid value: " in answer["message"]
    assert SPLIT_FRACTIONS_MESSAGE in answer["message"]
    # Integers are numbers to CEL's double arithmetic too; 0.2 + 0.79 is under 1.
    for name, split in (
        ("split-int-zero", {"testFraction": 0}),
        ("split-just-under", {"testFraction": 0.79}),
    ):
        stored = _create(
            cluster,
            namespace,
            {
                **model_version(name=name),
                "spec": {**model_version()["spec"], "datasetSplit": split},
            },
        )
        parsed = ModelVersion.model_validate(stored).spec.dataset_split
        assert parsed.test_fraction == split["testFraction"]
        assert parsed.validation_fraction == 0.2


# ---- printer columns and explain --------------------------------------------------------------


def _columns(
    cluster: ControlPlane, namespace: str, resource: str, name: str, *extra: str
) -> dict[str, str]:
    lines = cluster.kubectl("get", resource, name, "-n", namespace, *extra).stdout.splitlines()
    header, row = lines[0], lines[1]
    # Columns are left-aligned under their header: cut the row at the header's offsets.
    starts = [m.start() for m in re.finditer(r"\S+", header)]
    ends = [*starts[1:], None]
    return {header[s:e].strip(): row[s:e].strip() for s, e in zip(starts, ends, strict=True)}


def test_printer_columns_show_status_values(cluster: ControlPlane, namespace: str) -> None:
    stored_view = _create(cluster, namespace, view(name="columns"))
    stored_mv = _create(cluster, namespace, model_version(name="columns-r18"))
    # Statuses built with the models, as the operator builds them.
    view_status = ViewStatus.model_validate(
        {"model": "m36291f4fc53d", "conceptCount": 2, "observedGeneration": 1}
    )
    mv_status = ModelVersionStatus.model_validate(
        {
            "phase": "Running",
            "currentStep": "Training",
            "steps": [
                {"name": "Scheduling", "state": "Succeeded"},
                {"name": "Training", "state": "Running"},
            ],
            "progress": {"percent": 30, "epoch": 3, "epochs": 10, "display": "3/10"},
            "metrics": {"selection": "accuracy", "best": {"epoch": 2, "value": 0.913}},
        }
    )
    for stored, status in ((stored_view, view_status), (stored_mv, mv_status)):
        code, answer = _replace(
            cluster, namespace, stored, {**stored, "status": status.wire()}, sub="status"
        )
        assert code == 200, answer.get("message", answer)

    mv = _columns(cluster, namespace, "modelversions", "columns-r18")
    assert mv == mv | {
        "NAME": "columns-r18",
        "VIEW": "pets",
        "PHASE": "Running",
        "STEP": "Training",
        "PROGRESS": "3/10",
        "BEST": "0.913",
    }
    assert mv["AGE"]
    vw = _columns(cluster, namespace, "views", "columns")
    assert vw == vw | {"TASK": "classification", "CONCEPTS": "2", "MODEL": "m36291f4fc53d"}
    assert vw["AGE"]


def test_a_status_patch_without_the_subresource_is_silently_dropped(
    cluster: ControlPlane, namespace: str
) -> None:
    """docs/operator-status.md, "Editing a status by hand": the status is a subresource, so
    `kubectl patch` of the object itself answers success and leaves the status as it was;
    only `--subresource=status` changes it."""
    _create(cluster, namespace, model_version(name="by-hand"))
    patch = json.dumps({"status": {"phase": "Failed", "message": "set by hand"}})

    def phase() -> Any:
        out = cluster.kubectl(
            "-n", namespace, "get", "modelversions/by-hand", "-o", "jsonpath={.status.phase}"
        )
        return out.stdout.strip()

    done = cluster.kubectl(
        "-n", namespace, "patch", "modelversions/by-hand", "--type=merge", "-p", patch
    )
    assert done.returncode == 0 and "patched" in done.stdout, done.stdout
    assert phase() == ""  # answered "patched (no change)", status untouched
    cluster.kubectl(
        "-n",
        namespace,
        "patch",
        "modelversions/by-hand",
        "--subresource=status",
        "--type=merge",
        "-p",
        patch,
    )
    assert phase() == "Failed"


def _olrp_evaluation(value: float | None) -> EvaluationStatus:
    """A detection evaluation with a test split, as the trainer reports it."""

    def summary(split: EvaluatedSplit, images: int) -> EvaluationSummary:
        return EvaluationSummary(
            split=split,
            images=images,
            indicator=Indicator.MEAN_OPTIMAL_LRP,
            value=value,
            map=0.25,
            mean_optimal_lrp=value,
        )

    runs = "s3://kv-runs/crds/evaluated"
    return EvaluationStatus(
        indicator=Indicator.MEAN_OPTIMAL_LRP,
        value=value,
        validation=summary(EvaluatedSplit.VALIDATION, 20),
        test=summary(EvaluatedSplit.TEST, 10),
        artifacts=EvaluationArtifacts(
            evaluation=f"{runs}/evaluation.json",
            pr_curves=f"{runs}/pr_curves.png",
            report=f"{runs}/report.png",
        ),
        test_artifacts=EvaluationArtifacts(
            evaluation=f"{runs}/test/evaluation.json", pr_curves=f"{runs}/test/pr_curves.png"
        ),
    )


@pytest.mark.parametrize("value", [0.6125, None], ids=["defined", "undefined"])
def test_status_evaluation_round_trips(
    cluster: ControlPlane, namespace: str, value: float | None
) -> None:
    name = f"evaluated-{'defined' if value is not None else 'undefined'}"
    stored_view = _create(cluster, namespace, view(name=name))
    stored_mv = _create(cluster, namespace, model_version(name=name))
    mv_status = ModelVersionStatus(phase="Succeeded", evaluation=_olrp_evaluation(value))
    code, answer = _replace(
        cluster, namespace, stored_mv, {**stored_mv, "status": mv_status.wire()}, sub="status"
    )
    assert code == 200, answer.get("message", answer)
    read = _call(cluster, "GET", _path("ModelVersion", namespace, name))[1]
    assert ModelVersion.model_validate(read).status == mv_status
    assert read["status"]["evaluation"] == mv_status.wire()["evaluation"]

    summary = ModelSummary(
        model_version=name, phase="Succeeded", indicator="meanOptimalLRP", value=value
    )
    view_status = ViewStatus(
        model="m36291f4fc53d",
        concept_count=2,
        models=[ModelEntry(model="m36291f4fc53d", concept_count=2, model_versions=[summary])],
    )
    code, answer = _replace(
        cluster, namespace, stored_view, {**stored_view, "status": view_status.wire()}, "status"
    )
    assert code == 200, answer.get("message", answer)
    read = _call(cluster, "GET", _path("View", namespace, name))[1]
    assert View.model_validate(read).status == view_status

    # The score by default, the indicator with -o wide (it follows the View's task).
    score = "0.6125" if value is not None else ""  # kubectl leaves a missing value blank
    narrow = _columns(cluster, namespace, "modelversions", name)
    assert "INDICATOR" not in narrow and narrow["SCORE"] == score, narrow
    wide = _columns(cluster, namespace, "modelversions", name, "-o", "wide")
    assert (wide["INDICATOR"], wide["SCORE"]) == ("meanOptimalLRP", score), wide
    assert list(wide)[-3:] == ["INDICATOR", "SCORE", "AGE"]


def test_explain_shows_the_evaluation(cluster: ControlPlane) -> None:
    text = cluster.kubectl("explain", "modelversions.status.evaluation").stdout
    flat = " ".join(text.split())
    field = crdgen.schema(ModelVersion)["properties"]["status"]["properties"]["evaluation"]
    assert " ".join(field["description"].split()) in flat
    for words in ("meanOptimalLRP", "lower is better", "docs/metrics.md", "never 0 or 1"):
        assert words in flat, words
    for name in ("indicator", "value", "validation", "test", "artifacts", "testArtifacts"):
        assert re.search(rf"^\s*{name}\s", text, re.M), name


def test_explain_shows_the_descriptions(cluster: ControlPlane) -> None:
    text = cluster.kubectl("explain", "modelversions.spec.training").stdout
    flat = " ".join(text.split())
    training = crdgen.schema(ModelVersion)["properties"]["spec"]["properties"]["training"]
    assert " ".join(training["description"].split()) in flat
    for name, prop in training["properties"].items():
        assert f"{name}\t" in text or f"{name} " in text or f"{name}\n" in text, name
        assert " ".join(prop["description"].split()) in flat, name
