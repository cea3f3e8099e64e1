"""The chart, with Helm 3.17 and Helm 4.1: `helm lint` is clean, `helm template` renders
with the defaults and with a matrix of values, and what it renders is what the operator
needs: its command, every KUBEVISION_* variable OperatorSettings reads (and nothing it does
not), probes on /healthz, a locked-down security context, and the CRDs' copy."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubevision_api import crdgen
from kubevision_operator.settings import OperatorSettings
from tests.helm import helm_tool
from tests.helm.helm_tool import CHART, Helm, Obj, by_kind, env_of, one

#: OperatorSettings fields the chart leaves at their default, and why.
NOT_EXPOSED = {
    "status_bind_host": "every interface, as a Pod should listen",
    "operator_namespace": "set from the Pod's namespace (fieldRef), not from a value",
    "trainer_command_override": "a test hook (the scale test's stub trainer)",
}
CLUSTER_SCOPED = {"ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"}

#: Values that set every value the chart maps to a KUBEVISION_* variable.
FULL: Obj = {
    "watchNamespaces": ["team-a", "team-b"],
    "operator": {
        "concurrencyLimit": 5,
        "statusPort": 9443,
        "healthPort": 9080,
        "watch": {"serverTimeoutSeconds": 60, "clientTimeoutSeconds": 90},
        "api": {"connectTimeoutSeconds": 2, "readTimeoutSeconds": 12.5, "attempts": 4},
        "reconcileStallSeconds": 75,
        "shutdownTimeoutSeconds": 15,
        "crdMismatch": "Condition",
        "extraEnv": {"KUBEVISION_STATUS_BIND_HOST": "0.0.0.0"},
        "image": {"repository": "registry.example/kv/operator", "tag": "1.2.3"},
    },
    "trainer": {
        "image": {
            "repository": "registry.example/kv/trainer",
            "digest": "sha256:" + "a" * 64,
            "pullPolicy": "Always",
        },
        "gpuResourceName": "amd.com/gpu",
        "metricsPort": 9100,
        "runAsUser": 2000,
        "terminationGracePeriodSeconds": 300,
        "ttlSecondsAfterFinished": 86400,
        "shmSizeLimit": "8Gi",
        "cacheSizeLimit": "50Gi",
        "podLabels": {"team": "vision"},
        "podAnnotations": {"linkerd.io/inject": None},
        "sidecarGraceSeconds": 10,
    },
    "storage": {"baseURI": "s3://models/kubevision", "credentialsSecret": "kv-s3"},
    "metrics": {
        "pushgatewayURL": "http://pushgateway.monitoring.svc:9091",
        "pushgatewayRetentionSeconds": 3600,
        "pushgatewaySweepSeconds": 30,
        "serviceMonitor": {"enabled": True, "labels": {"release": "prom"}},
        "podMonitor": {"enabled": True},
    },
}

#: name -> (values, what must hold of the rendered documents)
MATRIX: dict[str, Obj] = {
    "defaults": {},
    "full": FULL,
    "namespaced": {"watchNamespaces": ["vision"]},
    "monitors": {"metrics": {"serviceMonitor": {"enabled": True}, "podMonitor": {"enabled": True}}},
    "alerts": {
        "metrics": {
            "pushgatewayURL": "http://pushgateway.monitoring.svc:9091",
            "serviceMonitor": {"enabled": True},
            "prometheusRule": {"enabled": True, "namespace": "monitoring", "labels": {"r": "p"}},
        }
    },
    "scaled-to-zero": {"operator": {"replicas": 0}},
    "no-rbac-existing-sa": {
        "rbac": {"create": False},
        "serviceAccount": {"create": False, "name": "ops"},
    },
    "no-dashboards": {"dashboards": {"enabled": False}},
    "dashboards-elsewhere": {"dashboards": {"namespace": "monitoring", "folder": ""}},
    "no-pdb": {"operator": {"podDisruptionBudget": {"enabled": False}}},
    "status-url": {"operator": {"statusURL": "https://kv.example.org:8443"}},
    "fullname": {"fullnameOverride": "vision"},
    "no-trainer-metrics": {"trainer": {"metricsPort": 0}},
}


def render(helm: Helm, values: Obj | None, tmp_path: Path, **kw: Any) -> list[Obj]:
    return helm.template(values, tmp_path=tmp_path, **kw)


def settings_from(
    deployment: Obj, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> OperatorSettings:
    """OperatorSettings as the operator builds it from the rendered env."""
    for name in list(os.environ):
        if name.startswith("KUBEVISION_"):
            monkeypatch.delenv(name)
    for name, value in env_of(deployment).items():
        if isinstance(value, dict):
            assert value == {"fieldRef": {"fieldPath": "metadata.namespace"}}, name
        monkeypatch.setenv(name, namespace if isinstance(value, dict) else value)
    return OperatorSettings()


# ---- lint -----------------------------------------------------------------------------------


def test_lint_is_clean(helm: Helm) -> None:
    result = helm.run("lint", "--strict", str(CHART), check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[WARNING]" not in result.stdout and "[ERROR]" not in result.stdout, result.stdout
    assert "1 chart(s) linted, 0 chart(s) failed" in result.stdout


def test_lint_with_every_matrix_entry(helm: Helm, tmp_path: Path) -> None:
    for name, values in MATRIX.items():
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(values))
        result = helm.run("lint", "--strict", str(CHART), "--values", str(path), check=False)
        assert result.returncode == 0, f"{name}: {result.stdout}{result.stderr}"


def test_binaries_are_the_pinned_versions(helm: Helm) -> None:
    assert helm.version.startswith(helm_tool.VERSIONS[helm.major])


# ---- template: the matrix -------------------------------------------------------------------


@pytest.mark.parametrize("case", sorted(MATRIX))
def test_template_renders_valid_objects(
    helm: Helm, tmp_path: Path, case: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    docs = render(helm, MATRIX[case], tmp_path, namespace="kubevision")
    assert docs, "nothing rendered"
    names: set[tuple[str, str | None, str]] = set()
    for doc in docs:
        assert set(doc) >= {"apiVersion", "kind", "metadata"}, doc
        meta = doc["metadata"]
        key = (doc["kind"], meta.get("namespace"), meta["name"])
        assert key not in names, f"rendered twice: {key}"
        names.add(key)
        assert len(meta["name"]) <= 63, meta["name"]
        if doc["kind"] in CLUSTER_SCOPED:
            assert "namespace" not in meta, key
        else:
            assert meta.get("namespace"), f"{key} has no namespace"
        labels = meta.get("labels", {})
        assert labels.get("app.kubernetes.io/part-of") == "kubevision", key
        # The operator watches objects with managed-by=kubevision; the chart's are Helm's.
        assert labels.get("app.kubernetes.io/managed-by") == "Helm", key
    (deployment,) = by_kind(docs, "Deployment")
    settings = settings_from(deployment, "kubevision", monkeypatch)
    assert settings.operator_namespace == "kubevision"


def test_defaults_render_the_expected_objects(helm: Helm, tmp_path: Path) -> None:
    docs = render(helm, None, tmp_path)
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == sorted(
        [
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "Role",
            "RoleBinding",
            "Service",
            "Deployment",
            "PodDisruptionBudget",
            "ConfigMap",
            "ConfigMap",
        ]
    )
    assert not by_kind(docs, "ServiceMonitor") and not by_kind(docs, "PodMonitor")


def test_operator_deployment(helm: Helm, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    docs = render(helm, None, tmp_path, namespace="ml-platform")
    deployment = one(docs, "Deployment")
    spec = deployment["spec"]
    assert spec["replicas"] == 1 and spec["strategy"] == {"type": "Recreate"}
    pod = spec["template"]["spec"]
    assert spec["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items()
    assert pod["serviceAccountName"] == one(docs, "ServiceAccount")["metadata"]["name"]
    assert pod["automountServiceAccountToken"] is True
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod["containers"]
    assert container["command"] == ["kubevision", "operator"]
    # A refusal to start (crdcheck) is the log's last words: the termination message.
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert container["image"] == "ghcr.io/kubevision/operator:0.1.0"
    security = container["securityContext"]
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security["capabilities"] == {"drop": ["ALL"]}
    # A read-only root needs a writable /tmp: the serving certificate is written there.
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"status": 8443, "metrics": 8080}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    for probe in ("startupProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/readyz", "port": "metrics"}, probe
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]

    settings = settings_from(deployment, "ml-platform", monkeypatch)
    service = one(docs, "Service")
    assert settings.status_url == f"https://{service['metadata']['name']}.ml-platform.svc:8443"
    assert settings.operator_namespace == "ml-platform"
    assert settings.ca_secret_name == "kv-kubevision-status-ca"
    assert settings.namespaces == []
    assert settings.trainer_image == "ghcr.io/kubevision/trainer:0.1.0"
    assert settings.crd_mismatch == "Refuse"
    for field in ("gpu_resource_name", "output_base_uri", "concurrency_limit", "health_port"):
        assert getattr(settings, field) == OperatorSettings.model_fields[field].default, field
    assert {p["name"]: (p["port"], p["targetPort"]) for p in service["spec"]["ports"]} == {
        "status": (8443, "status"),
        "metrics": (8080, "metrics"),
    }
    assert service["spec"]["selector"] == spec["selector"]["matchLabels"]
    pdb = one(docs, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"] == spec["selector"]["matchLabels"]
    assert pdb["spec"]["maxUnavailable"] == 1


def test_every_setting_is_mapped(
    helm: Helm, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each OperatorSettings field is set by some value (or listed in NOT_EXPOSED), and each
    variable the chart sets is a field: a new setting fails here until the chart maps it."""
    deployment = one(render(helm, FULL, tmp_path), "Deployment")
    env = env_of(deployment)
    fields = {f"KUBEVISION_{name.upper()}": name for name in OperatorSettings.model_fields}
    assert set(env) <= set(fields), set(env) - set(fields)
    unmapped = {fields[n] for n in set(fields) - set(env)}
    # FULL sets status_bind_host through extraEnv; operator_namespace comes from a fieldRef.
    assert unmapped == set(NOT_EXPOSED) - {"status_bind_host", "operator_namespace"}, unmapped
    settings = settings_from(deployment, "kubevision", monkeypatch)
    assert settings.namespaces == ["team-a", "team-b"]
    assert settings.concurrency_limit == 5
    assert (settings.status_port, settings.health_port) == (9443, 9080)
    assert settings.status_url == "https://kv-kubevision.kubevision.svc:9443"
    assert (settings.watch_server_timeout_seconds, settings.watch_client_timeout_seconds) == (
        60,
        90,
    )
    assert settings.trainer_image == "registry.example/kv/trainer@sha256:" + "a" * 64
    assert settings.image_pull_policy == "Always"
    assert settings.gpu_resource_name == "amd.com/gpu"
    assert settings.trainer_metrics_port == 9100
    assert settings.trainer_run_as_user == 2000
    assert settings.termination_grace_period_seconds == 300
    assert settings.default_ttl_seconds_after_finished == 86400
    assert (settings.shm_size_limit, settings.cache_size_limit) == ("8Gi", "50Gi")
    assert settings.output_base_uri == "s3://models/kubevision"
    assert settings.output_credentials_secret == "kv-s3"
    assert settings.pushgateway_url == "http://pushgateway.monitoring.svc:9091"
    assert (settings.pushgateway_retention_seconds, settings.pushgateway_sweep_seconds) == (
        3600,
        30,
    )
    assert (
        settings.api_connect_timeout_seconds,
        settings.api_read_timeout_seconds,
        settings.api_attempts,
    ) == (2, 12.5, 4)
    assert (settings.reconcile_stall_seconds, settings.shutdown_timeout_seconds) == (75, 15)
    assert settings.crd_mismatch == "Condition"
    # Helm merges a user's map into the default; null removes a default key.
    assert settings.trainer_pod_labels == {"sidecar.istio.io/inject": "false", "team": "vision"}
    assert settings.trainer_pod_annotations == {}
    assert settings.sidecar_grace_seconds == 10
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "registry.example/kv/operator:1.2.3"
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {
        "status": 9443,
        "metrics": 9080,
    }


