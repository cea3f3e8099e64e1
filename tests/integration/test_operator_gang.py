"""A multi-Pod training through the operator on the real control plane (API server, Job
controller, garbage collector, scheduler), with no node and no trainer: the Indexed Job and its
headless Service, the Pods waiting for a node in the status, a gang restart after one Pod
fails (its status written as a kubelet would), and the Service garbage-collected with the
ModelVersion. Training through torchrun is the trainer side's test."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from kubevision_api import contract
from testenv.controlplane import ControlPlane
from testenv.operator_helpers import (
    ROOT,
    apply,
    condition,
    get,
    mv_path,
    running_operator,
    wait_for,
)

EXAMPLE = ROOT / "examples" / "01-classification-digits"
NAME = "digits-ddp"
JOB = "kv-digits-ddp"


def _gang_modelversion() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((EXAMPLE / "modelversion.yaml").read_text())
    doc["metadata"]["name"] = NAME
    doc["spec"]["resources"] = {"gpus": 0, "nodes": 2, "cpu": "1", "memory": "1Gi"}
    doc["spec"]["runPolicy"] = {"backoffLimit": 1}
    return doc


def _pods(cp: ControlPlane, namespace: str) -> list[dict[str, Any]]:
    listing = get(cp, f"/api/v1/namespaces/{namespace}/pods?labelSelector=job-name%3D{JOB}")
    return sorted((listing or {}).get("items", []), key=lambda p: p["metadata"]["name"])


def _fail(cp: ControlPlane, namespace: str, pod: dict[str, Any]) -> None:
    """Write the Pod's status as a kubelet would after its trainer crashed (exit code 1)."""
    status = {
        "phase": "Failed",
        "containerStatuses": [
            {
                "name": contract.CONTAINER,
                "image": "trainer",
                "imageID": "",
                "ready": False,
                "restartCount": 0,
                "state": {
                    "terminated": {
                        "exitCode": 1,
                        "reason": "Error",
                        "message": "RuntimeError: rank 1 lost its peer",
                        "startedAt": "2025-03-01T12:00:00Z",
                        "finishedAt": "2025-03-01T12:01:00Z",
                    }
                },
            }
        ],
    }
    cp.kubectl(
        "-n",
        namespace,
        "patch",
        "pod",
        pod["metadata"]["name"],
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": status}),
    )


