"""The test control plane is a real one: API, auth, Job controller, garbage collector, scheduler.

Every later integration test leans on these behaviours, so they are checked here first, against
the same ``control_plane`` fixture, with both kubectl and the Python ``kubernetes`` client.
The fixture comes from ``testenv/fixtures.py`` through ``tests/integration/conftest.py``.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client, config

from testenv.controlplane import KUBEVISION_AUDIENCE, ControlPlane
from testenv.operator_helpers import eventually


@pytest.fixture(scope="module")
def api(control_plane: ControlPlane) -> Iterator[Any]:
    """A Python ``kubernetes`` client built from the fixture's admin kubeconfig."""
    kubeconfig = str(control_plane.kubeconfig)
    api_client = config.new_client_from_config(config_file=kubeconfig)  # type: ignore[no-untyped-call]
    yield api_client
    api_client.close()


@pytest.fixture
def namespace(control_plane: ControlPlane, api: Any) -> Iterator[str]:
    """A fresh namespace whose ``default`` ServiceAccount exists (pods need it to be admitted)."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    core = client.CoreV1Api(api)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))

    def default_sa() -> bool:
        accounts: list[Any] = core.list_namespaced_service_account(name).items
        return any(sa.metadata.name == "default" for sa in accounts)

    eventually(default_sa, "the serviceaccount controller to create `default`")
    yield name
    core.delete_namespace(name)


def test_kubectl_reaches_the_api_server(control_plane: ControlPlane) -> None:
    namespaces = control_plane.kubectl("get", "ns", "-o", "name").stdout.split()
    assert {"namespace/default", "namespace/kube-system"} <= set(namespaces)

    version = json.loads(control_plane.kubectl("version", "-o", "json").stdout)
    # The build stamps the pinned release in, as Kubernetes' own build does.
    assert version["serverVersion"]["gitVersion"] == control_plane.versions.kubernetes


def test_token_request_and_review(control_plane: ControlPlane, api: Any, namespace: str) -> None:
    core, auth = client.CoreV1Api(api), client.AuthenticationV1Api(api)
    core.create_namespaced_service_account(
        namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="trainer"))
    )

    def token_for(audience: str) -> str:
        request = client.AuthenticationV1TokenRequest(
            spec=client.V1TokenRequestSpec(audiences=[audience], expiration_seconds=600)
        )
        response: Any = core.create_namespaced_service_account_token("trainer", namespace, request)
        token: str = response.status.token
        return token

    def review(token: str) -> Any:
        spec = client.V1TokenReviewSpec(token=token, audiences=[KUBEVISION_AUDIENCE])
        return auth.create_token_review(client.V1TokenReview(spec=spec)).status

    accepted = review(token_for(KUBEVISION_AUDIENCE))
    assert accepted.authenticated is True
    assert accepted.user.username == f"system:serviceaccount:{namespace}:trainer"
    assert KUBEVISION_AUDIENCE in accepted.audiences

    rejected = review(token_for("someone-else.example"))
    assert not rejected.authenticated
    assert rejected.error

    # The fixture's own TokenRequest helper and SA kubeconfig: the API server sees the SA.
    assert review(control_plane.create_token(namespace, "trainer")).authenticated is True
    kubeconfig = control_plane.service_account_kubeconfig(namespace, "trainer")
    whoami = json.loads(
        control_plane.kubectl("auth", "whoami", "-o", "json", kubeconfig=kubeconfig).stdout
    )
    assert whoami["status"]["userInfo"]["username"] == f"system:serviceaccount:{namespace}:trainer"


def test_job_controller_creates_pod_and_gc_removes_it(api: Any, namespace: str) -> None:
    batch, core = client.BatchV1Api(api), client.CoreV1Api(api)
    job: Any = batch.create_namespaced_job(
        namespace,
        client.V1Job(
            metadata=client.V1ObjectMeta(name="probe"),
            spec=client.V1JobSpec(
                backoff_limit=0,
                template=client.V1PodTemplateSpec(
                    spec=client.V1PodSpec(
                        restart_policy="Never",
                        containers=[client.V1Container(name="main", image="busybox")],
                    )
                ),
            ),
        ),
    )
    uid = job.metadata.uid
    selector = f"batch.kubernetes.io/controller-uid={uid}"

    # No nodes: the Pod stays Pending, but its existence proves the real Job controller ran.
    pods: list[Any] = eventually(
        lambda: core.list_namespaced_pod(namespace, label_selector=selector).items,
        "the Job controller to create the Job's Pod",
    )
    owner = pods[0].metadata.owner_references[0]
    assert (owner.kind, owner.uid, owner.controller) == ("Job", uid, True)
    assert pods[0].status.phase == "Pending"

    batch.delete_namespaced_job(
        "probe", namespace, body=client.V1DeleteOptions(propagation_policy="Background")
    )
    eventually(
        lambda: not core.list_namespaced_pod(namespace, label_selector=selector).items,
        "the garbage collector to delete the orphaned Pod",
        timeout=90.0,
    )


def test_scheduler_marks_pod_unschedulable(api: Any, namespace: str) -> None:
    core = client.CoreV1Api(api)
    core.create_namespaced_pod(
        namespace,
        client.V1Pod(
            metadata=client.V1ObjectMeta(name="lonely"),
            spec=client.V1PodSpec(containers=[client.V1Container(name="main", image="busybox")]),
        ),
    )

    def unschedulable() -> Any:
        pod: Any = core.read_namespaced_pod("lonely", namespace)
        conditions: list[Any] = pod.status.conditions or []
        for condition in conditions:
            if condition.type == "PodScheduled" and condition.status == "False":
                return condition
        return None

    condition = eventually(unschedulable, "the scheduler to report the Pod unschedulable")
    assert condition.reason == "Unschedulable"
    assert condition.message
