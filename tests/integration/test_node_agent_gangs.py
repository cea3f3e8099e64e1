"""What a torchrun gang needs of the node agent: Pod DNS names and the rendezvous port mapped
onto loopback (``testenv/nodeagent/network.py``; pure rules first, then two gangs of two real
processes, each an Indexed Job with a headless Service, that find each other through the mapped
address while the Pod spec keeps the real names, and a real torchrun gang that all-reduces over
gloo), and a container that stops as a PID namespace (SIGTERM to the launcher only, its workers
gone with it).
"""

from __future__ import annotations

import os
import urllib.error
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from kubevision_api.contract import (
    ENV_MASTER_ADDR,
    ENV_MASTER_PORT,
    ENV_NNODES,
    ENV_NODE_RANK,
    ENV_NPROC_PER_NODE,
    MASTER_PORT,
)
from testenv.controlplane import ControlPlane
from testenv.nodeagent import LOOPBACK, NodeAgent
from testenv.nodeagent.agent import default_base_env
from testenv.nodeagent.network import GangPorts, gang_key, map_names, map_network, pod_hostname
from testenv.operator_helpers import eventually

MakeNode = Callable[..., NodeAgent]
COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"


def _pod(name: str, *, subdomain: str = "", owner: str = "", hostname: str = "") -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": "ns", "uid": f"uid-{name}"}
    if owner:
        meta["ownerReferences"] = [{"kind": "Job", "uid": owner, "controller": True}]
    spec: dict[str, Any] = {}
    if subdomain:
        spec["subdomain"] = subdomain
    if hostname:
        spec["hostname"] = hostname
    return {"metadata": meta, "spec": spec}


# --------------------------------------------------------------------------------------------
# Pure rules
# --------------------------------------------------------------------------------------------


def test_pod_dns_names_become_loopback_and_other_names_do_not() -> None:
    assert map_names("job-0.job.ns.svc") == LOOPBACK
    assert map_names("job-0.job.ns.svc.cluster.local") == LOOPBACK
    assert map_names("tcp://job-0.job.ns.svc.cluster.local:29500/x") == f"tcp://{LOOPBACK}:29500/x"
    # Service names, other domains and longer names are left as written.
    for kept in ("minio.ns.svc", "minio.ns.svc:9000", "a.b.c.svc.example.com", "x.a.b.c.svc"):
        assert map_names(kept) == kept
    assert pod_hostname(_pod("job-1-abcde", hostname="job-1")) == "job-1"
    assert pod_hostname(_pod("lone")) == "lone"


def test_one_port_per_gang_and_attempt() -> None:
    ports = GangPorts()
    a0 = _pod("a-0-x", subdomain="a", owner="job-a")
    a1 = _pod("a-1-y", subdomain="a", owner="job-a")
    env = {ENV_MASTER_ADDR: "a-0.a.ns.svc", ENV_MASTER_PORT: str(MASTER_PORT), "OTHER": "1"}
    mapped0, moved0 = map_network(env, a0, ports)
    mapped1, moved1 = map_network(env, a1, ports)
    assert mapped0 == mapped1
    assert mapped0[ENV_MASTER_ADDR] == LOOPBACK and mapped0["OTHER"] == "1"
    port = int(mapped0[ENV_MASTER_PORT])
    assert port != MASTER_PORT and moved0 == moved1 == {MASTER_PORT: port}
    assert env[ENV_MASTER_PORT] == str(MASTER_PORT)  # the input is not modified
    # Another gang, the same gang's next Job (a new uid), a lone Pod: other ports each.
    others = [
        _pod("b-0-z", subdomain="b", owner="job-b"),
        _pod("a-0-w", subdomain="a", owner="job-a-attempt-2"),
        _pod("lone"),
    ]
    found = {int(map_network(env, p, ports)[0][ENV_MASTER_PORT]) for p in others}
    assert len(found | {port}) == 4
    assert gang_key(a0) == ("ns", "a", "job-a")
    assert map_network({"X": "1"}, a0, ports) == ({"X": "1"}, {})


def test_pods_import_what_the_test_process_imports(tmp_path: Path) -> None:
    # A worktree runs with PYTHONPATH=api:...:. from its root: its Pods, started in folders of
    # their own, must import the same code, not the installed copy.
    environ = {"PATH": "/usr/bin", "PYTHONPATH": f"api{os.pathsep}{os.pathsep}{tmp_path}"}
    env = default_base_env(environ)
    assert env["PYTHONPATH"].split(os.pathsep) == [str(Path("api").resolve()), str(tmp_path)]
    assert env["PATH"].endswith("/usr/bin") and env["LANG"] == "C.UTF-8"
    assert "PYTHONPATH" not in default_base_env({"PATH": "/usr/bin"})


# --------------------------------------------------------------------------------------------
# On the control plane
# --------------------------------------------------------------------------------------------