def test_gang_job_service_waiting_pods_restart_and_garbage_collection(
    crds: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    path = mv_path(namespace, NAME)
    service_path = f"/api/v1/namespaces/{namespace}/services/{JOB}"
    job_path = f"/apis/batch/v1/namespaces/{namespace}/jobs/{JOB}"
    with running_operator(crds, tmp_path):
        apply(crds, EXAMPLE / "view.yaml", _gang_modelversion(), namespace=namespace)
        job = wait_for("the Indexed Job", lambda: get(crds, job_path))
        mv = get(crds, path)
        assert mv is not None
        spec = job["spec"]
        assert (spec["completionMode"], spec["completions"], spec["parallelism"]) == (
            "Indexed",
            2,
            2,
        )
        assert spec["backoffLimit"] == 0
        assert job["metadata"]["annotations"]["kubevision.dev/attempt"] == "1"
        assert spec["template"]["spec"]["subdomain"] == JOB

        service = get(crds, service_path)
        assert service is not None
        assert service["spec"]["clusterIP"] == "None"
        assert service["spec"]["publishNotReadyAddresses"] is True
        (owner,) = service["metadata"]["ownerReferences"]
        assert (owner["kind"], owner["uid"]) == ("ModelVersion", mv["metadata"]["uid"])

        # The Job controller makes both Pods, hostnames <job>-<index>; no node takes them.
        pods = wait_for("two Pods", lambda: len(p := _pods(crds, namespace)) == 2 and p)
        assert sorted(p["spec"]["hostname"] for p in pods) == [f"{JOB}-0", f"{JOB}-1"]
        assert all(p["spec"]["subdomain"] == JOB for p in pods)

        def waiting() -> dict[str, Any] | None:
            obj = get(crds, path)
            running = condition(obj, "Running")
            return obj if running and running["reason"] == "Unschedulable" else None

        obj = wait_for("2 of 2 Pods waiting", waiting)
        message = condition(obj, "Running")["message"]  # type: ignore[index]
        first = min(
            p["metadata"]["name"] for p in pods if p["metadata"]["name"].startswith(JOB + "-0-")
        )
        assert message.startswith(f"2 of 2 Pods wait to be scheduled: {first}: "), message
        assert "no nodes available" in message.lower(), message
        assert obj["status"]["steps"][0]["message"] == message

        # Rank 1 crashes: the Job fails (backoffLimit 0), the operator records the attempt,
        # deletes the Job in the foreground and creates attempt 2 under the same name.
        old_uid = job["metadata"]["uid"]
        rank1 = next(p for p in pods if p["metadata"]["name"].startswith(JOB + "-1-"))
        _fail(crds, namespace, rank1)

        def restarted() -> dict[str, Any] | None:
            new = get(crds, job_path)
            return new if new and new["metadata"]["uid"] != old_uid else None

        second = wait_for("the attempt-2 Job", restarted, timeout=90)
        assert second["metadata"]["annotations"]["kubevision.dev/attempt"] == "2"
        env = {
            e["name"]: e.get("value")
            for e in second["spec"]["template"]["spec"]["containers"][0]["env"]
        }
        assert env[contract.ENV_ATTEMPT] == "2"
        assert env[contract.ENV_MASTER_ADDR] == f"{JOB}-0.{JOB}.{namespace}.svc"

        def counted() -> dict[str, Any] | None:
            found = get(crds, path)
            return found if (found or {}).get("status", {}).get("attempts") == 2 else None

        status = wait_for("attempts: 2", counted)["status"]
        failure = status["lastFailure"]
        assert (failure["attempt"], failure["reason"], failure["exitCode"]) == (
            1,
            "TrainerCrashed",
            1,
        )
        assert failure["message"] == (
            f"Pod {rank1['metadata']['name']}: The trainer exited with code 1: "
            "RuntimeError: rank 1 lost its peer."
        )
        # The Service outlives the attempt's Job.
        same = get(crds, service_path)
        assert same is not None and same["metadata"]["uid"] == service["metadata"]["uid"]
        events = get(crds, f"/api/v1/namespaces/{namespace}/events") or {}
        warnings = [
            e["message"]
            for e in events.get("items", [])
            if e["involvedObject"].get("name") == NAME and e["type"] == "Warning"
        ]
        assert f"Attempt 1 failed: {failure['message']}" in warnings, warnings

        # Attempt 2 fails as well: backoffLimit 1 leaves no retry, the training fails.
        pods = wait_for("attempt 2's Pods", lambda: len(p := _pods(crds, namespace)) == 2 and p)
        _fail(crds, namespace, pods[0])

        def failed() -> dict[str, Any] | None:
            found = get(crds, path)
            cond = condition(found, "Failed")
            return found if cond and cond["status"] == "True" else None

        final = wait_for("Failed", failed, timeout=90)["status"]
        assert (final["attempts"], final["lastFailure"]["attempt"]) == (2, 2)
        assert condition({"status": final}, "Failed")["message"].endswith(  # type: ignore[index]
            "Attempt 2 of 2: no retry is left."
        )
        # The rendezvous is over: the Service goes.
        wait_for("the Service deleted", lambda: get(crds, service_path) is None, timeout=30)

    # Garbage collection: the ModelVersion's children go with it.
    crds.kubectl("-n", namespace, "delete", "modelversion", NAME, "--wait=true", "--timeout=60s")
    wait_for("the Job collected", lambda: get(crds, job_path) is None, timeout=60)


def test_the_service_goes_with_its_modelversion(
    crds: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    service_path = f"/api/v1/namespaces/{namespace}/services/{JOB}"
    with running_operator(crds, tmp_path):
        apply(crds, EXAMPLE / "view.yaml", _gang_modelversion(), namespace=namespace)
        wait_for("the Service", lambda: get(crds, service_path))
    # The operator is gone: only the garbage collector can delete the Service now.
    crds.kubectl("-n", namespace, "delete", "modelversion", NAME, "--wait=true", "--timeout=60s")
    wait_for("the Service collected", lambda: get(crds, service_path) is None, timeout=60)
