"""The node agent fixture makes real Jobs run: real scheduler, Job controller and garbage
collector on the real control plane, containers as local processes.

The first tests check the agent's pure rules without a cluster; the others start one or two
Nodes (``node_agent`` factory from ``testenv/fixtures.py``) in a fresh namespace.
Every wait is bounded by :func:`eventually`.
"""

from __future__ import annotations

import time
import urllib.error
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from testenv.controlplane import KUBEVISION_AUDIENCE, ControlPlane
from testenv.nodeagent import (
    NodeAgent,
    PathRewriter,
    expand,
    parse_quantity,
    termination_message,
)
from testenv.nodeagent.podspec import PrepareError, command_line, container_env, mount_paths
from testenv.operator_helpers import eventually

MakeNode = Callable[..., NodeAgent]


def get(cluster: ControlPlane, path: str) -> Any:
    """GET as admin; None for 404."""
    try:
        return cluster.request("GET", path)
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise


def condition(obj: Any, kind: str) -> Any:
    """The condition of type ``kind`` of ``obj`` if it is True, else None."""
    for cond in (obj or {}).get("status", {}).get("conditions") or []:
        if cond["type"] == kind and cond["status"] == "True":
            return cond
    return None


def job_pod(cluster: ControlPlane, namespace: str, job: str) -> Any:
    """The (single) Pod of a Job, or None."""
    pods = get(cluster, f"/api/v1/namespaces/{namespace}/pods?labelSelector=job-name%3D{job}")
    items: list[Any] = pods["items"] if pods else []
    return items[0] if items else None


def run_job(
    cluster: ControlPlane,
    namespace: str,
    name: str,
    container: dict[str, Any],
    *,
    volumes: list[dict[str, Any]] | None = None,
    restart_policy: str = "Never",
    grace_s: int = 10,
    init_containers: list[dict[str, Any]] | None = None,
    active_deadline_s: int | None = None,
) -> None:
    """Create a one-Pod Job with ``backoffLimit: 0``."""
    pod_spec: dict[str, Any] = {
        "restartPolicy": restart_policy,
        "terminationGracePeriodSeconds": grace_s,
        "containers": [{"name": "main", "image": "kubevision/trainer:test", **container}],
    }
    if volumes:
        pod_spec["volumes"] = volumes
    if init_containers:
        pod_spec["initContainers"] = init_containers
    cluster.request(
        "POST",
        f"/apis/batch/v1/namespaces/{namespace}/jobs",
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": name},
            "spec": {
                "backoffLimit": 0,
                "template": {"spec": pod_spec},
                **({"activeDeadlineSeconds": active_deadline_s} if active_deadline_s else {}),
            },
        },
    )


