"""A node agent for the integration tests: a kubelet that runs containers as local processes.

The test control plane (``testenv.controlplane``) has no nodes. :class:`NodeAgent` registers
one, as a kubelet would, authenticated as ``system:node:<name>`` (group ``system:nodes``) so that
the API server's Node authorizer decides what it may read: only the Secrets, ConfigMaps and
ServiceAccount tokens of Pods bound to it. It renews its Lease in ``kube-node-lease``, watches
the Pods the real scheduler binds to it and hands each to a :class:`PodWorker`. The real Job
controller, scheduler and garbage collector do the rest. See docs/node-agent.md.
"""

from __future__ import annotations

import atexit
import contextlib
import http.client
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from testenv.controlplane import ControlPlane
from testenv.nodeagent.api import WATCH_TIMEOUT_S, ApiClient, ApiError
from testenv.nodeagent.environment import EnvBuilder
from testenv.nodeagent.node import NodeRegistration
from testenv.nodeagent.podspec import GPU_RESOURCE, PrepareError
from testenv.nodeagent.processes import JOIN_TIMEOUT_S, members, signal_tree
from testenv.nodeagent.volumes import Volumes
from testenv.nodeagent.worker import RETRY_S, PodWorker

LOG = logging.getLogger("kubevision.testenv.nodeagent")

#: ``port_map`` hook: (pod, container port entry) -> host port. A Mapping maps port numbers.
PortMap = Callable[[Mapping[str, Any], Mapping[str, Any]], int] | Mapping[int, int]

READY_TIMEOUT_S = 60.0
NODE_STATUS_EVERY_S = 30.0  # refresh the Ready heartbeat even though the Lease suffices


