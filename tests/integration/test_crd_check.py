"""The operator's start-up check of the installed CRDs (``crdcheck``) on the real control plane,
with ``kubevision operator`` run as a process, as a user upgrading would meet it:

- the CRDs of an earlier release (``data/crds-before-lastreport``: no schema marker, no
  ``status.lastReport``): by default the operator exits non-zero within a bound, its output
  ending with a message that names the CRD, the field paths the API server would prune and
  the fix; with ``KUBEVISION_CRD_MISMATCH=Condition`` it runs, and a ModelVersion's status
  (read back from the API server) carries ``CRDsCurrent`` False;
- a CRD whose status schema was cut down to two fields by hand (its marker kept): the message
  names the status fields that every status write would lose;
- after the documented upgrade (``kubectl apply --server-side --force-conflicts -f
  helm/kubevision/crds/``) the operator starts without a word, and the condition goes.

No node and no View: a ModelVersion whose View is missing gets its status at once. Every test
puts the current CRDs back (the control plane is the session's).
"""

from __future__ import annotations

import copy
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubevision_api import crdgen
from kubevision_api.meta import SCHEMA_HASH_ANNOTATION
from kubevision_api.modelversion import ModelVersion
from kubevision_operator import crdcheck
from testenv.controlplane import ControlPlane
from testenv.operator_helpers import (
    ROOT,
    Operator,
    apply,
    condition,
    get,
    mv_path,
    running_operator,
    wait_for,
)

OLD = ROOT / "tests" / "integration" / "data" / "crds-before-lastreport"
CHART_CRDS = ROOT / "helm" / "kubevision" / "crds"
MV_CRD = "modelversions.kubevision.dev"
CRD_PATH = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
#: Seconds within which a refusing operator has exited (it reads two objects, then stops).
REFUSE_BOUND_S = 60
#: What a Pod's termination message keeps of the log (FallbackToLogsOnError): its tail.
TERMINATION_TAIL_BYTES = 2048
#: A ModelVersion that both the earlier and the current CRD accept; its View does not exist.
MANIFEST: dict[str, Any] = {
    "apiVersion": "kubevision.dev/v1alpha1",
    "kind": "ModelVersion",
    "metadata": {"name": "digits-v1"},
    "spec": {"viewRef": {"name": "digits"}, "architecture": "resnet18"},
}


def _install(cp: ControlPlane, *docs: dict[str, Any]) -> None:
    """Replace the CRDs with ``docs`` as they are (a PUT: annotations and schema that other
    field managers, as Helm's, own from earlier tests go too), and wait until Established."""
    for doc in docs:
        name = doc["metadata"]["name"]
        body = copy.deepcopy(doc)
        body["metadata"]["resourceVersion"] = _installed(cp, name)["metadata"]["resourceVersion"]
        cp.request("PUT", f"{CRD_PATH}/{name}", body)
        cp.kubectl("wait", "--for=condition=Established", f"crd/{name}", "--timeout=60s")


def _installed(cp: ControlPlane, name: str) -> dict[str, Any]:
    crd = get(cp, f"{CRD_PATH}/{name}")
    assert crd is not None
    return crd


def _earlier_release(cp: ControlPlane) -> None:
    _install(cp, *(yaml.safe_load(p.read_text()) for p in sorted(OLD.glob("*.yaml"))))
    annotations = _installed(cp, MV_CRD)["metadata"].get("annotations") or {}
    assert SCHEMA_HASH_ANNOTATION not in annotations, "the earlier CRD kept today's marker"


def _upgrade(cp: ControlPlane) -> None:
    """The documented fix, as a user runs it."""
    cp.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CHART_CRDS))
    for name in crdcheck.CRD_NAMES:
        cp.kubectl("wait", "--for=condition=Established", f"crd/{name}", "--timeout=60s")


@pytest.fixture
def cluster(crds: ControlPlane) -> Iterator[ControlPlane]:
    """The session's control plane; the current CRDs are back after the test."""
    yield crds
    # Exactly today's CRDs (what the earlier ones had and today's lack goes too), then owned
    # by kubectl's field manager as install_crds leaves them.
    _install(crds, *(crdgen.crd(model) for model in crdgen.RESOURCES))
    _upgrade(crds)