def python(script: str, *args: str) -> dict[str, Any]:
    """A container running ``python -c script args...`` (the test interpreter)."""
    return {"command": ["python", "-c", script], "args": list(args)}


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie."""
    try:
        return "State:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False


@pytest.fixture
def namespace(control_plane: ControlPlane) -> Iterator[str]:
    """A fresh namespace whose ``default`` ServiceAccount exists (Pods need it)."""
    name = f"na-{uuid.uuid4().hex[:8]}"
    control_plane.request("POST", "/api/v1/namespaces", {"metadata": {"name": name}})
    eventually(
        lambda: get(control_plane, f"/api/v1/namespaces/{name}/serviceaccounts/default"),
        "the `default` ServiceAccount",
    )
    yield name
    control_plane.request("DELETE", f"/api/v1/namespaces/{name}")


# --------------------------------------------------------------------------------------------
# Pure rules
# --------------------------------------------------------------------------------------------


def test_expand_follows_kubernetes() -> None:
    env = {"A": "1", "B": "two"}
    assert expand("$(A)-$(B)", env) == "1-two"
    assert expand("$$(A) $(MISSING) $(", env) == "$(A) $(MISSING) $("
    assert expand("cost $5 $A", env) == "cost $5 $A"


def test_path_rewriter_rewrites_whole_paths_only() -> None:
    rewriter = PathRewriter({"/data": "/h/d", "/data/cache": "/h/c", "/etc/kv": "/h/kv"})
    assert rewriter.rewrite("--plan=/etc/kv/plan.json") == "--plan=/h/kv/plan.json"
    assert rewriter.rewrite("/data/cache/x /data/y file:///data") == "/h/c/x /h/d/y file:///h/d"
    assert rewriter.rewrite("/mnt/data /data2 /etc/kv.d") == "/mnt/data /data2 /etc/kv.d"


def test_only_what_the_pod_spec_says_is_mapped() -> None:
    # A trainer-like container: an emptyDir at /tmp, the plan at /etc/kv, on a node whose
    # interpreter lives in a virtual environment under /tmp.
    volumes = {"tmp": Path("/pod/volumes/tmp"), "plan": Path("/pod/volumes/plan")}
    container: dict[str, Any] = {
        "name": "trainer",
        "command": ["kubevision", "trainer", "--plan", "/etc/kv/plan.json"],
        "args": ["--python=$(VIRTUAL_ENV)/bin/python", "--scratch=$(SCRATCH)"],
        "volumeMounts": [
            {"name": "tmp", "mountPath": "/tmp"},
            {"name": "plan", "mountPath": "/etc/kv", "readOnly": True},
        ],
        "env": [
            {"name": "SCRATCH", "value": "/tmp/scratch"},
            {"name": "TOOLS", "value": "$(PATH):/tmp/tools/bin"},
            {"name": "TOKEN_PATH", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
            {"name": "ABSENT", "valueFrom": {"secretKeyRef": {"name": "s", "key": "none"}}},
        ],
    }
    mapping = mount_paths(container, volumes, Path("/pod/c/termination-log"), {"/out": "/h/o"})
    assert mapping == {
        "/out": "/h/o",
        "/tmp": volumes["tmp"],
        "/etc/kv": volumes["plan"],
        "/dev/termination-log": Path("/pod/c/termination-log"),
    }
    rewriter = PathRewriter(mapping)
    inherited = {
        "PATH": "/tmp/venv/bin:/usr/bin",
        "VIRTUAL_ENV": "/tmp/venv",
        "HOME": "/tmp/agent/pods/p/home",
    }
    secrets = {"k": "/tmp/token"}

    def value_from(source: Mapping[str, Any]) -> str | None:
        return secrets.get(source["secretKeyRef"]["key"])

    env = container_env(
        inherited, {"FROM_CONFIGMAP": "/etc/kv/x"}, container["env"], value_from, rewriter
    )
    assert env == {
        # The host's own environment stays as it is, though it lies under the mounted /tmp.
        "PATH": "/tmp/venv/bin:/usr/bin",
        "VIRTUAL_ENV": "/tmp/venv",
        "HOME": "/tmp/agent/pods/p/home",
        # What the Pod spec sets is mapped: envFrom, literal values, valueFrom sources.
        "FROM_CONFIGMAP": "/pod/volumes/plan/x",
        "SCRATCH": "/pod/volumes/tmp/scratch",
        "TOOLS": "/tmp/venv/bin:/usr/bin:/pod/volumes/tmp/tools/bin",
        "TOKEN_PATH": "/pod/volumes/tmp/token",
    }
    assert command_line(container, env, rewriter) == [
        "kubevision",
        "trainer",
        "--plan",
        "/pod/volumes/plan/plan.json",
        "--python=/tmp/venv/bin/python",
        "--scratch=/pod/volumes/tmp/scratch",
    ]
    with pytest.raises(PrepareError, match="neither command nor args"):
        command_line({"name": "empty"}, env, rewriter)
    with pytest.raises(PrepareError, match="'cache': no such volume"):
        mount_paths({"volumeMounts": [{"name": "cache", "mountPath": "/c"}]}, volumes, Path("/t"))


def test_termination_message_rules(tmp_path: Path) -> None:
    message, log = tmp_path / "message", tmp_path / "log"
    log.write_text("".join(f"line {i}\n" for i in range(100)))
    message.write_bytes(b"x" * 5000)
    assert termination_message(message, log, "File", 1) == "x" * 4096
    message.write_bytes(b"")
    assert termination_message(message, log, "File", 1) == ""
    assert termination_message(message, log, "FallbackToLogsOnError", 0) == ""
    fallback = termination_message(message, log, "FallbackToLogsOnError", 1)
    assert fallback.startswith("line 20\n") and fallback.endswith("line 99\n")


def test_parse_quantity() -> None:
    assert parse_quantity("64Mi") == 64 * 2**20
    assert parse_quantity("1.5G") == 1_500_000_000
    assert parse_quantity("500m") * 1000 == 500


# --------------------------------------------------------------------------------------------
# On the control plane
# --------------------------------------------------------------------------------------------


def test_node_registers_with_lease_and_node_identity(
    control_plane: ControlPlane, node_agent: MakeNode
) -> None:
    agent = node_agent(gpus=2, cpu="4", memory="8Gi", lease_renew_s=1.0)
    node = control_plane.request("GET", f"/api/v1/nodes/{agent.name}")
    assert node["status"]["allocatable"]["nvidia.com/gpu"] == "2"
    assert node["status"]["capacity"]["cpu"] == "4"
    assert condition(node, "Ready")
    lease_path = f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{agent.name}"
    first = control_plane.request("GET", lease_path)["spec"]["renewTime"]
    eventually(
        lambda: control_plane.request("GET", lease_path)["spec"]["renewTime"] != first,
        "the Lease to be renewed",
        timeout=15,
    )
    assert agent.user == f"system:node:{agent.name}"


def test_job_completes_with_configmap_volume_and_env(
    control_plane: ControlPlane, namespace: str, node_agent: MakeNode
) -> None:
    agent = node_agent(port_map={9090: 19090})
    control_plane.request(
        "POST",
        f"/api/v1/namespaces/{namespace}/configmaps",
        {"metadata": {"name": "greeting"}, "data": {"message.txt": "hello", "WHO": "world"}},
    )
    control_plane.request(
        "POST",
        f"/api/v1/namespaces/{namespace}/secrets",
        {"metadata": {"name": "creds"}, "stringData": {"AWS_ACCESS_KEY_ID": "key-id"}},
    )
    script = (
        "import os, sys; print('file:', open(sys.argv[1]).read()); "
        "print('who:', os.environ['WHO']); print('pod:', sys.argv[2], os.environ['POD_IP']); "
        "print('secret:', os.environ['S3_AWS_ACCESS_KEY_ID'], open('/etc/creds/key').read()); "
        "print('init:', open('/dev/shm/from-init').read()); "
        "print('port:', os.environ['KUBEVISION_NODE_AGENT_PORT_METRICS']); "
        "print('ca:', os.path.getsize('/var/run/secrets/kubernetes.io/serviceaccount/ca.crt') > 0)"
    )
    container = python(script, "$(GREETING_FILE)", "$(POD_NAME)")
    container["env"] = [
        {"name": "GREETING_FILE", "value": "/etc/greeting/message.txt"},
        {"name": "WHO", "valueFrom": {"configMapKeyRef": {"name": "greeting", "key": "WHO"}}},
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
    ]
    container["envFrom"] = [{"prefix": "S3_", "secretRef": {"name": "creds"}}]
    container["ports"] = [{"name": "metrics", "containerPort": 9090}]
    container["volumeMounts"] = [
        {"name": "greeting", "mountPath": "/etc/greeting"},
        {"name": "creds", "mountPath": "/etc/creds"},
        {"name": "shm", "mountPath": "/dev/shm"},
    ]
    init = {
        "name": "init",
        "image": "busybox",
        **python("open('/dev/shm/from-init', 'w').write('done')"),
        "volumeMounts": [{"name": "shm", "mountPath": "/dev/shm"}],
    }
    run_job(
        control_plane,
        namespace,
        "hello",
        container,
        volumes=[
            {"name": "greeting", "configMap": {"name": "greeting"}},
            {
                "name": "creds",
                "secret": {
                    "secretName": "creds",
                    "items": [{"key": "AWS_ACCESS_KEY_ID", "path": "key"}],
                },
            },
            {"name": "shm", "emptyDir": {"medium": "Memory"}},
        ],
        init_containers=[init],
    )

    eventually(
        lambda: condition(
            get(control_plane, f"/apis/batch/v1/namespaces/{namespace}/jobs/hello"), "Complete"
        ),
        "the Job to complete",
    )
    pod = job_pod(control_plane, namespace, "hello")
    name = pod["metadata"]["name"]
    assert pod["spec"]["nodeName"] == agent.name
    assert pod["status"]["phase"] == "Succeeded"
    terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert (terminated["exitCode"], terminated["reason"]) == (0, "Completed")
    assert terminated["startedAt"] <= terminated["finishedAt"]
    init_state = pod["status"]["initContainerStatuses"][0]["state"]["terminated"]
    assert init_state["exitCode"] == 0
    logs = agent.logs(namespace, name)
    for line in (
        "file: hello",
        "who: world",
        f"pod: {name} 127.0.0.1",
        "secret: key-id key-id",
        "init: done",
        "port: 19090",
        "ca: True",
    ):
        assert line in logs, logs
    assert agent.ports(namespace, name) == {9090: 19090}

    # A finished Pod that is deleted (here by the garbage collector) is confirmed by the node.
    control_plane.request(
        "DELETE",
        f"/apis/batch/v1/namespaces/{namespace}/jobs/hello",
        {"propagationPolicy": "Background"},
    )
    eventually(lambda: job_pod(control_plane, namespace, "hello") is None, "the Pod to go")


def test_failing_container_reports_exit_code_and_message(
    control_plane: ControlPlane, namespace: str, node_agent: MakeNode
) -> None:
    node_agent()
    # The script names /dev/termination-log literally: the agent rewrites it to the host file.
    script = (
        "import sys; print('working'); "
        "open('/dev/termination-log', 'w').write('InvalidInput: no images found'); sys.exit(3)"
    )
    run_job(control_plane, namespace, "fails", python(script))

    job = eventually(
        lambda: condition(
            get(control_plane, f"/apis/batch/v1/namespaces/{namespace}/jobs/fails"), "Failed"
        ),
        "the Job to fail",
    )
    assert job["reason"] == "BackoffLimitExceeded"
    pod = job_pod(control_plane, namespace, "fails")
    assert pod["status"]["phase"] == "Failed"
    terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert terminated["exitCode"] == 3
    assert terminated["reason"] == "Error"
    assert terminated["message"] == "InvalidInput: no images found"


def test_memory_limit_is_enforced_as_oom_kill(
    control_plane: ControlPlane, namespace: str, node_agent: MakeNode
) -> None:
    node_agent()
    # Touched memory (bytes * n writes every page), 16 MiB at a time; bounded at 256 MiB so a
    # broken watchdog fails the test rather than the machine.
    script = (
        "import time\nchunks = []\nfor _ in range(16):\n"
        "    chunks.append(b'x' * (16 << 20)); time.sleep(0.2)\n"
    )
    container = python(script)
    container["resources"] = {"limits": {"memory": "64Mi"}}
    run_job(control_plane, namespace, "hog", container)

    def terminated() -> Any:
        pod = job_pod(control_plane, namespace, "hog")
        statuses = (pod or {}).get("status", {}).get("containerStatuses") or []
        return statuses and statuses[0]["state"].get("terminated")

    state = eventually(terminated, "the container to be OOM-killed")
    assert (state["exitCode"], state["reason"]) == (137, "OOMKilled")


def test_gpu_pod_waits_for_a_gpu_node(
    control_plane: ControlPlane, namespace: str, node_agent: MakeNode
) -> None:
    node_agent()  # no GPU
    container = python("import os; print('devices=' + os.environ['CUDA_VISIBLE_DEVICES'])")
    container["resources"] = {"limits": {"nvidia.com/gpu": 1}}
    run_job(control_plane, namespace, "gpu", container)

    def unschedulable() -> Any:
        pod = job_pod(control_plane, namespace, "gpu")
        for cond in (pod or {}).get("status", {}).get("conditions") or []:
            if cond["type"] == "PodScheduled" and cond["status"] == "False":
                return cond
        return None

    cond = eventually(unschedulable, "the scheduler to report the Pod unschedulable")
    assert cond["reason"] == "Unschedulable"
    assert "Insufficient nvidia.com/gpu" in cond["message"]
    assert job_pod(control_plane, namespace, "gpu")["status"]["phase"] == "Pending"

    gpu_node = node_agent(gpus=1)
    eventually(
        lambda: condition(
            get(control_plane, f"/apis/batch/v1/namespaces/{namespace}/jobs/gpu"), "Complete"
        ),
        "the Job to complete on the GPU node",
    )
    pod = job_pod(control_plane, namespace, "gpu")
    assert pod["spec"]["nodeName"] == gpu_node.name
    assert "devices=0" in gpu_node.logs(namespace, pod["metadata"]["name"])


@pytest.mark.parametrize("propagation", ["Foreground", "Background"])
def test_deleting_a_running_job_terminates_its_process(
    control_plane: ControlPlane,
    namespace: str,
    node_agent: MakeNode,
    tmp_path: Path,
    propagation: str,
) -> None:
    node_agent(path_map={"/out": tmp_path})
    script = (
        "import os, signal, sys, time\n"
        "def on_term(signum, frame):\n"
        "    open('/out/sigterm', 'w').write('got SIGTERM'); sys.exit(0)\n"
        "signal.signal(signal.SIGTERM, on_term)\n"
        "open('/out/pid.tmp', 'w').write(str(os.getpid()))\n"
        "os.replace('/out/pid.tmp', '/out/pid')\n"
        "time.sleep(120)\n"
    )
    run_job(control_plane, namespace, "long", python(script), grace_s=20)
    pid_file = tmp_path / "pid"
    eventually(pid_file.exists, "the container to start")
    pid = int(pid_file.read_text())
    assert pid_alive(pid)
    pod = eventually(
        lambda: (
            condition(job_pod(control_plane, namespace, "long"), "Ready")
            and job_pod(control_plane, namespace, "long")
        ),
        "the Pod to be Running and Ready",
    )
    status = pod["status"]
    assert (status["phase"], status["podIP"]) == ("Running", "127.0.0.1")
    assert {c["type"] for c in status["conditions"]} >= {
        "PodScheduled",
        "Initialized",
        "ContainersReady",
        "Ready",
    }
    container = status["containerStatuses"][0]
    assert container["ready"] and container["started"]
    assert container["state"]["running"]["startedAt"]

    control_plane.request(
        "DELETE",
        f"/apis/batch/v1/namespaces/{namespace}/jobs/long",
        {"propagationPolicy": propagation},
    )
    eventually((tmp_path / "sigterm").exists, "the process to receive SIGTERM")
    eventually(lambda: not pid_alive(pid), "the process to exit", timeout=20)
    eventually(lambda: job_pod(control_plane, namespace, "long") is None, "the Pod to disappear")
    eventually(
        lambda: get(control_plane, f"/apis/batch/v1/namespaces/{namespace}/jobs/long") is None,
        "the Job to disappear",
    )


def test_job_deadline_stops_the_process(
    control_plane: ControlPlane, namespace: str, node_agent: MakeNode, tmp_path: Path
) -> None:
    node_agent(path_map={"/out": tmp_path})
    script = (
        "import os, time\nopen('/out/pid.tmp', 'w').write(str(os.getpid()))\n"
        "os.replace('/out/pid.tmp', '/out/pid')\ntime.sleep(120)\n"
    )
    run_job(control_plane, namespace, "slow", python(script), grace_s=2, active_deadline_s=2)
    pid_file = tmp_path / "pid"
    eventually(pid_file.exists, "the container to start")
    job = eventually(
        lambda: condition(
            get(control_plane, f"/apis/batch/v1/namespaces/{namespace}/jobs/slow"), "Failed"
        ),
        "the Job controller to fail the Job at its deadline",
    )
    assert job["reason"] == "DeadlineExceeded"
    eventually(lambda: not pid_alive(int(pid_file.read_text())), "the process to be stopped")


def test_projected_token_is_bound_to_the_pod(
    control_plane: ControlPlane, namespace: str, node_agent: MakeNode
) -> None:
    agent = node_agent()
    control_plane.request(
        "POST",
        f"/api/v1/namespaces/{namespace}/serviceaccounts",
        {"metadata": {"name": "trainer"}},
    )
    # The process ignores SIGTERM, so the deletion below also checks the SIGKILL after grace.
    script = (
        "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "print('token=' + open('/var/run/secrets/kubevision/token').read(), flush=True)\n"
        "time.sleep(120)\n"
    )
    grace_s = 2
    pod_spec = {
        "serviceAccountName": "trainer",
        "restartPolicy": "Never",
        "terminationGracePeriodSeconds": grace_s,
        "containers": [
            {
                "name": "main",
                "image": "kubevision/trainer:test",
                **python(script),
                "volumeMounts": [{"name": "token", "mountPath": "/var/run/secrets/kubevision"}],
            }
        ],
        "volumes": [
            {
                "name": "token",
                "projected": {
                    "sources": [
                        {
                            "serviceAccountToken": {
                                "audience": KUBEVISION_AUDIENCE,
                                "expirationSeconds": 600,
                                "path": "token",
                            }
                        }
                    ]
                },
            }
        ],
    }
    control_plane.request(
        "POST",
        f"/api/v1/namespaces/{namespace}/pods",
        {"metadata": {"name": "reporter"}, "spec": pod_spec},
    )

    def printed_token() -> str | None:
        logs = _safe_logs(agent, namespace, "reporter")
        return logs if "token=" in logs else None

    logs = eventually(printed_token, "the container to print its token")
    token = logs.split("token=", 1)[1].split()[0]

    def review() -> Any:
        body = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "spec": {"token": token, "audiences": [KUBEVISION_AUDIENCE]},
        }
        return control_plane.request("POST", "/apis/authentication.k8s.io/v1/tokenreviews", body)[
            "status"
        ]

    accepted = review()
    assert accepted["authenticated"] is True
    assert accepted["user"]["username"] == f"system:serviceaccount:{namespace}:trainer"
    assert accepted["user"]["extra"]["authentication.kubernetes.io/pod-name"] == ["reporter"]

    started = time.monotonic()
    control_plane.request("DELETE", f"/api/v1/namespaces/{namespace}/pods/reporter")
    eventually(
        lambda: get(control_plane, f"/api/v1/namespaces/{namespace}/pods/reporter") is None,
        "the Pod to disappear",
        timeout=30,
    )
    # SIGTERM was ignored: the Pod could only go once the grace period had passed (SIGKILL).
    assert time.monotonic() - started >= grace_s - 0.5
    assert not agent.pids()
    eventually(lambda: not review().get("authenticated"), "TokenReview to refuse the token")


def _safe_logs(agent: NodeAgent, namespace: str, pod: str) -> str:
    try:
        return agent.logs(namespace, pod)
    except KeyError:  # the agent has not seen the Pod yet
        return ""


def test_on_failure_restarts_in_place(
    control_plane: ControlPlane, namespace: str, node_agent: MakeNode, tmp_path: Path
) -> None:
    agent = node_agent(path_map={"/out": tmp_path})
    script = (
        "import os, sys\n"
        "runs = len(os.listdir('/out')) + 1\n"
        "open(f'/out/run-{runs}', 'w').close(); print('attempt', runs)\n"
        "sys.exit(0 if runs > 1 else 1)\n"
    )
    run_job(control_plane, namespace, "flaky", python(script), restart_policy="OnFailure")
    eventually(
        lambda: condition(
            get(control_plane, f"/apis/batch/v1/namespaces/{namespace}/jobs/flaky"), "Complete"
        ),
        "the Job to complete after one restart",
    )
    pod = job_pod(control_plane, namespace, "flaky")
    status = pod["status"]["containerStatuses"][0]
    assert status["restartCount"] == 1
    assert status["lastState"]["terminated"]["exitCode"] == 1
    assert status["state"]["terminated"]["exitCode"] == 0
    name = pod["metadata"]["name"]
    assert "attempt 1" in agent.logs(namespace, name, previous=True)
    assert "attempt 2" in agent.logs(namespace, name)


def test_stop_leaves_no_process_behind(
    control_plane: ControlPlane, namespace: str, node_agent: MakeNode, tmp_path: Path
) -> None:
    agent = node_agent(path_map={"/out": tmp_path})
    script = (
        "import os, subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
        "open('/out/pids.tmp', 'w').write(f'{os.getpid()} {child.pid}')\n"
        "os.replace('/out/pids.tmp', '/out/pids')\n"
        "time.sleep(120)\n"
    )
    run_job(control_plane, namespace, "sleepy", python(script))
    pids_file = tmp_path / "pids"
    eventually(pids_file.exists, "the container and its child to start")
    pids = [int(p) for p in pids_file.read_text().split()]
    assert all(pid_alive(p) for p in pids)

    agent.stop()
    assert not [p for p in pids if pid_alive(p)]
    assert get(control_plane, f"/api/v1/nodes/{agent.name}") is None
