"""The chart installed with ``helm install`` (no ``--wait``) into the real control plane.

- Every object is created (each kind and name, Helm 3 and Helm 4); ``helm uninstall`` and
  deleting the namespaces leave nothing in Terminating, with ModelVersions still there.
- The ServiceAccount's ``kubectl auth can-i --list`` equals the committed lists
  (``tests/helm/rbac-can-i-*.txt``); near misses are refused.
- ServiceMonitor and PodMonitor, against minimal stand-in CRDs written here, select the
  Service, the operator Pod and the trainer Pods by their labels and ports by name.
- Slow: the node agent runs the rendered operator Deployment itself (its command, its env,
  the chart's ServiceAccount token); a tagging ModelVersion trains through it end to end; every
  panel query of both dashboards (from the installed ConfigMaps, variables filled from the
  dashboards' own variable queries) returns series carrying the ModelVersion's labels in a
  real Prometheus scraping the Pushgateway and the operator's /metrics; then uninstall.

Helm versions: rendering is the same with both (``tests/helm/`` checks that); what differs is
the client that creates the objects (Helm 4 applies server-side), so the object and
uninstall test runs with both, the RBAC and monitor tests with one each (the API server
answers them, whatever client created the objects), and the training with Helm 3 alone
(one training is what a 2-core machine affords).

The status endpoint: trainers reach the operator through the Service's DNS name on a real
cluster; here nothing resolves ``<svc>.<ns>.svc`` and the operator is a local process, so the
test sets ``operator.statusURL`` to ``https://127.0.0.1:<statusPort>`` and binds the endpoint
on loopback (``KUBEVISION_STATUS_BIND_HOST`` through ``operator.extraEnv``).

``KUBEVISION_REGENERATE_CAN_I=1`` rewrites the committed can-i lists from the cluster's
answers (review the diff: each line is a permission of the operator).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubevision_operator.kube import SERVICEACCOUNT_DIR, SERVICEACCOUNT_DIR_ENV
from testenv.controlplane import ControlPlane
from testenv.operator_helpers import ROOT, get, wait_for
from tests.helm import dashboards, helm_tool
from tests.helm.helm_tool import CHART, Helm
from tests.integration import e2e_helpers as h
from tests.integration import services

pytestmark = pytest.mark.integration

Obj = dict[str, Any]

CAN_I_DIR = ROOT / "tests" / "helm"
REGENERATE = os.environ.get("KUBEVISION_REGENERATE_CAN_I", "") not in ("", "0")
#: The committed golden of the operator's trainer Job (labels and ports of trainer Pods).
TRAINER_JOB_GOLDEN = ROOT / "tests" / "operator" / "golden" / "classification-defaults.yaml"
#: Bound on namespace deletion after uninstall (nothing may hang in Terminating).
TERMINATING_BOUND_S = 90.0

MONITOR_CRDS = {"ServiceMonitor": "servicemonitors", "PodMonitor": "podmonitors"}


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


# --- a release -------------------------------------------------------------------------------


@dataclass
class Release:
    """One ``helm install`` of the chart: the operator in ``namespace``, watching ``watched``
    (empty: the whole cluster)."""

    cp: ControlPlane
    helm: Helm
    tmp_path: Path
    namespace: str = field(default_factory=lambda: _unique("kv-op"))
    watched: list[str] = field(default_factory=list)
    name: str = field(default_factory=lambda: _unique("kv"))
    installed: bool = False
    manifest: list[Obj] = field(default_factory=list)

    @property
    def fullname(self) -> str:
        return f"{self.name}-kubevision"

    @property
    def service_account(self) -> str:
        return self.fullname

    @property
    def user(self) -> str:
        return f"system:serviceaccount:{self.namespace}:{self.service_account}"

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.helm.run(
            *args,
            "--namespace",
            self.namespace,
            "--kubeconfig",
            str(self.cp.kubeconfig),
            check=check,
        )

    def values(self, extra: Obj | None = None) -> Obj:
        values: Obj = {"watchNamespaces": self.watched}
        for key, value in (extra or {}).items():
            values[key] = value
        return values

    def install(self, extra: Obj | None = None) -> list[Obj]:
        """Create the namespaces, ``helm install`` (no ``--wait``); returns the manifest."""
        for ns in (self.namespace, *self.watched):
            self.cp.kubectl("create", "namespace", ns)
        path = self.tmp_path / f"values-{self.name}.yaml"
        path.write_text(yaml.safe_dump(self.values(extra)), encoding="utf-8")
        self.run("install", self.name, str(CHART), "--values", str(path))
        self.installed = True
        out = self.run("get", "manifest", self.name).stdout
        self.manifest = [doc for doc in yaml.safe_load_all(out) if doc]
        return self.manifest

    def template(self, extra: Obj | None = None) -> list[Obj]:
        """What ``helm template`` renders for the same values."""
        return self.helm.template(
            self.values(extra), tmp_path=self.tmp_path, release=self.name, namespace=self.namespace
        )

    def uninstall(self) -> None:
        self.run("uninstall", self.name)
        self.installed = False

    def cleanup(self) -> None:
        if self.installed:
            self.run("uninstall", self.name, check=False)
        for ns in (self.namespace, *self.watched):
            self.cp.kubectl("delete", "namespace", ns, "--wait=false", "--ignore-not-found")


@pytest.fixture
def releases(crds: ControlPlane, tmp_path: Path) -> Iterator[Callable[..., Release]]:
    """Factory of :class:`Release` objects, uninstalled and their namespaces deleted at the
    end (the CRDs come from the ``crds`` fixture, as Helm finds them on a reinstall)."""
    made: list[Release] = []

    def make(major: str, *, watched: int = 1) -> Release:
        release = Release(
            crds, helm_tool.get(major), tmp_path, watched=[_unique("kv-w") for _ in range(watched)]
        )
        made.append(release)
        return release

    yield make
    for release in made:
        release.cleanup()


def kind_key(doc: Obj) -> tuple[str, str, str]:
    meta = doc["metadata"]
    return (doc["kind"], meta.get("namespace", ""), meta["name"])


def expected_objects(release: Release, *, monitors: bool = False) -> set[tuple[str, str, str]]:
    """Every object the chart creates for ``release`` (kind, namespace, name)."""
    ns, full = release.namespace, release.fullname
    objects = {
        ("ServiceAccount", ns, full),
        ("ClusterRole", "", full),
        ("ClusterRoleBinding", "", full),
        ("Role", ns, f"{full}-ca-secret"),
        ("RoleBinding", ns, f"{full}-ca-secret"),
        ("Service", ns, full),
        ("Deployment", ns, full),
        ("PodDisruptionBudget", ns, full),
        ("ConfigMap", ns, f"{full}-dashboard-training"),
        ("ConfigMap", ns, f"{full}-dashboard-operator"),
    }
    for watched in release.watched:
        objects |= {("Role", watched, full), ("RoleBinding", watched, full)}
    if monitors:
        objects |= {("ServiceMonitor", ns, full), ("PodMonitor", ns, f"{full}-trainers")}
    return objects


def server_object(cp: ControlPlane, kind: str, namespace: str, name: str) -> Obj | None:
    """The object as the API server holds it (kubectl resolves the kind), or None."""
    args = ["get", kind, name, "-o", "json", "--ignore-not-found"]
    if namespace:
        args += ["-n", namespace]
    out = cp.kubectl(*args).stdout
    return json.loads(out) if out.strip() else None


def namespaces_gone(cp: ControlPlane, names: list[str]) -> bool:
    return all(get(cp, f"/api/v1/namespaces/{ns}") is None for ns in names)


def uninstall_and_delete_namespaces(release: Release) -> None:
    """``helm uninstall``, then delete the namespaces: each must be gone within the bound,
    no object of the release left behind."""
    cp = release.cp
    release.uninstall()
    names = [release.namespace, *release.watched]
    for ns in names:
        cp.kubectl("delete", "namespace", ns, "--wait=false")
    started = time.monotonic()

    def gone() -> bool:
        return namespaces_gone(cp, names)

    try:
        wait_for("the namespaces to be deleted", gone, timeout=TERMINATING_BOUND_S, every=0.5)
    except AssertionError:
        stuck = [get(cp, f"/api/v1/namespaces/{ns}") for ns in names]
        raise AssertionError(json.dumps([s["status"] for s in stuck if s], indent=1)) from None
    print(f"namespaces deleted in {time.monotonic() - started:.1f} s")
    for kind in ("ClusterRole", "ClusterRoleBinding"):
        assert server_object(cp, kind, "", release.fullname) is None, kind


def modelversion(name: str) -> Obj:
    """A ModelVersion the API server accepts (no operator needs to act on it)."""
    return {
        "apiVersion": "kubevision.dev/v1alpha1",
        "kind": "ModelVersion",
        "metadata": {"name": name},
        "spec": {"viewRef": {"name": "digits"}, "architecture": "resnet18"},
    }


# --- every object; uninstall ------------------------------------------------------------------


@pytest.mark.parametrize("major", sorted(helm_tool.VERSIONS), ids=lambda m: f"helm{m}")
def test_install_creates_every_object_and_uninstall_leaves_nothing(
    releases: Callable[..., Release], major: str
) -> None:
    release = releases(major)
    cp = release.cp
    manifest = release.install()
    expected = expected_objects(release)
    assert {kind_key(doc) for doc in manifest} == expected
    assert {kind_key(doc) for doc in release.template()} == expected
    for kind, ns, name in sorted(expected):
        obj = server_object(cp, kind, ns, name)
        assert obj is not None, f"{kind} {ns}/{name} was not created"
        assert obj["metadata"]["labels"]["app.kubernetes.io/instance"] == release.name
    # The CRDs (Helm skips crds/ that exist; the session's fixture applied the same files).
    for crd in (CHART / "crds").glob("*.yaml"):
        name = yaml.safe_load(crd.read_text())["metadata"]["name"]
        assert server_object(cp, "customresourcedefinition", "", name) is not None, name
    # The Deployment is valid: its controller made the Pod (Pending: no Node in this test).
    selector = ",".join(
        f"{k}={v}"
        for k, v in sorted(_deployment(manifest)["spec"]["selector"]["matchLabels"].items())
    )

    def pod_made() -> bool:
        out = cp.kubectl("-n", release.namespace, "get", "pods", "-l", selector, "-o", "name")
        return bool(out.stdout.strip())

    wait_for("the operator Deployment's Pod", pod_made, timeout=30)

    # ModelVersions stay in the watched namespace through the uninstall.
    for name in ("first", "second"):
        h_apply(cp, release.watched[0], modelversion(name))
    mvs = cp.kubectl("-n", release.watched[0], "get", "modelversions", "-o", "json").stdout
    items = json.loads(mvs)["items"]
    assert len(items) == 2
    assert all(not item["metadata"].get("finalizers") for item in items)
    uninstall_and_delete_namespaces(release)


def _deployment(docs: list[Obj]) -> Obj:
    return helm_tool.one(docs, "Deployment")


def h_apply(cp: ControlPlane, namespace: str, *manifests: Obj) -> None:
    for manifest in manifests:
        cp.kubectl("-n", namespace, "apply", "--server-side", "-f", "-", input=json.dumps(manifest))


# --- RBAC: kubectl auth can-i ----------------------------------------------------------------


def can_i_list(release: Release, namespace: str) -> list[str]:
    """``kubectl auth can-i --list`` as the ServiceAccount in ``namespace``: one line per
    rule (sorted), columns joined by `` | ``, the release's full name written ``<fullname>``."""
    out = release.cp.kubectl(
        "auth", "can-i", "--list", "-n", namespace, f"--as={release.user}"
    ).stdout
    lines = out.splitlines()
    header = lines[0]
    titles = ("Resources", "Non-Resource URLs", "Resource Names", "Verbs")
    starts = [header.index(t) for t in titles]
    assert starts == sorted(starts), header
    rows = []
    for line in lines[1:]:
        cells = [
            line[start:end].strip()
            for start, end in zip(starts, [*starts[1:], len(line) + 1], strict=True)
        ]
        rows.append(" | ".join(cells).replace(release.fullname, "<fullname>"))
    # The order of the rules is the authorizer's, not a contract: compare them sorted.
    return sorted(rows)


