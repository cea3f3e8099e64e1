"""Under a CRD whose status schema keeps only ``phase`` and ``message`` (issue 16: each time
the Job's TTL removed the finished Job, the operator created a new one, 7 Jobs in 42 s), an
operator run with ``crdMismatch: Condition`` trains the version once: the completion
annotation says it finished, the API server's pruning is named by path, and the pruned
status is not written over and over. A control plane of its own (the CRD is changed)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from kubevision_api import crdgen
from kubevision_api.modelversion import ModelVersion
from kubevision_operator import completion
from testenv import controlplane
from testenv.nodeagent import NodeAgent
from testenv.operator_helpers import ROOT, Operator, apply, get, mv_path, stop_cleanly, wait_for
from testenv.scale import figures, workload

pytestmark = pytest.mark.slow

NAMESPACE = "pruned"
#: Seconds watched after the Job's removal: the loop made a Job every 6 s.
WATCH_S = 20


def _pruning_crd() -> dict[str, Any]:
    """The ModelVersion CRD of this release with the status schema cut to phase and message."""
    crd = crdgen.crd(ModelVersion)
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    schema["properties"]["status"] = {
        "type": "object",
        "properties": {"phase": {"type": "string"}, "message": {"type": "string"}},
    }
    return crd


def _jobs(cp: controlplane.ControlPlane) -> list[str]:
    listing = get(cp, f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs") or {}
    return [job["metadata"]["name"] for job in listing.get("items", [])]


def test_a_pruning_crd_trains_a_finished_version_once(tmp_path: Path) -> None:
    cp = controlplane.start(tmp_path / "control-plane")
    agent: NodeAgent | None = None
    operator: Operator | None = None
    try:
        cp.kubectl("apply", "--server-side", "-f", str(ROOT / "crds" / "kubevision.dev_views.yaml"))
        cp.kubectl("apply", "--server-side", "-f", "-", input=json.dumps(_pruning_crd()))
        for name in ("views", "modelversions"):
            cp.kubectl("wait", "--for=condition=Established", f"crd/{name}.kubevision.dev")
        for name in ("kubevision", NAMESPACE):
            cp.kubectl("create", "namespace", name)
        agent = NodeAgent(cp, name="pruned-node", pods=4, workdir=tmp_path / "node").start()
        apply(cp, workload.view_manifest(), namespace=NAMESPACE)
        (mv,) = workload.modelversion_list(1)["items"]
        mv["spec"]["runPolicy"] = {"ttlSecondsAfterFinished": 1}
        name = mv["metadata"]["name"]
        apply(cp, mv, namespace=NAMESPACE)
        operator = Operator(
            cp,
            tmp_path / "operator",
            {**workload.operator_env(2), "KUBEVISION_CRD_MISMATCH": "Condition"},
        )
        operator.start()

        def recorded() -> dict[str, Any] | None:
            obj = get(cp, mv_path(NAMESPACE, name)) or {}
            text = (obj.get("metadata", {}).get("annotations") or {}).get(completion.ANNOTATION)
            return json.loads(text) if text else None

        wait_for("the completion annotation", lambda: recorded() is not None, 120)
        wait_for("the Job removed by its TTL", lambda: _jobs(cp) == [], 60)
        deadline = time.monotonic() + WATCH_S
        while time.monotonic() < deadline:
            assert _jobs(cp) == [], _jobs(cp)
            time.sleep(0.5)

        record = recorded()
        assert record is not None and record["status"]["phase"] == "Succeeded", record
        stored = (get(cp, mv_path(NAMESPACE, name)) or {}).get("status") or {}
        assert set(stored) <= {"phase", "message"} and stored.get("phase") == "Succeeded", stored
        log = operator.log_text()
        assert log.count("created Job") == 1, log[-3000:]
        dropped = [line for line in log.splitlines() if "the API server dropped" in line]
        assert dropped and "status.conditions" in dropped[0], log[-3000:]
        assert f"status write of ModelVersion {NAMESPACE}/{name}" in dropped[0], dropped
        text = operator.metrics_text()
        pruned = figures.parse_metrics(text, "kubevision_operator_pruned_status_writes_total")
        assert {labels["path"] for labels, _ in pruned} == {"status.observedGeneration"}, pruned
        patches = {
            labels["resource"]: value
            for labels, value in figures.parse_metrics(
                text, "kubevision_operator_api_requests_total"
            )
            if labels["verb"] == "patch"
        }
        # A training's few status writes (paced: 5 s), not one per watch event of its own.
        assert patches.get("modelversions/status", 0) <= 8, patches
        assert patches.get("modelversions", 0) == 1, patches
        print(f"\npruned paths {pruned}; patches {patches}")
    finally:
        stop_cleanly(operator)
        if agent is not None:
            agent.stop()
        cp.stop()