def test_extra_env_never_overrides_the_chart(helm: Helm, tmp_path: Path) -> None:
    values = {"operator": {"extraEnv": {"KUBEVISION_HEALTH_PORT": "1", "KUBEVISION_X": "x1"}}}
    env = env_of(one(render(helm, values, tmp_path), "Deployment"))
    assert env["KUBEVISION_HEALTH_PORT"] == "8080" and env["KUBEVISION_X"] == "x1"


def test_monitors(helm: Helm, tmp_path: Path) -> None:
    docs = render(helm, MATRIX["monitors"], tmp_path)
    service = one(docs, "Service")
    monitor = one(docs, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    (endpoint,) = monitor["spec"]["endpoints"]
    # honorLabels: the phase gauge's own `namespace` label must not become exported_namespace.
    assert endpoint["port"] == "metrics" and endpoint["honorLabels"] is True
    pods = one(docs, "PodMonitor")
    assert pods["spec"]["selector"]["matchLabels"] == {
        "app.kubernetes.io/managed-by": "kubevision",
        "app.kubernetes.io/component": "trainer",
    }
    assert pods["spec"]["namespaceSelector"] == {"any": True}
    (endpoint,) = pods["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] == "metrics" and endpoint["honorLabels"] is True
    # Only a multi-Pod training's index 0 (global rank 0) serves metrics: Prometheus keeps the
    # Pods of index 0 and those without the label (single-Pod Jobs), as its relabel rule
    # matches (a fully anchored regex on the sanitised label name).
    from kubevision_operator import naming

    (keep,) = endpoint["relabelings"]
    label = re.sub(r"[^a-zA-Z0-9_]", "_", naming.COMPLETION_INDEX_ANNOTATION)
    assert keep["sourceLabels"] == [f"__meta_kubernetes_pod_label_{label}"]
    assert keep["action"] == "keep"
    assert [v for v in ("", "0", "1", "10") if re.fullmatch(keep["regex"], v)] == ["", "0"]
    scoped = one(render(helm, FULL, tmp_path), "PodMonitor")
    assert scoped["spec"]["namespaceSelector"] == {"matchNames": ["team-a", "team-b"]}


def test_pod_monitor_selects_the_rendered_trainer_pods(helm: Helm, tmp_path: Path) -> None:
    """The PodMonitor's selector and port name match what render_job gives trainer Pods."""
    from kubevision_operator import naming

    pods = one(render(helm, MATRIX["monitors"], tmp_path), "PodMonitor")
    assert pods["spec"]["selector"]["matchLabels"] == {
        naming.MANAGED_BY: naming.MANAGED_BY_VALUE,
        naming.COMPONENT: "trainer",
    }
    golden = Path(__file__).resolve().parents[1] / "operator" / "golden"
    jobs = [
        doc
        for path in sorted(golden.glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        if isinstance(doc, dict) and doc.get("kind") == "Job"
    ]
    assert jobs, f"no Job in {golden}"
    for job in jobs:
        template = job["spec"]["template"]
        assert (
            pods["spec"]["selector"]["matchLabels"].items()
            <= template["metadata"]["labels"].items()
        )
        (container,) = template["spec"]["containers"]
        # A plan without a metrics port (metricsPort 0) has no metrics port; a multi-Pod
        # training's Pods also have torchrun's rendezvous port.
        names = [p["name"] for p in container.get("ports", []) if p["name"] != "rendezvous"]
        assert names in (["metrics"], [])
    assert any(job["spec"]["template"]["spec"]["containers"][0].get("ports") for job in jobs)


def test_replicas_zero_has_no_pdb(helm: Helm, tmp_path: Path) -> None:
    docs = render(helm, MATRIX["scaled-to-zero"], tmp_path)
    assert one(docs, "Deployment")["spec"]["replicas"] == 0
    assert not by_kind(docs, "PodDisruptionBudget")
    assert not by_kind(render(helm, MATRIX["no-pdb"], tmp_path), "PodDisruptionBudget")


def test_existing_service_account_without_rbac(helm: Helm, tmp_path: Path) -> None:
    docs = render(helm, MATRIX["no-rbac-existing-sa"], tmp_path)
    kinds = {d["kind"] for d in docs}
    assert not kinds & {
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
    }
    assert one(docs, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == "ops"


def test_dashboards_configmaps(helm: Helm, tmp_path: Path) -> None:
    maps = by_kind(render(helm, None, tmp_path), "ConfigMap")
    assert len(maps) == 2
    for cm in maps:
        assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert cm["metadata"]["annotations"] == {"grafana_folder": "kubevision"}
        ((key, text),) = cm["data"].items()
        assert key.endswith(".json")
        assert (CHART / "dashboards" / key.removeprefix("kubevision-")).read_text().strip() == text
    assert not by_kind(render(helm, MATRIX["no-dashboards"], tmp_path), "ConfigMap")
    elsewhere = by_kind(render(helm, MATRIX["dashboards-elsewhere"], tmp_path), "ConfigMap")
    assert {cm["metadata"]["namespace"] for cm in elsewhere} == {"monitoring"}
    assert all("annotations" not in cm["metadata"] for cm in elsewhere)


def test_status_url_override(helm: Helm, tmp_path: Path) -> None:
    env = env_of(one(render(helm, MATRIX["status-url"], tmp_path), "Deployment"))
    assert env["KUBEVISION_STATUS_URL"] == "https://kv.example.org:8443"


# ---- CRDs -----------------------------------------------------------------------------------


def test_chart_ships_the_generated_crds(helm: Helm, tmp_path: Path) -> None:
    """`helm template --include-crds` gives exactly the generated CRDs (the drift test of
    tests/api/test_crdgen.py keeps the files themselves in step)."""
    docs = render(helm, None, tmp_path, extra=("--include-crds",))
    crds = {d["metadata"]["name"]: d for d in by_kind(docs, "CustomResourceDefinition")}
    expected = {
        yaml.safe_load(text)["metadata"]["name"]: yaml.safe_load(text)
        for text in crdgen.generate().values()
    }
    assert crds == expected
    assert not by_kind(render(helm, None, tmp_path), "CustomResourceDefinition")


def test_chart_crds_folder_is_byte_identical_to_crds() -> None:
    root = CHART.parents[1]
    chart = {p.name: p.read_bytes() for p in (CHART / "crds").iterdir()}
    top = {p.name: p.read_bytes() for p in (root / "crds").iterdir()}
    assert chart == top