def check_list(name: str, found: list[str]) -> None:
    path = CAN_I_DIR / f"rbac-can-i-{name}.txt"
    if REGENERATE:
        path.write_text(
            f"# kubectl auth can-i --list of the operator's ServiceAccount: {name}.\n"
            "# Written by tests/integration/test_helm_install.py (KUBEVISION_REGENERATE_CAN_I=1);\n"
            "# columns: resources | non-resource URLs | resource names | verbs.\n"
            + "\n".join(found)
            + "\n",
            encoding="utf-8",
        )
    expected = [
        line for line in path.read_text(encoding="utf-8").splitlines() if not line.startswith("#")
    ]
    assert found == expected, "\n".join(found)


def can_i(release: Release, verb: str, resource: str, namespace: str) -> bool:
    """``kubectl auth can-i``; ``resource`` is ``type[/name][#subresource]``."""
    resource, _, subresource = resource.partition("#")
    extra = [f"--subresource={subresource}"] if subresource else []
    result = release.cp.kubectl(
        "auth",
        "can-i",
        verb,
        resource,
        *extra,
        "-n",
        namespace,
        f"--as={release.user}",
        check=False,
    )
    assert result.stdout.strip() in ("yes", "no"), result.stdout + result.stderr
    return result.stdout.strip() == "yes"


