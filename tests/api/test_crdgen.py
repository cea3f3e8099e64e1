"""The CRDs in crds/ are the models' rendering, byte for byte, and structural; the table of bad
manifests is refused by pydantic at the same field paths the API server names
(tests/integration/test_crds.py sends the same table to a real API server)."""

from __future__ import annotations

import copy
import importlib.metadata
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from kubevision_api import crdgen, manifests
from kubevision_api.meta import RELEASE_ANNOTATION, SCHEMA_HASH_ANNOTATION, ObjectRules
from kubevision_api.modelversion import ModelVersion, ModelVersionSpec
from kubevision_api.view import View
from kubevision_cli import main
from tests.api.invalid_manifests import CASES, VALID_UPDATES, Case, ValidUpdate

ROOT = Path(__file__).resolve().parents[2]
CRDS = ROOT / "crds"
CHART_CRDS = ROOT / "helm" / "kubevision" / "crds"
MODELS: dict[str, type[View] | type[ModelVersion]] = {"View": View, "ModelVersion": ModelVersion}

#: Short names of the built-in resources (`kubectl api-resources` of a 1.3x cluster).
BUILTIN_SHORT_NAMES = frozenset(
    {
        *("cm", "cs", "ds", "ep", "ev", "no", "ns", "pc", "po", "pv", "rc", "rs", "sa", "sc"),
        *("cj", "crd", "crds", "csr", "deploy", "hpa", "ing", "limits", "netpol", "pdb", "psp"),
        *("pvc", "quota", "sts", "svc"),
    }
)


# ---- drift ----------------------------------------------------------------------------------


def test_committed_crds_match_the_models() -> None:
    """Any change to a model, the generator or a file in crds/ fails here until
    `kubevision crds` is run and its output committed."""
    generated = crdgen.generate()
    committed = {p.name: p.read_text(encoding="utf-8") for p in CRDS.glob("*.yaml")}
    assert sorted(committed) == sorted(generated), "crds/ holds other files than the models give"
    diff = crdgen.drift(CRDS)
    assert not diff, f"crds/ is out of date; run `kubevision crds`:\n{diff}"


def test_chart_copy_matches_the_models() -> None:
    """Helm installs helm/kubevision/crds/ as it is: the same bytes as crds/, written by the
    same command, and covered by the same drift check."""
    assert crdgen.targets(CRDS) == [CRDS, CHART_CRDS]
    committed = {p.name: p.read_text(encoding="utf-8") for p in CHART_CRDS.glob("*")}
    assert committed == crdgen.generate(), (
        "helm/kubevision/crds/ is out of date; run `kubevision crds`"
    )


def test_check_command_covers_the_chart_copy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The fake: a checkout with crds/ and a chart; only the chart's copy is edited by hand.
    chart = tmp_path / "helm" / "kubevision"
    chart.mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: kubevision\nversion: 0.1.0\n")
    out = tmp_path / "crds"
    assert main.main(["crds", "--out", str(out)]) == 0
    assert sorted(p.name for p in (chart / "crds").iterdir()) == sorted(crdgen.generate())
    assert main.main(["crds", "--check", "--out", str(out)]) == 0
    target = chart / "crds" / "kubevision.dev_modelversions.yaml"
    target.write_text(target.read_text().replace("storage: true", "storage: false"))
    capsys.readouterr()
    assert main.main(["crds", "--check", "--out", str(out)]) == 1
    assert "helm/kubevision/crds/kubevision.dev_modelversions.yaml (committed)" in (
        capsys.readouterr().out
    )


def test_generation_is_deterministic() -> None:
    assert crdgen.generate() == crdgen.generate()


