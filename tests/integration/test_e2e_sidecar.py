"""A service mesh's sidecar, added to the trainer Pod by a real MutatingAdmissionPolicy (what
Istio's injector does in spirit): a second container that never exits keeps the Pod, and so
the Job, running after the trainer has finished. The operator reads the trainer container's
own termination: the ModelVersion ends Succeeded soon after the trainer exits 0, the status
names the container, and once the sidecar has outlived the trainer by the grace period the
operator deletes the Job (the status stays Succeeded)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from testenv.controlplane import ControlPlane
from testenv.operator_helpers import apply, condition, get, mv_path, running_operator, wait_for
from testenv.scale import stub_trainer, workload

pytestmark = pytest.mark.slow

GRACE_S = 5


def _policy(namespace: str) -> list[dict[str, Any]]:
    """A MutatingAdmissionPolicy and its binding that add ``mesh-proxy`` (``sleep 3600``) to
    every Pod created in ``namespace``."""
    name = f"fake-mesh-{namespace}"
    container = (
        'Object.spec.containers{name: "mesh-proxy", image: "mesh/proxy:1", '
        'command: ["sleep", "3600"]}'
    )
    return [
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingAdmissionPolicy",
            "metadata": {"name": name},
            "spec": {
                "matchConstraints": {
                    "namespaceSelector": {
                        "matchLabels": {"kubernetes.io/metadata.name": namespace}
                    },
                    "resourceRules": [
                        {
                            "apiGroups": [""],
                            "apiVersions": ["v1"],
                            "operations": ["CREATE"],
                            "resources": ["pods"],
                        }
                    ],
                },
                "failurePolicy": "Fail",
                "reinvocationPolicy": "Never",
                "mutations": [
                    {
                        "patchType": "JSONPatch",
                        "jsonPatch": {
                            "expression": (
                                '[JSONPatch{op: "add", path: "/spec/containers/-", '
                                f"value: {container}}}]"
                            )
                        },
                    }
                ],
            },
        },
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingAdmissionPolicyBinding",
            "metadata": {"name": name},
            "spec": {"policyName": name},
        },
    ]


@pytest.fixture
def mesh(crds: ControlPlane, namespace: str) -> Iterator[None]:
    """The policy, for this test's namespace only."""
    for doc in _policy(namespace):
        crds.kubectl("apply", "--server-side", "-f", "-", input=json.dumps(doc))
    try:
        yield
    finally:
        name = f"fake-mesh-{namespace}"
        crds.kubectl("delete", "mutatingadmissionpolicybinding", name, check=False)
        crds.kubectl("delete", "mutatingadmissionpolicy", name, check=False)


def _trainer_state(pod: dict[str, Any]) -> dict[str, Any]:
    for status in pod.get("status", {}).get("containerStatuses") or []:
        if status["name"] == "trainer":
            return dict(status.get("state") or {})
    return {}


def test_a_sidecar_does_not_keep_a_finished_run_running(
    crds: ControlPlane, namespace: str, node_agent: Any, mesh: None, tmp_path: Path
) -> None:
    node_agent(pods=5, cpu="16", memory="64Gi")
    apply(crds, workload.view_manifest(), namespace=namespace)
    env = {
        "KUBEVISION_TRAINER_COMMAND_OVERRIDE": json.dumps(stub_trainer.command(pause=0.5)),
        "KUBEVISION_TRAINER_METRICS_PORT": "0",
        "KUBEVISION_SIDECAR_GRACE_SECONDS": str(GRACE_S),
    }
    listing = workload.modelversion_list(1)
    name = listing["items"][0]["metadata"]["name"]
    jobs = f"/apis/batch/v1/namespaces/{namespace}/jobs"
    pods = f"/api/v1/namespaces/{namespace}/pods?labelSelector=job-name%3Dkv-{name}"
    with running_operator(crds, tmp_path, **env):
        apply(crds, listing, namespace=namespace)
        pod = wait_for(
            "the trainer to exit 0 while the Pod runs on",
            lambda: next(
                (
                    p
                    for p in (get(crds, pods) or {}).get("items", [])
                    if _trainer_state(p).get("terminated", {}).get("exitCode") == 0
                ),
                None,
            ),
            120,
        )
        exited = time.monotonic()
        assert [c["name"] for c in pod["spec"]["containers"]] == ["trainer", "mesh-proxy"]
        assert pod["status"]["phase"] == "Running", pod["status"]

        def succeeded() -> dict[str, Any] | None:
            found = get(crds, mv_path(namespace, name))
            return found if (condition(found, "Succeeded") or {}).get("status") == "True" else None

        obj = wait_for("Succeeded", succeeded, 30)
        succeeded_after = time.monotonic() - exited
        message = condition(obj, "Succeeded")["message"]  # type: ignore[index]
        assert "'mesh-proxy' kept the Pod running" in message, message
        assert obj["status"]["phase"] == "Succeeded"
        wait_for(
            "the operator to delete the Job",
            lambda: not (get(crds, jobs) or {}).get("items"),
            GRACE_S + 30,
        )
        ended_after = time.monotonic() - exited
        time.sleep(2)
        after = get(crds, mv_path(namespace, name))
        assert (condition(after, "Succeeded") or {}).get("status") == "True"
        assert after is not None and after["status"]["phase"] == "Succeeded"
    print(
        f"trainer exited 0 with a sidecar: Succeeded after {succeeded_after:.1f} s, "
        f"Job ended after {ended_after:.1f} s (grace {GRACE_S} s)"
    )
    assert ended_after >= GRACE_S - 1