def test_service_account_can_i_watched_namespaces(releases: Callable[..., Release]) -> None:
    release = releases("3")
    release.install()
    unwatched = _unique("kv-u")
    release.cp.kubectl("create", "namespace", unwatched)
    try:
        check_list("operator-namespace", can_i_list(release, release.namespace))
        check_list("watched-namespace", can_i_list(release, release.watched[0]))
        check_list("unwatched-namespace", can_i_list(release, unwatched))
        watched = release.watched[0]
        ca = f"secrets/{release.fullname}-status-ca"
        # What the operator needs.
        for verb, resource, ns in (
            ("create", "jobs.batch", watched),
            ("create", "services", watched),
            ("delete", "services", watched),
            ("patch", "modelversions.kubevision.dev#status", watched),
            # The completion annotation.
            ("patch", "modelversions.kubevision.dev", watched),
            ("get", ca, release.namespace),
            ("create", "secrets", release.namespace),
            ("create", "tokenreviews.authentication.k8s.io", unwatched),
        ):
            assert can_i(release, verb, resource, ns), (verb, resource, ns)
        # Near misses.
        for verb, resource, ns in (
            ("create", "jobs.batch", unwatched),
            ("list", "jobs.batch", unwatched),
            ("get", "pods", unwatched),
            ("get", "secrets/storage", watched),
            ("list", "secrets", watched),
            ("get", "secrets/other", release.namespace),
            ("list", "secrets", release.namespace),
            ("update", ca, release.namespace),
            ("get", ca, watched),
            ("create", "pods#exec", watched),
            ("get", "pods#exec", watched),
            ("get", "configmaps", watched),
            ("create", "pods", watched),
            # A multi-Pod training's Service: made, read and deleted, never listed or changed.
            ("list", "services", watched),
            ("update", "services", watched),
            ("create", "services", unwatched),
            ("delete", "jobs.batch", unwatched),
            ("delete", "pods", unwatched),
            ("deletecollection", "jobs.batch", watched),
            ("patch", "views.kubevision.dev", watched),
            ("update", "modelversions.kubevision.dev", watched),
            ("update", "modelversions.kubevision.dev#status", watched),
        ):
            assert not can_i(release, verb, resource, ns), (verb, resource, ns)
    finally:
        release.cp.kubectl("delete", "namespace", unwatched, "--wait=false")