def _refused(cp: ControlPlane, workdir: Path, **env: str) -> tuple[int, str, float]:
    """Run ``kubevision operator`` until it exits: (exit code, output, seconds)."""
    operator = Operator(cp, workdir, env)
    started = time.monotonic()
    try:
        result = subprocess.run(
            [sys.executable, "-m", "kubevision_cli", "operator"],
            env=operator.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=REFUSE_BOUND_S,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.output.decode() if isinstance(exc.output, bytes) else exc.output or ""
        raise AssertionError(f"the operator ran past {REFUSE_BOUND_S} s:\n{out[-3000:]}") from exc
    return result.returncode, result.stdout, time.monotonic() - started


def _crd_current(operator: Operator) -> dict[str, float]:
    prefix = "kubevision_operator_crd_current{"
    found = {}
    for line in operator.metrics_text().splitlines():
        if line.startswith(prefix):
            labels, value = line[len(prefix) :].split("} ")
            found[labels.split('"')[1]] = float(value)
    return found


def test_an_earlier_release_s_crds_refuse_then_condition_then_upgrade(
    cluster: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    _earlier_release(cluster)
    apply(cluster, MANIFEST, namespace=namespace)

    # Refuse (the default): out within the bound, the message last (the termination message).
    code, output, seconds = _refused(cluster, tmp_path / "refuse")
    assert code != 0, output[-3000:]
    assert seconds < REFUSE_BOUND_S
    tail = output.encode()[-TERMINATION_TAIL_BYTES:].decode(errors="replace")
    assert f"- {MV_CRD} was installed from an earlier release" in tail, output[-3000:]
    for path in ("status.lastReport", "spec.training.compile", "spec.export"):
        assert path in tail, path
    assert output.rstrip().endswith(
        f"Fix: {crdcheck.FIX_COMMAND} (the chart of this release; {crdcheck.DOCS})"
    ), output[-3000:]
    assert "Traceback" not in output, output[-5000:]
    print(f"refused in {seconds:.1f} s; the output's tail:\n{tail}")
    # Nothing was acted on: the ModelVersion has no status.
    assert not (get(cluster, mv_path(namespace, "digits-v1")) or {}).get("status")

    # Condition: it runs, and says so in the status it writes.
    path = mv_path(namespace, "digits-v1")
    with running_operator(
        cluster, tmp_path / "condition", KUBEVISION_CRD_MISMATCH="Condition"
    ) as operator:
        found = wait_for(
            "CRDsCurrent False",
            lambda: (c := condition(get(cluster, path), "CRDsCurrent")) and c,
            timeout=60,
        )
        assert (found["status"], found["reason"]) == ("False", "SchemaMismatch")
        assert MV_CRD in found["message"] and "status.lastReport" in found["message"]
        assert crdcheck.FIX_COMMAND in found["message"]
        # The status is the operator's: the View is missing, and it says so.
        resolved = condition(get(cluster, path), "ViewResolved")
        assert resolved is not None and resolved["status"] == "False"
        assert _crd_current(operator) == {MV_CRD: 0.0, "views.kubevision.dev": 0.0}
    assert "differ from this operator's" in operator.log_text()

    # The documented upgrade: a clean start, and the condition goes from the status.
    _upgrade(cluster)
    assert _installed(cluster, MV_CRD)["metadata"]["annotations"][SCHEMA_HASH_ANNOTATION] == (
        crdgen.schema_hash(ModelVersion)
    )
    with running_operator(cluster, tmp_path / "upgraded") as operator:
        wait_for(
            "CRDsCurrent gone",
            lambda: (
                condition(get(cluster, path), "ViewResolved")
                and condition(get(cluster, path), "CRDsCurrent") is None
            ),
            timeout=60,
        )
        assert _crd_current(operator) == {MV_CRD: 1.0, "views.kubevision.dev": 1.0}
    assert "differ from this operator's" not in operator.log_text()


def test_a_status_cut_down_to_two_fields_is_named_field_by_field(
    cluster: ControlPlane, tmp_path: Path
) -> None:
    cut = copy.deepcopy(crdgen.crd(ModelVersion))
    schema = cut["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    status = schema["properties"]["status"]
    status["properties"] = {k: status["properties"][k] for k in ("phase", "observedGeneration")}
    _install(cluster, cut)
    code, output, _ = _refused(cluster, tmp_path / "refuse")
    assert code != 0, output[-3000:]
    line = next(
        (x for x in output.splitlines() if x.startswith(f"- {MV_CRD} was edited after it was")),
        None,
    )
    assert line is not None, output[-3000:]
    for path in ("status.conditions", "status.steps", "status.lastReport", "status.progress"):
        assert path in line, path
    assert "status.phase" not in line and "spec." not in line
    assert "views.kubevision.dev" not in output.split("cannot start:")[-1]
