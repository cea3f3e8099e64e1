"""The operator on the real control plane (API server, controller manager with the Job
controller and garbage collector, scheduler), run as ``kubevision operator``. These tests need
no node: Pods stay Pending, which is what they look at."""

from __future__ import annotations

import json
import signal
import ssl
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from kubevision_api.plan import TrainingPlan
from kubevision_api.view import Task, model_id
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


def _manifest(path: Path, **metadata: Any) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(path.read_text())
    doc["metadata"].update(metadata)
    return doc


def _jobs(cp: ControlPlane, namespace: str) -> list[dict[str, Any]]:
    listing = get(cp, f"/apis/batch/v1/namespaces/{namespace}/jobs")
    return list((listing or {}).get("items", []))


def test_view_missing_then_created_and_unschedulable(
    crds: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    with running_operator(crds, tmp_path) as operator:
        apply(crds, EXAMPLE / "modelversion.yaml", namespace=namespace)
        path = mv_path(namespace, "digits-resnet18")
        missing = wait_for(
            "ViewResolved=False",
            lambda: (
                (c := condition(get(crds, path), "ViewResolved")) and c["status"] == "False" and c
            ),
        )
        assert missing["reason"] == "ViewNotFound"
        assert _jobs(crds, namespace) == []

        apply(crds, EXAMPLE / "view.yaml", namespace=namespace)
        job = wait_for("the Job", lambda: _jobs(crds, namespace))[0]
        mv = get(crds, path)
        assert mv is not None
        owner = job["metadata"]["ownerReferences"][0]
        assert (owner["kind"], owner["uid"], owner["controller"]) == (
            "ModelVersion",
            mv["metadata"]["uid"],
            True,
        )
        labels = job["metadata"]["labels"]
        concepts = ["eight", "five", "four", "nine", "one", "seven", "six", "three", "two", "zero"]
        assert labels["kubevision.dev/view"] == "digits"
        assert labels["kubevision.dev/model"] == model_id(Task.CLASSIFICATION, concepts)
        configmap = get(crds, f"/api/v1/namespaces/{namespace}/configmaps/kv-digits-resnet18-plan")
        assert configmap is not None
        plan = TrainingPlan.model_validate_json(configmap["data"]["plan.json"])
        assert plan.concepts == concepts
        assert plan.status_endpoint is not None
        assert plan.status_endpoint.url == operator.status_url
        assert plan.status_endpoint.ca_pem == operator.ca_pem()

        # No node: the real scheduler's message reaches the Scheduling step.
        def unschedulable() -> dict[str, Any] | None:
            obj = get(crds, path)
            running = condition(obj, "Running")
            if running and running["reason"] == "Unschedulable":
                return obj
            return None

        obj = wait_for("Running=False Unschedulable", unschedulable)
        status = obj["status"]
        scheduling = status["steps"][0]
        assert scheduling["name"] == "Scheduling" and scheduling["state"] == "Pending"
        assert "no nodes available" in scheduling["message"].lower()
        assert "startTime" not in status
        assert status["phase"] == "Pending" and status["currentStep"] == "Scheduling"
        assert condition(obj, "ViewResolved")["status"] == "True"  # type: ignore[index]
        assert condition(obj, "Admitted")["status"] == "True"  # type: ignore[index]
        assert all(c["observedGeneration"] == 1 for c in status["conditions"])

        view = wait_for(
            "the View's status",
            lambda: (
                (
                    v := get(
                        crds, f"/apis/kubevision.dev/v1alpha1/namespaces/{namespace}/views/digits"
                    )
                )
                and (v.get("status") or {}).get("models")
                and v
            ),
        )
        assert view["status"]["model"] == labels["kubevision.dev/model"]
        assert view["status"]["conceptCount"] == 10
        library = view["status"]["models"][0]
        assert library["modelVersions"][0]["modelVersion"] == "digits-resnet18"

        events = get(crds, f"/api/v1/namespaces/{namespace}/events")
        reasons = {
            e["reason"]
            for e in (events or {}).get("items", [])
            if e["involvedObject"]["kind"] == "ModelVersion"
        }
        assert "ViewMissing" in reasons


def test_restarted_operator_adopts_the_job(
    crds: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    apply(crds, EXAMPLE / "view.yaml", EXAMPLE / "modelversion.yaml", namespace=namespace)
    with running_operator(crds, tmp_path) as operator:
        first = wait_for("the Job", lambda: _jobs(crds, namespace))[0]
        operator.stop(signal.SIGKILL)
        operator.start()
        # Touch the ModelVersion so the new process certainly reconciles it.
        crds.kubectl("-n", namespace, "annotate", "mv/digits-resnet18", "touched=yes")
        wait_for(
            "a reconcile after restart",
            lambda: (
                "touched"
                in (get(crds, mv_path(namespace, "digits-resnet18")) or {})
                .get("metadata", {})
                .get("annotations", {})
            ),
        )
        jobs = _jobs(crds, namespace)
        assert [j["metadata"]["uid"] for j in jobs] == [first["metadata"]["uid"]]


def test_deleted_while_operator_is_away(crds: ControlPlane, namespace: str, tmp_path: Path) -> None:
    apply(crds, EXAMPLE / "view.yaml", EXAMPLE / "modelversion.yaml", namespace=namespace)
    with running_operator(crds, tmp_path) as operator:
        wait_for("the Job", lambda: _jobs(crds, namespace))
        operator.stop()
        mv = get(crds, mv_path(namespace, "digits-resnet18"))
        assert mv is not None and not mv["metadata"].get("finalizers")
        crds.kubectl(
            "-n", namespace, "delete", "mv/digits-resnet18", "--wait=true", "--timeout=30s"
        )
        wait_for("the garbage collector", lambda: not _jobs(crds, namespace), timeout=60)
        wait_for(
            "the plan ConfigMap to go",
            lambda: (
                get(crds, f"/api/v1/namespaces/{namespace}/configmaps/kv-digits-resnet18-plan")
                is None
            ),
        )
        operator.start()
        # Both operators log to one file: the second one's caches are synced (its watches
        # run: stopped before, kopf's watch task could log a traceback on its way out).
        wait_for(
            "the restarted operator's caches",
            lambda: operator.log_text().count("caches synced") == 2,
        )
        crds.kubectl("-n", namespace, "annotate", "vw/digits", "touched=yes")
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            assert _jobs(crds, namespace) == []
            time.sleep(0.3)


def test_concurrency_limit_queues_in_order(
    crds: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    apply(crds, EXAMPLE / "view.yaml", namespace=namespace)
    names = ["mv-a", "mv-b", "mv-c"]
    with running_operator(crds, tmp_path, KUBEVISION_CONCURRENCY_LIMIT="1"):
        for name in names:
            apply(crds, _manifest(EXAMPLE / "modelversion.yaml", name=name), namespace=namespace)
        wait_for("one Job", lambda: _jobs(crds, namespace))

        def queued() -> list[tuple[str, str]] | None:
            rows = []
            for name in names[1:]:
                admitted = condition(get(crds, mv_path(namespace, name)), "Admitted")
                if not admitted or admitted["status"] != "False":
                    return None
                rows.append((name, admitted["message"]))
            return rows

        rows = wait_for("two queued ModelVersions", queued)
        assert [j["metadata"]["name"] for j in _jobs(crds, namespace)] == ["kv-mv-a"]
        assert "position 1:" in rows[0][1] and "position 2:" in rows[1][1], rows
        assert get(crds, mv_path(namespace, "mv-b"))["status"]["phase"] == "Queued"  # type: ignore[index]

        crds.kubectl("-n", namespace, "delete", "mv/mv-a", "--wait=true", "--timeout=30s")
        wait_for(
            "mv-b to be admitted",
            lambda: {j["metadata"]["name"] for j in _jobs(crds, namespace)} == {"kv-mv-b"},
            timeout=60,
        )
        assert condition(get(crds, mv_path(namespace, "mv-c")), "Admitted")["status"] == "False"  # type: ignore[index]


def _post(url: str, ca_pem: str, token: str, body: dict[str, Any]) -> int:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    context = ssl.create_default_context(cadata=ca_pem)
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def test_status_endpoint_tokens(crds: ControlPlane, namespace: str, tmp_path: Path) -> None:
    apply(crds, EXAMPLE / "view.yaml", EXAMPLE / "modelversion.yaml", namespace=namespace)
    apply(crds, _manifest(EXAMPLE / "modelversion.yaml", name="other"), namespace=namespace)
    with running_operator(crds, tmp_path) as operator:

        def pod() -> dict[str, Any] | None:
            pods = get(
                crds,
                f"/api/v1/namespaces/{namespace}/pods?labelSelector=job-name%3Dkv-digits-resnet18",
            )
            items = (pods or {}).get("items", [])
            return items[0] if items else None

        trainer = wait_for("the trainer Pod", pod)
        sa = trainer["spec"].get("serviceAccountName", "default")
        wait_for(
            "the ServiceAccount",
            lambda: get(crds, f"/api/v1/namespaces/{namespace}/serviceaccounts/{sa}"),
        )

        def token(audience: str) -> str:
            review = crds.request(
                "POST",
                f"/api/v1/namespaces/{namespace}/serviceaccounts/{sa}/token",
                {
                    "apiVersion": "authentication.k8s.io/v1",
                    "kind": "TokenRequest",
                    "spec": {
                        "audiences": [audience],
                        "expirationSeconds": 600,
                        "boundObjectRef": {
                            "apiVersion": "v1",
                            "kind": "Pod",
                            "name": trainer["metadata"]["name"],
                            "uid": trainer["metadata"]["uid"],
                        },
                    },
                },
            )
            return str(review["status"]["token"])

        good, wrong_audience = token("kubevision.dev"), token("somebody-else")
        ca = operator.ca_pem()
        report = {
            "namespace": namespace,
            "modelVersion": "digits-resnet18",
            "sequence": 1,
            "steps": [{"name": "LoadingDataset", "state": "Running"}],
            "progress": {"percent": 0, "epoch": 0, "epochs": 6, "display": "0/6"},
        }
        base = f"{operator.status_url}/v1alpha1/namespaces/{namespace}/modelversions"
        assert _post(f"{base}/digits-resnet18/report", ca, good, report) == 204
        other = {**report, "modelVersion": "other"}
        assert _post(f"{base}/other/report", ca, good, other) == 403
        assert _post(f"{base}/digits-resnet18/report", ca, wrong_audience, report) == 401

        def merged() -> bool:
            steps = (
                (get(crds, mv_path(namespace, "digits-resnet18")) or {})
                .get("status", {})
                .get("steps", [])
            )
            return any(s["name"] == "LoadingDataset" and s["state"] == "Running" for s in steps)

        wait_for("the report in status", merged)
        crds.kubectl(
            "-n",
            namespace,
            "delete",
            "pod",
            trainer["metadata"]["name"],
            "--grace-period=0",
            "--force",
            "--wait=true",
            "--timeout=30s",
        )
        # The API server caches a successful token check for up to ~10 s.
        report["sequence"] = 2
        wait_for(
            "the token of a deleted Pod to be refused",
            lambda: _post(f"{base}/digits-resnet18/report", ca, good, report) == 401,
            timeout=30,
            every=1.0,
        )