def test_service_account_can_i_cluster_wide(releases: Callable[..., Release]) -> None:
    release = releases("3", watched=0)
    release.install()
    other = _unique("kv-any")
    release.cp.kubectl("create", "namespace", other)
    try:
        check_list("cluster-wide-operator-namespace", can_i_list(release, release.namespace))
        check_list("cluster-wide-any-namespace", can_i_list(release, other))
        assert can_i(release, "create", "jobs.batch", other)
        for verb, resource, ns in (
            ("get", "secrets/storage", other),
            ("list", "secrets", other),
            ("get", "secrets/other", release.namespace),
            ("create", "secrets", other),
            ("create", "pods#exec", other),
            ("deletecollection", "jobs.batch", other),
            ("update", "jobs.batch", other),
        ):
            assert not can_i(release, verb, resource, ns), (verb, resource, ns)
    finally:
        release.cp.kubectl("delete", "namespace", other, "--wait=false")


# --- ServiceMonitor / PodMonitor --------------------------------------------------------------


def monitor_crd(kind: str, plural: str) -> Obj:
    """A minimal stand-in for the Prometheus Operator's CRD: the group, version and names,
    any spec (x-kubernetes-preserve-unknown-fields)."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.monitoring.coreos.com"},
        "spec": {
            "group": "monitoring.coreos.com",
            "scope": "Namespaced",
            "names": {
                "kind": kind,
                "plural": plural,
                "singular": kind.lower(),
                "listKind": f"{kind}List",
            },
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "x-kubernetes-preserve-unknown-fields": True,
                        }
                    },
                }
            ],
        },
    }


@pytest.fixture(scope="module")
def monitor_crds(crds: ControlPlane) -> Iterator[ControlPlane]:
    """The stand-in ServiceMonitor and PodMonitor CRDs, for this module's tests."""
    for kind, plural in MONITOR_CRDS.items():
        crds.kubectl(
            "apply", "--server-side", "-f", "-", input=json.dumps(monitor_crd(kind, plural))
        )
        crds.kubectl(
            "wait",
            "--for=condition=Established",
            f"crd/{plural}.monitoring.coreos.com",
            "--timeout=60s",
        )
    yield crds
    for plural in MONITOR_CRDS.values():
        crds.kubectl("delete", "crd", f"{plural}.monitoring.coreos.com", "--wait=false")