def test_check_command_reports_drift(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # The fake: a folder that starts empty (drift), is written, then edited by hand (drift).
    assert main.main(["crds", "--check", "--out", str(tmp_path)]) == 1
    assert main.main(["crds", "--out", str(tmp_path)]) == 0
    assert main.main(["crds", "--check", "--out", str(tmp_path)]) == 0
    target = tmp_path / "kubevision.dev_views.yaml"
    target.write_text(target.read_text().replace("maxItems: 1000", "maxItems: 999"))
    capsys.readouterr()
    assert main.main(["crds", "--check", "--out", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "-                maxItems: 999" in out and "+                maxItems: 1000" in out


# ---- the schema marker -----------------------------------------------------------------------


@pytest.mark.parametrize("model", [View, ModelVersion])
def test_committed_crds_carry_the_schema_marker(model: type[View] | type[ModelVersion]) -> None:
    """The marker is the SHA-256 of the spec the API server enforces, as committed."""
    for folder in (CRDS, CHART_CRDS):
        committed = yaml.safe_load((folder / crdgen.file_name(model)).read_text())
        annotations = committed["metadata"]["annotations"]
        marker = annotations[SCHEMA_HASH_ANNOTATION]
        assert re.fullmatch(r"sha256:[0-9a-f]{64}", marker), marker
        assert marker == crdgen.schema_hash(model) == crdgen.spec_hash(committed["spec"])
        assert annotations[RELEASE_ANNOTATION] == importlib.metadata.version("kubevision")
        assert committed["metadata"]["name"] == crdgen.crd_name(model)


def test_schema_hash_follows_the_spec_not_the_release(monkeypatch: pytest.MonkeyPatch) -> None:
    before = crdgen.crd(ModelVersion)
    monkeypatch.setattr(crdgen, "release", lambda: "9.9.9")
    after = crdgen.crd(ModelVersion)
    assert after["metadata"]["annotations"][RELEASE_ANNOTATION] == "9.9.9"
    marker = before["metadata"]["annotations"][SCHEMA_HASH_ANNOTATION]
    assert after["metadata"]["annotations"][SCHEMA_HASH_ANNOTATION] == marker
    # Any change of the spec changes the hash: a field, a bound, a printer column.
    spec = before["spec"]
    schema = spec["versions"][0]["schema"]["openAPIV3Schema"]
    changed = copy.deepcopy(spec)
    del changed["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
    assert crdgen.spec_hash(changed) != crdgen.spec_hash(spec)
    changed = copy.deepcopy(spec)
    changed["versions"][0]["additionalPrinterColumns"].pop()
    assert crdgen.spec_hash(changed) != crdgen.spec_hash(spec)
    # Key order is not part of the marker (canonical JSON).
    reordered = dict(reversed(list(spec.items())))
    assert crdgen.spec_hash(reordered) == crdgen.spec_hash(spec)
    assert crdgen.schema_hash(View) != crdgen.schema_hash(ModelVersion)
    assert schema["properties"]["status"]


# ---- structure ------------------------------------------------------------------------------


def _crd(model: type[View] | type[ModelVersion]) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((CRDS / crdgen.file_name(model)).read_text())
    return loaded


def _walk(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, node
    for name, sub in node.get("properties", {}).items():
        yield from _walk(sub, f"{path}.{name}")
    if "items" in node:
        yield from _walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from _walk(node["additionalProperties"], f"{path}{{}}")


@pytest.mark.parametrize("model", [View, ModelVersion])
def test_schema_is_structural(model: type[View] | type[ModelVersion]) -> None:
    schema = _crd(model)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    assert "$ref" not in str(schema) and "$defs" not in str(schema)
    assert schema["properties"]["metadata"] == {"type": "object"}
    for path, node in _walk(schema):
        assert "type" in node, f"{path or '<root>'} has no type"
        forbidden = {"anyOf", "oneOf", "allOf", "not", "title", "const", "nullable"} & set(node)
        assert not forbidden, f"{path}: {forbidden}"
        assert "x-kubernetes-preserve-unknown-fields" not in node, path
        # Every property (kubectl explain shows it); map values and list items share theirs.
        if path != ".metadata" and not path.endswith(("{}", "[]")):
            assert node.get("description"), f"{path or '<root>'} has no description"
        if "properties" in node:
            assert "additionalProperties" not in node, path
        for key in ("exclusiveMinimum", "exclusiveMaximum"):
            assert node.get(key, True) is True, f"{path}: {key} must be OpenAPI 3.0's boolean"


@pytest.mark.parametrize("model", [View, ModelVersion])
def test_printer_columns_read_declared_fields(model: type[View] | type[ModelVersion]) -> None:
    version = _crd(model)["spec"]["versions"][0]
    schema = version["schema"]["openAPIV3Schema"]
    declared = {path for path, _ in _walk(schema)}
    for column in version["additionalPrinterColumns"]:
        path = column["jsonPath"]
        assert "conditions" not in path, "a column must read a field kept for it"
        assert path in declared or path == ".metadata.creationTimestamp", path


def test_names_and_subresources() -> None:
    for model in (View, ModelVersion):
        spec = _crd(model)["spec"]
        assert spec["group"] == "kubevision.dev" and spec["scope"] == "Namespaced"
        assert spec["names"]["categories"] == ["kubevision"]
        assert not set(spec["names"]["shortNames"]) & BUILTIN_SHORT_NAMES
        (version,) = spec["versions"]
        assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)
        assert version["subresources"] == {"status": {}}
    columns = [
        c["name"] for c in _crd(ModelVersion)["spec"]["versions"][0]["additionalPrinterColumns"]
    ]
    assert columns == ["View", "Phase", "Step", "Progress", "Best", "Indicator", "Score", "Age"]
    # The indicator follows the View's task: only -o wide shows it.
    wide = [
        c["name"]
        for c in _crd(ModelVersion)["spec"]["versions"][0]["additionalPrinterColumns"]
        if c.get("priority")
    ]
    assert wide == ["Indicator"]
    columns = [c["name"] for c in _crd(View)["spec"]["versions"][0]["additionalPrinterColumns"]]
    assert columns == ["Task", "Concepts", "Model", "Age"]


def test_list_maps_and_defaults() -> None:
    mv = crdgen.schema(ModelVersion)["properties"]
    steps = mv["status"]["properties"]["steps"]
    assert steps["x-kubernetes-list-type"] == "map"
    assert steps["x-kubernetes-list-map-keys"] == ["name"]
    conditions = mv["status"]["properties"]["conditions"]
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]
    concepts = crdgen.schema(View)["properties"]["spec"]["properties"]["concepts"]
    assert (concepts["x-kubernetes-list-type"], concepts["x-kubernetes-list-map-keys"]) == (
        "map",
        ["name"],
    )
    spec = mv["spec"]["properties"]
    # Object defaults are {} so the API server fills in each nested default where declared.
    assert spec["training"]["default"] == {}
    assert spec["training"]["properties"]["epochs"]["default"] == 10
    assert spec["augmentation"]["default"][0] == {"name": "HorizontalFlip"}
    fraction = spec["datasetSplit"]["properties"]["validationFraction"]
    assert fraction | {"description": ""} == {
        "type": "number",
        "minimum": 0,
        "exclusiveMinimum": True,
        "maximum": 1,
        "exclusiveMaximum": True,
        "default": 0.2,
        "description": "",
    }
    assert "required" not in spec["runPolicy"]


def test_crd_defaults_equal_pydantic_defaults() -> None:
    """The API server stores what ApiModel.wire() gives: the immutability rules compare
    stored values, and crdgen.immutable_changes compares wire() values."""

    def apply_defaults(node: dict[str, Any], value: Any) -> Any:
        # The API server's defaulting algorithm: set missing defaults, then recurse.
        if isinstance(value, dict) and "properties" in node:
            for name, sub in node["properties"].items():
                if name not in value and "default" in sub:
                    value[name] = yaml.safe_load(yaml.safe_dump(sub["default"]))
            for name, sub_value in value.items():
                if name in node["properties"]:
                    apply_defaults(node["properties"][name], sub_value)
        elif isinstance(value, list) and "items" in node:
            for item in value:
                apply_defaults(node["items"], item)
        return value

    spec_schema = crdgen.schema(ModelVersion)["properties"]["spec"]
    minimal = {"viewRef": {"name": "pets"}, "architecture": "resnet18"}
    expected = ModelVersionSpec.model_validate(minimal).wire()
    assert apply_defaults(spec_schema, dict(minimal)) == expected


def test_immutability_rules_name_their_field() -> None:
    spec = crdgen.schema(ModelVersion)["properties"]["spec"]
    every = spec["x-kubernetes-validations"]
    # The one rule on the spec that is not a transition rule: the batch size's.
    (batch,) = [r for r in every if "oldSelf" not in r["rule"]]
    assert batch["fieldPath"] == ".training.batchSize"
    rules = {r["fieldPath"]: r for r in every if "oldSelf" in r["rule"]}
    assert ".runPolicy.suspend" not in rules and ".runPolicy.activeDeadlineSeconds" not in rules
    assert ".runPolicy.backoffLimit" in rules and ".training" in rules
    for path, rule in rules.items():
        assert f"spec{path} is immutable" in rule["message"]
        assert rule["reason"] == "FieldValueForbidden"
    # Optional fields: presence is compared too, or adding/removing one would pass.
    weights = rules[".pretrainedWeights"]["rule"]
    assert "has(self.pretrainedWeights) == has(oldSelf.pretrainedWeights)" in weights
    task = crdgen.schema(View)["properties"]["spec"]["x-kubernetes-validations"]
    assert {"rule": "self.task == oldSelf.task", "fieldPath": ".task"}.items() <= task[-1].items()


def test_generator_refuses_a_real_union() -> None:
    from pydantic import BaseModel

    class Bad(BaseModel):
        x: int | str

    with pytest.raises(crdgen.CrdGenerationError, match="x: a union of several types"):
        crdgen.schema(Bad)


# ---- the table, through pydantic --------------------------------------------------------------


def test_table_is_large_and_covers_every_rule() -> None:
    assert len(CASES) >= 20
    assert len({c.id for c in CASES}) == len(CASES)
    operations = {c.operation for c in CASES}
    assert operations == {"create", "update", "status"}
    paths = {c.path for c in CASES}
    for must in (
        "spec.task",
        "spec.training.epochs",
        "spec.training.batchSize",
        "spec.datasetSplit.validationFraction",
        "spec.architecture",
        "spec.concepts[2]",
        "spec.pretrainedWeights",
        "spec.training",
        "metadata.name",
        "status.colour",
    ):
        assert must in paths, must


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_pydantic_refuses_each_case_at_its_path(case: Case) -> None:
    model = MODELS[case.kind]
    if case.operation == "update":
        assert case.old is not None
        old, new = model.model_validate(case.old), model.model_validate(case.manifest)
        assert crdgen.immutable_changes(old, new) == [case.path]
        return
    with pytest.raises(ValidationError) as info:
        model.model_validate(case.manifest)
    assert case.path in crdgen.error_paths(info.value), info.value
    if case.operation == "status":
        # The object without its status is valid: the status alone is at fault.
        without = {k: v for k, v in case.manifest.items() if k != "status"}
        model.model_validate(without)


@pytest.mark.parametrize("update", VALID_UPDATES, ids=lambda u: u.id)
def test_pydantic_accepts_each_valid_update(update: ValidUpdate) -> None:
    model = MODELS[update.old["kind"]]
    old, new = model.model_validate(update.old), model.model_validate(update.new)
    assert crdgen.immutable_changes(old, new) == []


def test_immutable_changes_can_fail() -> None:
    # The helper is not vacuous: every immutable path of the spec is reported when changed.
    rules = ModelVersionSpec.model_config["json_schema_extra"]
    assert isinstance(rules, ObjectRules)
    paths = [".".join(p) for p in rules.immutable_paths(ModelVersionSpec)]
    assert "runPolicy.suspend" not in paths and "training" in paths
    assert len(paths) == len(ModelVersionSpec.model_fields) - 1 + 3


def test_error_paths_joins_the_field_of_model_validators() -> None:
    doc = {"viewRef": {"name": "x"}, "architecture": "resnet18", "training": {"epochs": 0}}
    with pytest.raises(ValidationError) as info:
        ModelVersionSpec.model_validate(doc)
    assert crdgen.error_paths(info.value) == ["training.epochs"]
    assert manifests.field_path(("spec", "concepts", 2)) == "spec.concepts[2]"
