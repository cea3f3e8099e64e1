"""crdcheck: the start-up check of the installed CRDs (marker, pruned field paths, the one
message) and the CRDsCurrent condition it puts in the ModelVersion and View statuses."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubevision_api import crdgen
from kubevision_api.meta import SCHEMA_HASH_ANNOTATION
from kubevision_api.modelversion import ModelVersion
from kubevision_api.status import ModelVersionStatus
from kubevision_api.view import View
from kubevision_operator import crdcheck
from kubevision_operator import status as st
from kubevision_operator import statustable as tbl
from kubevision_operator.observe import Observation, Situation
from kubevision_operator.viewstatus import compose_view_status
from tests.operator.operator_helpers import at, view


def problem(installed: Any) -> str | None:
    return crdcheck.message(crdcheck.check(installed))


ROOT = Path(__file__).resolve().parents[2]
#: An earlier release's CRDs (before status.lastReport), without the marker.
OLD = ROOT / "tests" / "integration" / "data" / "crds-before-lastreport"
MV, VW = "modelversions.kubevision.dev", "views.kubevision.dev"


def current() -> dict[str, Any]:
    return {crdgen.crd_name(m): crdgen.crd(m) for m in crdgen.RESOURCES}


def old(plural: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((OLD / f"kubevision.dev_{plural}.yaml").read_text())
    return loaded


def schema_of(crd: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return found


# ---- the schema walk --------------------------------------------------------------------------


def obj(**properties: Any) -> dict[str, Any]:
    return {"type": "object", "properties": properties}


STRING = {"type": "string"}


def test_pruned_paths_names_the_top_of_each_missing_field() -> None:
    ours = obj(
        spec=obj(training=obj(epochs=STRING, earlyStopping=obj(patience=STRING))),
        status=obj(phase=STRING, lastReport=obj(sequence=STRING)),
    )
    theirs = obj(spec=obj(training=obj(epochs=STRING)), status=obj(phase=STRING))
    assert crdcheck.pruned_paths(ours, theirs) == [
        "spec.training.earlyStopping",
        "status.lastReport",
    ]
    assert crdcheck.pruned_paths(ours, ours) == []
    # A field of theirs that we lack prunes nothing of ours.
    assert crdcheck.pruned_paths(theirs, ours) == []


def test_pruned_paths_in_list_items_and_maps() -> None:
    ours = obj(
        steps={"type": "array", "items": obj(name=STRING, message=STRING)},
        labels={"type": "object", "additionalProperties": obj(a=STRING, b=STRING)},
    )
    theirs = obj(
        steps={"type": "array", "items": obj(name=STRING)},
        labels={"type": "object", "additionalProperties": obj(a=STRING)},
    )
    assert crdcheck.pruned_paths(ours, theirs) == ["steps[].message", "labels{}.b"]


def test_pruned_paths_stop_where_unknown_fields_are_kept() -> None:
    ours = obj(status=obj(phase=STRING, lastReport=obj(sequence=STRING)))
    kept = obj(status={"type": "object", "x-kubernetes-preserve-unknown-fields": True})
    assert crdcheck.pruned_paths(ours, kept) == []
    anything = obj(status={"type": "object", "additionalProperties": True})
    assert crdcheck.pruned_paths(ours, anything) == []
    # A map keeps any key: our field is one of its values, whose own fields are walked.
    typed_map = obj(status={"type": "object", "additionalProperties": obj(sequence=STRING)})
    ours = obj(status=obj(lastReport=obj(sequence=STRING, pod=STRING)))
    assert crdcheck.pruned_paths(ours, typed_map) == ["status.lastReport.pod"]


# ---- one CRD, every CRD -----------------------------------------------------------------------


def test_current_crds_pass() -> None:
    assert crdcheck.check(current()) == []
    assert problem(current()) is None
    assert crdcheck.CRD_NAMES == (VW, MV)


def test_the_committed_crds_pass() -> None:
    committed = {
        crdgen.crd_name(m): yaml.safe_load((ROOT / "crds" / crdgen.file_name(m)).read_text())
        for m in crdgen.RESOURCES
    }
    assert problem(committed) is None


def test_a_crd_of_an_earlier_release() -> None:
    installed = {**current(), MV: old("modelversions")}
    (finding,) = crdcheck.check(installed)
    assert finding.crd == MV
    assert "earlier release" in finding.what and SCHEMA_HASH_ANNOTATION in finding.what
    # Spec fields trained without a word, and the operator's own status writes.
    for path in ("spec.training.compile", "spec.export", "status.lastReport", "status.attempts"):
        assert path in finding.pruned
    # The top of a missing field only, not its sub-fields.
    assert not any(p.startswith("status.lastReport.") for p in finding.pruned)


def test_a_crd_without_its_marker_but_the_same_schema_prunes_nothing() -> None:
    unmarked = copy.deepcopy(current()[MV])
    del unmarked["metadata"]["annotations"]
    (finding,) = crdcheck.check({**current(), MV: unmarked})
    assert finding.pruned == ()
    assert "no field of this operator is pruned" in finding.line()


def test_a_crd_whose_status_is_cut_down() -> None:
    cut = copy.deepcopy(current()[MV])
    status = schema_of(cut)["properties"]["status"]
    status["properties"] = {k: status["properties"][k] for k in ("phase", "observedGeneration")}
    cut["metadata"]["annotations"][SCHEMA_HASH_ANNOTATION] = crdgen.spec_hash(cut["spec"])
    cut["metadata"]["annotations"]["kubevision.dev/release"] = "0.0.1"
    (finding,) = crdcheck.check({**current(), MV: cut})
    assert "another schema (release 0.0.1, sha256:" in finding.what
    assert crdgen.schema_hash(ModelVersion) in finding.what
    assert {"status.conditions", "status.steps", "status.lastReport"} <= set(finding.pruned)
    assert not any(p.startswith("spec") for p in finding.pruned)


def test_a_crd_edited_by_hand_keeps_its_marker_and_is_caught() -> None:
    edited = copy.deepcopy(current()[MV])
    del schema_of(edited)["properties"]["status"]["properties"]["steps"]
    (finding,) = crdcheck.check({**current(), MV: edited})
    assert "edited after it was generated" in finding.what
    assert finding.pruned == ("status.steps",)


def test_a_missing_crd() -> None:
    (finding,) = crdcheck.check({VW: current()[VW]})
    assert (finding.crd, finding.what, finding.pruned) == (MV, "is not installed", ())


def test_the_message_names_each_crd_the_paths_and_the_fix() -> None:
    text = problem({MV: old("modelversions"), VW: old("views")})
    assert text is not None
    lines = text.splitlines()
    assert lines[0].startswith("The installed kubevision CRDs differ from this operator's")
    assert lines[1].startswith(f"- {VW} was installed from an earlier release")
    assert lines[2].startswith(f"- {MV} was installed from an earlier release")
    assert "the API server prunes " in lines[2] and "status.lastReport" in lines[2]
    assert lines[3] == (
        "Fix: kubectl apply --server-side --force-conflicts -f helm/kubevision/crds/ "
        "(the chart of this release; docs/crds.md#upgrading-the-crds-on-a-cluster)"
    )


def test_the_docs_anchor_exists() -> None:
    path, anchor = crdcheck.DOCS.split("#")
    headings = [
        line.lstrip("#").strip().lower().replace(" ", "-")
        for line in (ROOT / path).read_text().splitlines()
        if line.startswith("#")
    ]
    assert anchor in headings


# ---- the condition ----------------------------------------------------------------------------

PROBLEM = "The installed kubevision CRDs differ from this operator's (kubevision 0.1.0): ..."
RUNNING = Observation(Situation.RUNNING, "The trainer is running.")


def types(conditions: list[Any]) -> list[tuple[str, str]]:
    return [(c.type, c.status) for c in conditions]


def test_modelversion_status_carries_crds_current_false() -> None:
    first = st.compose_status(None, RUNNING, None, 1, at(10), schema_problem=PROBLEM)
    assert types(first.conditions)[: len(tbl.CONDITION_TYPES)] == types(
        st.compose_status(None, RUNNING, None, 1, at(10)).conditions
    )
    crd = first.conditions[-1]
    assert (crd.type, crd.status, crd.reason, crd.message) == (
        "CRDsCurrent",
        "False",
        "SchemaMismatch",
        PROBLEM,
    )
    # It stays, since when it was set; it goes once the CRDs are current.
    again = st.compose_status(first, RUNNING, None, 2, at(20), schema_problem=PROBLEM)
    assert again.conditions[-1].last_transition_time == at(10)
    assert again.conditions[-1].observed_generation == 2
    gone = st.compose_status(again, RUNNING, None, 2, at(30))
    assert "CRDsCurrent" not in [c.type for c in gone.conditions]
    assert len(gone.conditions) == len(tbl.CONDITION_TYPES)


def test_a_finished_modelversion_gets_the_condition_too() -> None:
    done = st.compose_status(None, Observation(Situation.SUCCEEDED, "Done."), None, 1, at(10))
    later = st.compose_status(done, RUNNING, None, 1, at(20), schema_problem=PROBLEM)
    assert later.phase == "Succeeded"
    assert ("CRDsCurrent", "False") in types(later.conditions)
    assert ModelVersionStatus.model_validate(later.wire()) == later


def test_a_long_message_is_cut_to_a_condition_s_limit() -> None:
    long = "x" * 40000
    (cond,) = crdcheck.crd_condition([], long, 1, at(0))
    assert len(cond.message) == 32768 and cond.message.endswith("…")


@pytest.mark.parametrize("problem", [PROBLEM, None])
def test_view_status_carries_crds_current_false(problem: str | None) -> None:
    v: View = view()
    status = compose_view_status(v, [], at(10), problem)
    expected = [("Ready", "True")] + ([("CRDsCurrent", "False")] if problem else [])
    assert types(status.conditions) == expected
    stored = View.model_validate({**v.wire(), "status": status.wire()})
    after = compose_view_status(stored, [], at(20), None)
    assert types(after.conditions) == [("Ready", "True")]


# ---- the runtime's start-up check -------------------------------------------------------------


class FakeKube:
    """``Kube.get_crd`` from a dict; a KubeError for every CRD when ``error`` is set."""

    def __init__(self, crds: dict[str, Any], error: Exception | None = None) -> None:
        self.crds = crds
        self.error = error
        self.on_request: Any = None

    def get_crd(self, name: str) -> dict[str, Any] | None:
        if self.error is not None:
            raise self.error
        return self.crds.get(name)


def runtime(kube: FakeKube, mode: str) -> Any:
    from kubevision_operator.runtime import Runtime
    from kubevision_operator.settings import OperatorSettings

    return Runtime(OperatorSettings(crd_mismatch=mode), kube)  # type: ignore[arg-type]


def gauge(rt: Any, crd: str) -> float:
    value: float = rt.metrics.registry.get_sample_value(
        "kubevision_operator_crd_current", {"crd": crd}
    )
    return value


def test_refuse_stops_the_start_with_the_message() -> None:
    from kubevision_operator.runtime import StartupError

    rt = runtime(FakeKube({**current(), MV: old("modelversions")}), "Refuse")
    with pytest.raises(StartupError) as info:
        rt._check_crds()
    assert "status.lastReport" in str(info.value) and crdcheck.FIX_COMMAND in str(info.value)
    assert (gauge(rt, MV), gauge(rt, VW)) == (0.0, 1.0)


def test_condition_runs_with_the_message() -> None:
    rt = runtime(FakeKube({VW: current()[VW]}), "Condition")
    problem = rt._check_crds()
    assert problem is not None and f"- {MV} is not installed" in problem
    assert (gauge(rt, MV), gauge(rt, VW)) == (0.0, 1.0)
    assert runtime(FakeKube(current()), "Refuse")._check_crds() is None


def test_no_permission_to_read_the_crds_is_a_startup_error() -> None:
    from kubernetes.client.exceptions import ApiException

    from kubevision_operator.kube import KubeError
    from kubevision_operator.runtime import StartupError

    forbidden = KubeError(
        "CustomResourceDefinition x", ApiException(status=403, reason="Forbidden")
    )
    with pytest.raises(StartupError, match="grants get on customresourcedefinitions"):
        runtime(FakeKube({}, forbidden), "Condition")._check_crds()
    unavailable = KubeError("CustomResourceDefinition x", ApiException(status=503, reason="x"))
    with pytest.raises(KubeError):
        runtime(FakeKube({}, unavailable), "Refuse")._check_crds()