MONITORS = {"metrics": {"serviceMonitor": {"enabled": True}, "podMonitor": {"enabled": True}}}


def selects(selector: Obj, labels: dict[str, str]) -> bool:
    match: dict[str, str] = selector["matchLabels"]
    return bool(match) and all(labels.get(k) == v for k, v in match.items())


def check_monitors(
    release: Release, trainer_pod_labels: dict[str, str], trainer_ports: list[Obj]
) -> None:
    """The ServiceMonitor selects the chart's Service and scrapes its ``metrics`` port, which
    targets the operator container's ``metrics`` port; the PodMonitor selects trainer Pods
    and scrapes their ``metrics`` port; both honour the metrics' own labels."""
    cp, ns = release.cp, release.namespace
    service = server_object(cp, "Service", ns, release.fullname)
    deployment = server_object(cp, "Deployment", ns, release.fullname)
    smon = server_object(cp, "ServiceMonitor", ns, release.fullname)
    pmon = server_object(cp, "PodMonitor", ns, f"{release.fullname}-trainers")
    assert service and deployment and smon and pmon

    assert selects(smon["spec"]["selector"], service["metadata"]["labels"])
    assert smon["spec"]["namespaceSelector"] == {"matchNames": [ns]}
    (endpoint,) = smon["spec"]["endpoints"]
    assert endpoint["port"] == "metrics" and endpoint["path"] == "/metrics"
    assert endpoint["honorLabels"] is True
    (port,) = [p for p in service["spec"]["ports"] if p["name"] == endpoint["port"]]
    template = deployment["spec"]["template"]
    assert selects({"matchLabels": service["spec"]["selector"]}, template["metadata"]["labels"])
    (container,) = template["spec"]["containers"]
    assert port["targetPort"] in {p["name"] for p in container["ports"]}

    assert selects(pmon["spec"]["selector"], trainer_pod_labels), trainer_pod_labels
    assert not selects(pmon["spec"]["selector"], template["metadata"]["labels"])
    expected_ns = {"matchNames": release.watched} if release.watched else {"any": True}
    assert pmon["spec"]["namespaceSelector"] == expected_ns
    (pod_endpoint,) = pmon["spec"]["podMetricsEndpoints"]
    assert pod_endpoint["port"] == "metrics" and pod_endpoint["path"] == "/metrics"
    assert pod_endpoint["honorLabels"] is True
    assert pod_endpoint["port"] in {p["name"] for p in trainer_ports}, trainer_ports