#: Index 0 serves one connection at the master address and port, index 1 connects to it.
GANG_SCRIPT = """
import os, socket, sys, time
addr, port = os.environ['PET_MASTER_ADDR'], int(os.environ['PET_MASTER_PORT'])
rank, host = int(os.environ['PET_NODE_RANK']), os.environ['HOSTNAME']
index = os.environ['JOB_COMPLETION_INDEX']
print(f"rank={rank} index={index} host={host} {addr}:{port}", flush=True)
deadline = time.monotonic() + 60
if rank == 0:
    server = socket.create_server((addr, port))
    server.settimeout(60)
    conn, _ = server.accept()
    with conn:
        conn.sendall(f'hello from {host}'.encode())
        print('client says:', conn.recv(100).decode(), flush=True)
else:
    while True:
        try:
            conn = socket.create_connection((addr, port), timeout=5)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    with conn:
        print('server says:', conn.recv(100).decode(), flush=True)
        conn.sendall(f'hello from {host}'.encode())
"""


@pytest.fixture
def namespace(control_plane: ControlPlane) -> Iterator[str]:
    """A fresh namespace whose ``default`` ServiceAccount exists (Pods need it)."""
    name = f"net-{uuid.uuid4().hex[:8]}"
    control_plane.request("POST", "/api/v1/namespaces", {"metadata": {"name": name}})

    def default_account() -> bool:
        try:
            control_plane.request("GET", f"/api/v1/namespaces/{name}/serviceaccounts/default")
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return False
            raise
        return True

    eventually(default_account, "the `default` ServiceAccount")
    yield name
    control_plane.request("DELETE", f"/api/v1/namespaces/{name}")


def create_gang(
    cluster: ControlPlane, namespace: str, name: str, command: list[str] | None = None
) -> None:
    """An Indexed Job of 2 Pods and its headless Service, as the operator renders a gang, with
    torchrun's variables; ``command`` defaults to :data:`GANG_SCRIPT`."""
    cluster.request(
        "POST",
        f"/api/v1/namespaces/{namespace}/services",
        {
            "metadata": {"name": name},
            "spec": {
                "clusterIP": "None",
                "publishNotReadyAddresses": True,
                "selector": {"batch.kubernetes.io/job-name": name},
                "ports": [{"name": "rendezvous", "port": MASTER_PORT}],
            },
        },
    )
    env = [
        {"name": ENV_NNODES, "value": "2"},
        {"name": ENV_NPROC_PER_NODE, "value": "1"},
        {"name": ENV_MASTER_ADDR, "value": f"{name}-0.{name}.{namespace}.svc"},
        {"name": ENV_MASTER_PORT, "value": str(MASTER_PORT)},
        {
            "name": ENV_NODE_RANK,
            "valueFrom": {"fieldRef": {"fieldPath": f"metadata.annotations['{COMPLETION_INDEX}']"}},
        },
    ]
    container = {
        "name": "main",
        "image": "kubevision/trainer:test",
        "command": command or ["python", "-c", GANG_SCRIPT],
        "env": env,
        "ports": [{"name": "rendezvous", "containerPort": MASTER_PORT}],
    }
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "completionMode": "Indexed",
            "completions": 2,
            "parallelism": 2,
            "backoffLimit": 0,
            "template": {
                "spec": {
                    "subdomain": name,
                    "restartPolicy": "Never",
                    "terminationGracePeriodSeconds": 5,
                    "containers": [container],
                }
            },
        },
    }
    cluster.request("POST", f"/apis/batch/v1/namespaces/{namespace}/jobs", job)


def gang_pods(cluster: ControlPlane, namespace: str, job: str) -> dict[int, Any]:
    """{completion index: Pod} of a Job."""
    pods = cluster.request(
        "GET", f"/api/v1/namespaces/{namespace}/pods?labelSelector=job-name%3D{job}"
    )["items"]
    return {int(p["metadata"]["annotations"][COMPLETION_INDEX]): p for p in pods}


def job_complete(cluster: ControlPlane, namespace: str, job: str) -> bool:
    """Whether the Job has its Complete condition."""
    got = cluster.request("GET", f"/apis/batch/v1/namespaces/{namespace}/jobs/{job}")
    return any(
        c["type"] == "Complete" and c["status"] == "True"
        for c in got.get("status", {}).get("conditions") or []
    )