def default_base_env(environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """What every container starts from, the node's "image": ``PATH`` with this interpreter's
    folder first (``python`` and ``kubevision`` are the test process's), ``LANG``, and the test
    process's ``PYTHONPATH`` when it has one, each entry made absolute (containers run in
    folders of their own): a worktree that imports its own code through ``PYTHONPATH`` runs
    that code in its Pods too, not the installed copy."""
    path = os.pathsep.join([str(Path(sys.executable).parent), environ.get("PATH", "")])
    env = {"PATH": path, "LANG": "C.UTF-8"}
    python_path = [p for p in environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if python_path:
        env["PYTHONPATH"] = os.pathsep.join(str(Path(p).resolve()) for p in python_path)
    return env


class NodeAgent:
    """A fake kubelet: registers a Node and runs the Pods bound to it as local processes.

    Args:
        control_plane: the cluster (``testenv.controlplane.ControlPlane``).
        name: the Node's name (unique per agent in one cluster).
        gpus: how many ``nvidia.com/gpu`` (``gpu_resource``) the Node offers.
        cpu, memory, pods: capacity (and allocatable) of the Node.
        workdir: folder for per-Pod volumes, logs and termination messages.
        path_map: extra {container path: host path} rewrites for command, args and env.
        port_map: the host port of each declared container port, either a mapping of port
            numbers or ``hook(pod, port) -> int``; default: the same number.
        labels, taints: extra Node labels and ``spec.taints``.
        base_env: the environment every container starts from; default
            :func:`default_base_env`.
    """

    def __init__(
        self,
        control_plane: ControlPlane,
        *,
        name: str = "node-1",
        gpus: int = 0,
        cpu: str = "8",
        memory: str = "32Gi",
        pods: int = 110,
        workdir: Path,
        path_map: Mapping[str, str | Path] | None = None,
        port_map: PortMap | None = None,
        labels: Mapping[str, str] | None = None,
        taints: Sequence[Mapping[str, str]] = (),
        base_env: Mapping[str, str] | None = None,
        gpu_resource: str = GPU_RESOURCE,
        lease_renew_s: float = 3.0,
        restart_backoff_s: float = 1.0,
        max_restart_backoff_s: float = 10.0,
    ) -> None:
        self.control_plane = control_plane
        self.name = name
        self.gpus = gpus
        self.cpu = cpu
        self.memory = memory
        self.pods = pods
        self.workdir = workdir
        self.path_map: dict[str, str | Path] = dict(path_map or {})
        self.port_map = port_map
        self.labels = dict(labels or {})
        self.taints = [dict(t) for t in taints]
        self.gpu_resource = gpu_resource
        self.lease_renew_s = lease_renew_s
        self.restart_backoff_s = restart_backoff_s
        self.max_restart_backoff_s = max_restart_backoff_s
        if base_env is None:
            base_env = default_base_env()
        self.base_env = dict(base_env)
        #: The identity the agent acts as: the Node authorizer keys on user and group.
        self.user = f"system:node:{name}"
        cert, key = control_plane.client_certificate(self.user, ["system:nodes"])
        self._api = ApiClient(control_plane.server, control_plane.ca_cert, cert, key)
        self._volumes = Volumes(self)
        self._env_builder = EnvBuilder(self, self._volumes)
        self._lock = threading.Lock()
        self._workers: dict[str, PodWorker] = {}
        self._processes: dict[int, subprocess.Popen[bytes]] = {}
        self._gpu_free = list(range(gpus))
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._started = False
        capacity = {"cpu": cpu, "memory": memory, "pods": str(pods), "ephemeral-storage": "100Gi"}
        if gpus:
            capacity[gpu_resource] = str(gpus)
        self._node = NodeRegistration(
            self._api,
            name,
            capacity=capacity,
            labels=labels or {},
            taints=taints,
            kubelet_version=control_plane.versions.kubernetes,
        )

    # ---- public API -------------------------------------------------------------------

    def start(self, *, ready_timeout: float = READY_TIMEOUT_S) -> NodeAgent:
        """Register the Node and its Lease, start watching Pods; return once schedulable."""
        if self._started:
            return self
        self._started = True
        self.workdir.mkdir(parents=True, exist_ok=True)
        atexit.register(self.stop)
        try:
            self._node.register()
            self._node.renew_lease()
            for target, label in ((self._lease_loop, "lease"), (self._watch_loop, "watch")):
                thread = threading.Thread(target=target, name=f"{self.name}-{label}", daemon=True)
                thread.start()
                self._threads.append(thread)
            self._node.wait_schedulable(ready_timeout)
        except BaseException:
            self.stop()
            raise
        LOG.info(
            "node %s ready (%s cpu, %s memory, %d gpus)",
            self.name,
            self.cpu,
            self.memory,
            self.gpus,
        )
        return self

    def stop(self) -> None:
        """Kill every process, stop the threads and delete the Node. Idempotent."""
        if not self._started or self._stopping.is_set():
            return
        self._stopping.set()
        self._api.interrupt_watch()
        with self._lock:
            workers = list(self._workers.values())
        for worker in workers:
            worker.aborted = True
        for thread in [*workers, *self._threads]:
            if thread.is_alive():
                thread.join(timeout=JOIN_TIMEOUT_S)
        # Belt and braces: a worker that did not finish in time still has its processes killed.
        with self._lock:
            leftovers = list(self._processes.values())
        for process in leftovers:
            if process.poll() is None:
                signal_tree(process.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(timeout=JOIN_TIMEOUT_S)
        # Nodes may not delete Node objects (Node authorizer); the admin does, and the Pods
        # left on it are then removed by the pod garbage collector, as for a vanished machine.
        with contextlib.suppress(OSError):
            self.control_plane.request("DELETE", f"/api/v1/nodes/{self.name}")
        atexit.unregister(self.stop)
        LOG.info("node %s stopped", self.name)

    def __enter__(self) -> NodeAgent:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _find(self, namespace: str, pod: str) -> PodWorker:
        with self._lock:
            found = [
                w for w in self._workers.values() if (w.namespace, w.pod_name) == (namespace, pod)
            ]
        if not found:
            raise KeyError(f"pod {namespace}/{pod} never ran on node {self.name}")
        return found[-1]

    def logs(
        self, namespace: str, pod: str, container: str | None = None, *, previous: bool = False
    ) -> str:
        """A container's log (stdout and stderr) of its latest run, or the one before."""
        worker = self._find(namespace, pod)
        candidates = [*worker.containers, *worker.init_containers]
        chosen = (
            candidates[0]
            if container is None
            else next((c for c in candidates if c.name == container), None)
        )
        if chosen is None:
            raise KeyError(f"pod {namespace}/{pod} has no container {container!r}")
        run = chosen.restart_count - 1 if previous else chosen.restart_count
        try:
            return chosen.log_file(run).read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def host_path(self, namespace: str, pod: str, container_path: str) -> Path:
        """Where ``container_path`` of a running (or finished) Pod's container lies here."""
        return self._find(namespace, pod).rewriter.host_path(container_path)

    def ports(self, namespace: str, pod: str) -> dict[int, int]:
        """{container port: host port} of a Pod's declared ports."""
        return dict(self._find(namespace, pod).ports)

    def pod_pids(self, namespace: str, pod: str) -> list[int]:
        """PIDs of every live process of a Pod's running containers: main processes and
        their descendants (e.g. torchrun's workers), what a test kills to kill the Pod."""
        worker = self._find(namespace, pod)
        found: list[int] = []
        for container in [*worker.init_containers, *worker.containers]:
            process = container.process
            if process is not None and process.poll() is None:
                found.extend(p for p in [process.pid, *members(container.marker)] if p not in found)
        return found

    def pids(self) -> list[int]:
        """PIDs of the container processes running now."""
        with self._lock:
            return [p.pid for p in self._processes.values() if p.poll() is None]

    # ---- registration -----------------------------------------------------------------

    def _lease_loop(self) -> None:
        last_status = time.monotonic()
        while not self._stopping.wait(self.lease_renew_s):
            try:
                self._node.renew_lease()
                if time.monotonic() - last_status > NODE_STATUS_EVERY_S:
                    self._node.patch_status()
                    last_status = time.monotonic()
            except (ApiError, OSError, http.client.HTTPException) as exc:
                LOG.warning("node %s: heartbeat failed: %s", self.name, exc)

    # ---- pods -------------------------------------------------------------------------

    def _watch_loop(self) -> None:
        selector = urllib.parse.quote(f"spec.nodeName={self.name}")
        base = f"/api/v1/pods?fieldSelector={selector}"
        version: str | None = None
        while not self._stopping.is_set():
            try:
                if version is None:
                    listed = self._api.call("GET", base)
                    version = listed["metadata"]["resourceVersion"]
                    present = {p["metadata"]["uid"] for p in listed["items"]}
                    for pod in listed["items"]:
                        self._observe(pod)
                    with self._lock:
                        vanished = [w for uid, w in self._workers.items() if uid not in present]
                    for worker in vanished:
                        worker.mark_gone()
                query = (
                    f"{base}&watch=1&allowWatchBookmarks=true"
                    f"&timeoutSeconds={WATCH_TIMEOUT_S}&resourceVersion={version}"
                )
                for event in self._api.watch(query):
                    obj = event["object"]
                    if event["type"] == "ERROR":
                        version = None  # 410 Gone and friends: list again
                        break
                    version = obj["metadata"]["resourceVersion"]
                    if event["type"] == "DELETED":
                        with self._lock:
                            deleted = self._workers.get(obj["metadata"]["uid"])
                        if deleted is not None:
                            deleted.mark_gone()
                    elif event["type"] in ("ADDED", "MODIFIED"):
                        self._observe(obj)
            except (ApiError, OSError, http.client.HTTPException, ValueError, KeyError) as exc:
                if self._stopping.is_set():
                    return
                LOG.warning("node %s: pod watch failed, listing again: %s", self.name, exc)
                version = None
                self._stopping.wait(RETRY_S)

    def _observe(self, pod: dict[str, Any]) -> None:
        if self._stopping.is_set():
            return
        meta = pod["metadata"]
        uid = meta["uid"]
        with self._lock:
            worker = self._workers.get(uid)
            if worker is None:
                if pod.get("status", {}).get("phase") in ("Succeeded", "Failed"):
                    # Finished before this agent started (a node taken over): only deletions.
                    if meta.get("deletionTimestamp"):
                        self._delete_pod(meta["namespace"], meta["name"], uid)
                    return
                worker = PodWorker(self, pod)
                self._workers[uid] = worker
                worker.start()
                return
        worker.update(pod)
        with worker.lock:
            finish = worker.finished and worker.terminating and not worker.deleted_by_agent
            if finish:
                worker.deleted_by_agent = True
        if finish:
            # A finished Pod (e.g. a completed Job's) being deleted: the kubelet confirms it.
            self._delete_pod(worker.namespace, worker.pod_name, uid)

    def _delete_pod(self, namespace: str, name: str, uid: str) -> None:
        body = {
            "apiVersion": "v1",
            "kind": "DeleteOptions",
            "gracePeriodSeconds": 0,
            "preconditions": {"uid": uid},
        }
        try:
            self._api.call("DELETE", f"/api/v1/namespaces/{namespace}/pods/{name}", body)
            LOG.info("node %s: deleted pod %s/%s", self.name, namespace, name)
        except ApiError as exc:
            if exc.status not in (404, 409):
                LOG.warning("node %s: cannot delete pod %s/%s: %s", self.name, namespace, name, exc)
        except OSError as exc:
            LOG.warning("node %s: cannot delete pod %s/%s: %s", self.name, namespace, name, exc)

    def _token(self, pod: Mapping[str, Any], audience: str | None, expiration_s: int) -> str:
        """A TokenRequest for the Pod's ServiceAccount, bound to the Pod (dies with it)."""
        meta = pod["metadata"]
        account = pod["spec"].get("serviceAccountName") or "default"
        request = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {
                # No audience means the API server's own audiences, as for kube-api-access.
                "audiences": [audience] if audience else [],
                "expirationSeconds": expiration_s,
                "boundObjectRef": {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "name": meta["name"],
                    "uid": meta["uid"],
                },
            },
        }
        response = self._api.call(
            "POST",
            f"/api/v1/namespaces/{meta['namespace']}/serviceaccounts/{account}/token",
            request,
        )
        token: str = response["status"]["token"]
        return token

    def _host_port(self, pod: Mapping[str, Any], port: Mapping[str, Any]) -> int:
        container_port = int(port["containerPort"])
        if self.port_map is None:
            return container_port
        if callable(self.port_map):
            return int(self.port_map(pod, port))
        return int(self.port_map.get(container_port, container_port))

    def _allocate_gpus(self, count: int) -> list[int]:
        with self._lock:
            if count > len(self._gpu_free):
                raise PrepareError(f"{count} {self.gpu_resource} wanted, {self._gpu_free} free")
            taken, self._gpu_free = self._gpu_free[:count], self._gpu_free[count:]
        return taken

    def _release_gpus(self, gpus: Sequence[int]) -> None:
        with self._lock:
            self._gpu_free = sorted({*self._gpu_free, *gpus})

    def _track(self, process: subprocess.Popen[bytes]) -> None:
        with self._lock:
            self._processes[process.pid] = process

    def _untrack(self, process: subprocess.Popen[bytes]) -> None:
        with self._lock:
            self._processes.pop(process.pid, None)