def test_monitors_select_the_operator_and_the_trainers(
    releases: Callable[..., Release], monitor_crds: ControlPlane
) -> None:
    release = releases("4")
    manifest = release.install(MONITORS)
    assert {kind_key(d) for d in manifest} == expected_objects(release, monitors=True)
    job = next(
        d for d in yaml.safe_load_all(TRAINER_JOB_GOLDEN.read_text()) if d and d["kind"] == "Job"
    )
    template = job["spec"]["template"]
    check_monitors(
        release, template["metadata"]["labels"], template["spec"]["containers"][0]["ports"]
    )


# --- the chart's operator trains; dashboards; uninstall --------------------------------------


LABEL_VALUES = re.compile(r"label_values\((?P<selector>.+), (?P<label>\w+)\)")


def label_values(prometheus: services.Prometheus, query: str) -> list[str]:
    """Grafana's ``label_values(selector, label)``: the label's values among the series."""
    match = LABEL_VALUES.fullmatch(query)
    assert match, query
    params = urllib.parse.urlencode({"match[]": match["selector"]})
    status, body = services.http_get(f"{prometheus.url}/api/v1/series?{params}")
    assert status == 200, body
    return sorted({s[match["label"]] for s in json.loads(body)["data"] if match["label"] in s})


def installed_dashboards(release: Release) -> dict[str, Obj]:
    """Title -> dashboard JSON, from the ConfigMaps the release created in the cluster (which
    must equal what ``helm template`` renders)."""
    found: dict[str, Obj] = {}
    rendered = {
        d["metadata"]["name"]: d["data"] for d in release.template() if d["kind"] == "ConfigMap"
    }
    for title, file in dashboards.DASHBOARDS.items():
        name = f"{release.fullname}-dashboard-{file.removesuffix('.json')}"
        cm = server_object(release.cp, "ConfigMap", release.namespace, name)
        assert cm is not None, name
        assert cm["data"] == rendered[name], name
        (text,) = cm["data"].values()
        found[title] = json.loads(text)
    return found


def panel_queries(dashboard: Obj) -> list[tuple[str, str]]:
    return [(p["title"], t["expr"]) for p in dashboard["panels"] for t in p["targets"]]