def test_two_gangs_rendezvous_through_mapped_names_and_ports(
    control_plane: ControlPlane, namespace: str, node_agent: MakeNode
) -> None:
    agent = node_agent()
    gangs = ("alpha", "beta")
    for gang in gangs:  # both at once: the same spec port 29500, one host port each
        create_gang(control_plane, namespace, gang)
    for gang in gangs:
        eventually(
            lambda gang=gang: job_complete(control_plane, namespace, gang),  # type: ignore[misc]
            f"gang {gang} to complete",
        )
    host_ports = {}
    for gang in gangs:
        pods = gang_pods(control_plane, namespace, gang)
        assert sorted(pods) == [0, 1]
        logs = {i: agent.logs(namespace, p["metadata"]["name"]) for i, p in pods.items()}
        assert f"server says: hello from {gang}-0" in logs[1], logs
        assert f"client says: hello from {gang}-1" in logs[0], logs
        ports = {i: agent.ports(namespace, p["metadata"]["name"]) for i, p in pods.items()}
        assert ports[0] == ports[1] and MASTER_PORT in ports[0]
        host_ports[gang] = ports[0][MASTER_PORT]
        for index, pod in pods.items():
            assert pod["spec"]["hostname"] == f"{gang}-{index}"
            assert f"rank={index} index={index} host={gang}-{index}" in logs[index]
            assert f"{LOOPBACK}:{host_ports[gang]}" in logs[index]
            # The API keeps what a cluster would see: the real name and port.
            env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
            assert env[ENV_MASTER_ADDR] == f"{gang}-0.{gang}.{namespace}.svc"
            assert env[ENV_MASTER_PORT] == str(MASTER_PORT)
    assert host_ports["alpha"] != host_ports["beta"]
    assert MASTER_PORT not in host_ports.values()


#: A worker of torchrun: one all-reduce over the gang (gloo), then the sum it got.
ALL_REDUCE = """
import torch, torch.distributed as dist
dist.init_process_group('gloo')
value = torch.tensor([float(dist.get_rank() + 1)])
dist.all_reduce(value)
print(f'rank={dist.get_rank()} world={dist.get_world_size()} sum={value.item()}', flush=True)
dist.destroy_process_group()
"""


def test_a_torchrun_gang_all_reduces(
    control_plane: ControlPlane, namespace: str, node_agent: MakeNode
) -> None:
    agent = node_agent()
    # torchrun itself: static rendezvous at PET_MASTER_ADDR:PET_MASTER_PORT (the mapped ones).
    command = ["python", "-m", "torch.distributed.run", "--no-python", "python", "-c", ALL_REDUCE]
    create_gang(control_plane, namespace, "ddp", command)
    eventually(lambda: job_complete(control_plane, namespace, "ddp"), "the gang to complete")
    pods = gang_pods(control_plane, namespace, "ddp")
    for index, pod in pods.items():
        logs = agent.logs(namespace, pod["metadata"]["name"])
        assert f"rank={index} world=2 sum=3.0" in logs, logs


#: A launcher like torchrun: its worker runs in a session of its own and is never signalled by
#: the launcher, which only records the SIGTERM it gets and exits.
LAUNCHER_SCRIPT = """
import os, signal, subprocess, sys, time
worker_script = (
    "import signal, time\\n"
    "signal.signal(signal.SIGTERM, lambda *a: open('/out/worker-sigterm', 'w').close())\\n"
    "time.sleep(120)\\n"
)
worker = subprocess.Popen([sys.executable, '-c', worker_script], start_new_session=True)
def on_term(signum, frame):
    open('/out/launcher-sigterm', 'w').close()
    sys.exit(143)
signal.signal(signal.SIGTERM, on_term)
open('/out/pids.tmp', 'w').write(f'{os.getpid()} {worker.pid}')
os.replace('/out/pids.tmp', '/out/pids')
time.sleep(120)
"""


def test_a_container_stops_as_a_pid_namespace(
    control_plane: ControlPlane, namespace: str, node_agent: MakeNode, tmp_path: Path
) -> None:
    agent = node_agent(path_map={"/out": tmp_path})
    pod = {
        "metadata": {"name": "launcher"},
        "spec": {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 20,
            "containers": [
                {
                    "name": "main",
                    "image": "kubevision/trainer:test",
                    "command": ["python", "-c", LAUNCHER_SCRIPT],
                }
            ],
        },
    }
    control_plane.request("POST", f"/api/v1/namespaces/{namespace}/pods", pod)
    pids_file = tmp_path / "pids"
    eventually(pids_file.exists, "the launcher and its worker to start")
    launcher, worker = (int(p) for p in pids_file.read_text().split())
    assert os.getsid(worker) == worker != os.getsid(launcher)  # a session of its own
    assert sorted(agent.pod_pids(namespace, "launcher")) == sorted([launcher, worker])

    control_plane.request("DELETE", f"/api/v1/namespaces/{namespace}/pods/launcher")
    eventually((tmp_path / "launcher-sigterm").exists, "the launcher to get SIGTERM")
    # The launcher's exit takes the worker with it, although it never signalled it.
    eventually(lambda: not pid_alive(worker), "the worker to die with the launcher", timeout=20)
    assert not (tmp_path / "worker-sigterm").exists()  # SIGTERM went to the main process only


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie."""
    try:
        return "State:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
