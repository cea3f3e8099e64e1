"""The chart's RBAC is derived from operator/kubevision_operator/kube.py, where every API call
of the operator lives, plus what kopf itself does (watch what it handles, post events,
observe CRDs and, for a list of namespaces, the namespaces). A new call in kube.py fails
here until the chart grants it, and a grant that nothing uses fails here too."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.helm.helm_tool import Helm, Obj, by_kind

KUBE_PY = Path(__file__).resolve().parents[2] / "operator" / "kubevision_operator" / "kube.py"

Grant = tuple[str, str, str]  # (apiGroup, resource, verb)

#: Client method (kubernetes' generated API classes) -> the permissions it needs.
CLIENT_CALLS: dict[str, set[Grant]] = {
    # plural is an argument: views and modelversions alike.
    "get_namespaced_custom_object": {
        ("kubevision.dev", "views", "get"),
        ("kubevision.dev", "modelversions", "get"),
    },
    "list_namespaced_custom_object": {
        ("kubevision.dev", "views", "list"),
        ("kubevision.dev", "modelversions", "list"),
    },
    "list_cluster_custom_object": {
        ("kubevision.dev", "views", "list"),
        ("kubevision.dev", "modelversions", "list"),
    },
    "patch_namespaced_custom_object_status": {
        ("kubevision.dev", "views/status", "patch"),
        ("kubevision.dev", "modelversions/status", "patch"),
    },
    # The completion annotation (kubevision_operator.completion): ModelVersions only.
    "patch_namespaced_custom_object": {("kubevision.dev", "modelversions", "patch")},
    "read_namespaced_job": {("batch", "jobs", "get")},
    "create_namespaced_job": {("batch", "jobs", "create")},
    "patch_namespaced_job": {("batch", "jobs", "patch")},
    "delete_namespaced_job": {("batch", "jobs", "delete")},
    "delete_namespaced_pod": {("", "pods", "delete")},
    "list_namespaced_job": {("batch", "jobs", "list")},
    "list_job_for_all_namespaces": {("batch", "jobs", "list")},
    "list_namespaced_pod": {("", "pods", "list")},
    "list_pod_for_all_namespaces": {("", "pods", "list")},
    "read_namespaced_pod": {("", "pods", "get")},
    "create_namespaced_config_map": {("", "configmaps", "create")},
    # A multi-Pod training's headless Service; not watched, so neither listed nor watched.
    "create_namespaced_service": {("", "services", "create")},
    "read_namespaced_service": {("", "services", "get")},
    "delete_namespaced_service": {("", "services", "delete")},
    "create_token_review": {("authentication.k8s.io", "tokenreviews", "create")},
    "read_namespaced_secret": {("", "secrets", "get")},
    "create_namespaced_secret": {("", "secrets", "create")},
    "create_namespaced_event": {("", "events", "create")},
    # The start-up check reads the two CRDs (crdcheck).
    "read_custom_resource_definition": {
        ("apiextensions.k8s.io", "customresourcedefinitions", "get")
    },
}

#: What kopf does on its own: list+watch each handled resource (registry.py: ModelVersions,
#: Views, Jobs, Pods), post events about them, and follow CRDs (re-scan on change).
KOPF: set[Grant] = {
    *(
        (g, r, v)
        for g, r in (
            ("kubevision.dev", "views"),
            ("kubevision.dev", "modelversions"),
            ("batch", "jobs"),
            ("", "pods"),
        )
        for v in ("list", "watch")
    ),
    ("", "events", "create"),
    ("apiextensions.k8s.io", "customresourcedefinitions", "list"),
    ("apiextensions.k8s.io", "customresourcedefinitions", "watch"),
}
#: With watchNamespaces, kopf lists and watches namespaces to learn which of them exist.
KOPF_NAMESPACED: set[Grant] = {("", "namespaces", "list"), ("", "namespaces", "watch")}


def kube_calls() -> set[str]:
    """Names of the client methods kube.py uses (``self.core.x``, ``kube.batch.x``: called, or
    handed to ``Kube._call``)."""
    tree = ast.parse(KUBE_PY.read_text())
    calls = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            owner = node.value
            if isinstance(owner, ast.Attribute) and owner.attr in (
                "core",
                "batch",
                "custom",
                "authn",
                "apiext",
            ):
                calls.add(node.attr)
    return calls


def grants(rules: list[Obj]) -> set[Grant]:
    return {
        (group, resource, verb)
        for rule in rules
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def needed() -> set[Grant]:
    return set().union(*(CLIENT_CALLS[c] for c in kube_calls())) | KOPF


def test_every_call_of_kube_py_is_known() -> None:
    calls = kube_calls()
    assert calls, "no client call found in kube.py: the parser is broken"
    assert calls <= set(CLIENT_CALLS), (
        f"new API calls in kube.py; review RBAC: {calls - set(CLIENT_CALLS)}"
    )


def test_cluster_wide_rbac_is_exactly_what_is_needed(helm: Helm, tmp_path: Path) -> None:
    docs = helm.template(None, tmp_path=tmp_path, namespace="kubevision")
    (cluster,) = by_kind(docs, "ClusterRole")
    (secret_role,) = by_kind(docs, "Role")
    assert secret_role["metadata"]["namespace"] == "kubevision"
    granted = grants(cluster["rules"]) | grants(secret_role["rules"])
    assert granted == needed()
    # No wildcard, no escalation paths.
    for rule in cluster["rules"] + secret_role["rules"]:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"], rule
    assert not {r for _, r, _ in granted} & {"pods/exec", "roles", "clusterroles", "rolebindings"}
    # Secrets: the CA Secret alone can be read; create cannot be narrowed by name.
    secret_rules = [r for r in secret_role["rules"] if "secrets" in r["resources"]]
    get = [r for r in secret_rules if "get" in r["verbs"]]
    assert [r.get("resourceNames") for r in get] == [["kv-kubevision-status-ca"]]
    assert not any("secrets" in r["resources"] for r in cluster["rules"])


@pytest.mark.parametrize("watched", [["vision"], ["team-a", "team-b"]])
def test_namespaced_rbac(helm: Helm, tmp_path: Path, watched: list[str]) -> None:
    docs = helm.template({"watchNamespaces": watched}, tmp_path=tmp_path, namespace="kubevision")
    (cluster,) = by_kind(docs, "ClusterRole")
    roles = {
        r["metadata"]["namespace"] + "/" + r["metadata"]["name"]: r for r in by_kind(docs, "Role")
    }
    bindings = by_kind(docs, "RoleBinding")
    assert sorted(roles) == sorted(
        [f"{ns}/kv-kubevision" for ns in watched] + ["kubevision/kv-kubevision-ca-secret"]
    )
    assert len(bindings) == len(roles)
    for binding in bindings:
        (subject,) = binding["subjects"]
        assert subject == {
            "kind": "ServiceAccount",
            "name": "kv-kubevision",
            "namespace": "kubevision",
        }
    cluster_grants = grants(cluster["rules"])
    # Cluster-wide: nothing that touches Jobs, Pods or ConfigMaps, nor reads a ModelVersion.
    assert cluster_grants == {
        ("authentication.k8s.io", "tokenreviews", "create"),
        ("apiextensions.k8s.io", "customresourcedefinitions", "get"),
        ("apiextensions.k8s.io", "customresourcedefinitions", "list"),
        ("apiextensions.k8s.io", "customresourcedefinitions", "watch"),
        *KOPF_NAMESPACED,
    }
    per_namespace = grants(roles[f"{watched[0]}/kv-kubevision"]["rules"])
    secrets = grants(roles["kubevision/kv-kubevision-ca-secret"]["rules"])
    assert per_namespace | cluster_grants | secrets == needed() | KOPF_NAMESPACED