def check_dashboards(
    release: Release, prometheus: services.Prometheus, labels: dict[str, str]
) -> None:
    """Training: each variable (filled in order from its own query) offers the ModelVersion's
    value, and every panel returns series carrying its labels. Operator: every panel returns
    series; the phase panel counts the ModelVersion as Succeeded."""
    boards = installed_dashboards(release)
    chosen: dict[str, str] = {}
    for var in boards["Training"]["templating"]["list"]:
        if var["type"] != "query":
            continue
        query = dashboards.fill(var["query"]["query"], chosen)
        values = label_values(prometheus, query)
        if var["name"] in labels:
            assert labels[var["name"]] in values, (var["name"], values)
            chosen[var["name"]] = labels[var["name"]]
            continue
        # The final evaluation's variables (split, metric): its series come through the
        # Pushgateway at the end of the run; wait for the scrape that holds them.
        deadline = time.monotonic() + 15
        while not values and time.monotonic() < deadline:
            time.sleep(0.5)
            values = label_values(prometheus, query)
        if var["name"] == "split":
            assert values == ["validation"], values
        assert values, (var["name"], query)
        chosen[var["name"]] = values[0]
    assert {k: chosen[k] for k in labels} == labels
    for panel, expr in panel_queries(boards["Training"]):
        assert "vector(" not in expr, panel
        samples = prometheus.query(dashboards.fill(expr, chosen))
        assert samples, f"Training / {panel}: no series for {chosen}"
        for sample in samples:
            assert {k: sample.labels.get(k) for k in labels} == labels, (panel, sample)
    for panel, expr in panel_queries(boards["Operator"]):
        assert "vector(" not in expr, panel
        query = dashboards.fill(expr, {})
        # Rates need two scrapes of a counter; the operator is scraped every second. The
        # phase gauge is set just after the status write that the test saw: wait for the
        # scrape that holds it.
        if "by (phase)" in expr:
            samples = prometheus.wait_for(
                query,
                lambda found: any(s.labels["phase"] == "Succeeded" and s.value >= 1 for s in found),
                timeout=15,
            )
            assert any(s.labels["phase"] == "Succeeded" and s.value >= 1 for s in samples), samples
        else:
            samples = prometheus.wait_for(query, timeout=15)
        assert samples, f"Operator / {panel}: no series"
    selector = ", ".join(f'{k}="{labels[k]}"' for k in ("namespace", "modelversion"))
    # The gauge is set just after the status write that the test saw: wait for a scrape.
    phase = prometheus.wait_for(
        f'kubevision_modelversion_phase{{{selector}, phase="Succeeded"}}',
        lambda found: [s.value for s in found] == [1.0],
        timeout=15,
    )
    assert [s.value for s in phase] == [1.0], phase
    assert phase[0].labels["view"] == labels["view"]


def operator_process_env(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.split("=", 1) for item in raw.decode().split("\0") if "=" in item)


def check_runs_the_deployment(release: Release, agent: Any, pod: Obj) -> None:
    """The agent's process for the operator Pod runs the Deployment's command with its env,
    the ServiceAccount dir mapped to the Pod's kube-api-access volume, whose token is the
    chart's ServiceAccount's; no kubeconfig is in sight."""
    cp, ns = release.cp, release.namespace
    deployment = _deployment(release.manifest)
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert pod["spec"]["serviceAccountName"] == release.service_account
    name = pod["metadata"]["name"]
    token_path = agent.host_path(ns, name, f"{SERVICEACCOUNT_DIR}/token")
    processes = {}
    for pid in agent.pids():
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        processes[pid] = [part.decode() for part in cmdline if part]
    # The console script runs under the interpreter: `python .../bin/kubevision operator`.
    (pid,) = [
        pid
        for pid, cmd in processes.items()
        if len(cmd) >= 2 and [Path(cmd[-2]).name, cmd[-1]] == container["command"]
    ]
    env = operator_process_env(pid)
    assert "KUBECONFIG" not in env
    for item in container["env"]:
        if "value" in item and item["name"] != SERVICEACCOUNT_DIR_ENV:
            assert env[item["name"]] == item["value"], item
    assert env["KUBEVISION_OPERATOR_NAMESPACE"] == ns
    assert Path(env[SERVICEACCOUNT_DIR_ENV]) == token_path.parent
    log = agent.logs(ns, name)
    assert f"in-cluster configuration from {token_path.parent}" in log, log[-3000:]
    review = cp.request(
        "POST",
        "/apis/authentication.k8s.io/v1/tokenreviews",
        {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "spec": {"token": token_path.read_text()},
        },
    )
    assert review["status"]["authenticated"], review
    assert review["status"]["user"]["username"] == release.user
    # The operator made its CA Secret with the chart's RBAC (Role <fullname>-ca-secret).
    assert get(cp, f"/api/v1/namespaces/{ns}/secrets/{release.fullname}-status-ca")


@pytest.mark.slow
def test_chart_operator_trains_end_to_end(
    releases: Callable[..., Release],
    monitor_crds: ControlPlane,
    node_agent: Any,
    s3_server: services.S3Server,
    pushgateway: services.Pushgateway,
    tmp_path: Path,
) -> None:
    binary = services.find_binary("prometheus", services.PROMETHEUS_BINARY)
    if binary is None:
        helm_tool.missing("prometheus not found: run scripts/install-system-deps")
    release = releases("3")
    cp = release.cp
    ns = release.watched[0]
    bucket = s3_server.create_bucket()
    status_port, health_port, metrics_port = services.free_ports(3)
    release.install(
        {
            "operator": {
                "statusPort": status_port,
                "healthPort": health_port,
                "statusURL": f"https://127.0.0.1:{status_port}",
                "extraEnv": {
                    "KUBEVISION_STATUS_BIND_HOST": "127.0.0.1",
                    # The node agent rewrites the mount path in env values to its host folder.
                    SERVICEACCOUNT_DIR_ENV: SERVICEACCOUNT_DIR,
                },
            },
            "trainer": {"metricsPort": metrics_port},
            "storage": {"baseURI": f"s3://{bucket}/default-runs"},
            "metrics": {
                "pushgatewayURL": pushgateway.url,
                "serviceMonitor": {"enabled": True},
                "podMonitor": {"enabled": True},
            },
        }
    )
    agent = node_agent(cpu="4", memory="16Gi")

    def operator_pod() -> Obj | None:
        pods = get(cp, f"/api/v1/namespaces/{release.namespace}/pods") or {}
        running = [p for p in pods.get("items", []) if p["status"].get("phase") == "Running"]
        return running[0] if running else None

    pod = wait_for("the operator Pod running on the node agent", operator_pod, timeout=60)

    def healthy() -> bool:
        status, _ = services.http_get(f"http://127.0.0.1:{health_port}/healthz")
        return status == 200

    try:
        wait_for("the chart's operator /healthz", healthy, timeout=60)
    except AssertionError:
        raise AssertionError(
            agent.logs(release.namespace, pod["metadata"]["name"])[-5000:]
        ) from None
    check_runs_the_deployment(release, agent, pod)

    targets = [pushgateway.url.removeprefix("http://"), f"127.0.0.1:{health_port}"]
    prometheus = services.start_prometheus(binary, tmp_path / "prometheus", targets)
    try:
        env = h.E2E(cp, ns, s3_server, bucket, pushgateway, prometheus, tmp_path)
        case = h.CASES["tagging"]
        name = "tagging-chart"
        dataset = case.dataset(env)
        prefix = f"runs/{name}"
        watcher = h.Watcher(env, name, records_prefix=prefix)
        watcher.watch_pods = True
        mv = h.modelversion(
            env,
            name,
            "tagging",
            architecture=case.architecture,
            size=case.size,
            epochs=case.epochs,
            batch=case.batch,
        )
        env.apply(env.secret(), h.view("tagging", dataset), mv)
        try:
            obj = watcher.finished(timeout=900)
        except AssertionError:
            log = agent.logs(release.namespace, pod["metadata"]["name"])[-5000:]
            raise AssertionError(f"operator log:\n{log}") from None
        h.assert_steps_in_order(watcher)
        trained = h.assert_trained(env, obj, prefix, case.epochs)
        h.assert_epochs_on_time(watcher, trained.records)
        h.assert_prometheus(env, name, "tagging", trained, case.epochs, case.batch)
        (trainer_pod, *_) = watcher.pods.values()
        check_monitors(
            release,
            trainer_pod["metadata"]["labels"],
            trainer_pod["spec"]["containers"][0].get("ports", []),
        )
        check_dashboards(
            release, prometheus, {"namespace": ns, "view": "tagging", "modelversion": name}
        )
    finally:
        prometheus.process.stop()

    log = agent.logs(release.namespace, pod["metadata"]["name"])
    assert "Traceback" not in log, log[-5000:]
    # Uninstall with the ModelVersion (and its finished Job) still there.
    kept = env.get(name)
    assert kept is not None and not kept["metadata"].get("finalizers"), kept
    assert env.jobs(), "the training Job is gone before the uninstall"
    uninstall_and_delete_namespaces(release)
