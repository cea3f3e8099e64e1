"""A node agent for the integration tests: a kubelet that runs containers as local processes.

The test control plane (``cluster.py``) has no nodes. :class:`NodeAgent` registers one, as a
kubelet would, authenticated as ``system:node:<name>`` (group ``system:nodes``) so that the API
server's Node authorizer decides what it may read: only the Secrets, ConfigMaps and
ServiceAccount tokens of Pods bound to it. It renews its Lease in ``kube-node-lease``, watches
the Pods the real scheduler binds to it and runs their containers as local processes, each in
its own process group, with the Pod's command, args, env and volumes (mount paths mapped to
per-Pod folders). It writes Pod status as the kubelet does (exit codes, reasons, termination
messages), enforces ``limits.memory`` with an RSS watchdog (SIGKILL, exit 137, ``OOMKilled``) and
finishes graceful deletions. The real Job controller, scheduler and garbage collector do the
rest. See docs/node-agent.md.

The pytest fixture :func:`node_agent` is a factory: ``node_agent(gpus=1)`` returns a started
agent whose Node is Ready and schedulable; every agent it made is stopped at teardown.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import dataclasses
import datetime as dt
import http.client
import json
import logging
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from testenv.controlplane.launch import ControlPlane

LOG = logging.getLogger("kubevision.tests.node_agent")

#: Every address of a Pod and of the Node: processes run on this machine's loopback.
LOOPBACK = "127.0.0.1"
GPU_RESOURCE = "nvidia.com/gpu"
#: Environment variable holding the JSON map {container path: host path} of a container.
PATHS_ENV = "KUBEVISION_NODE_AGENT_PATHS"
#: Prefix of the variables naming the host port of each container port (number and name).
PORT_ENV_PREFIX = "KUBEVISION_NODE_AGENT_PORT_"

# The kubelet's limits (pkg/kubelet/container): a termination message file is read up to 4 KiB;
# the log fallback takes the last 80 lines, at most 2 KiB.
MAX_TERMINATION_MESSAGE_BYTES = 4096
FALLBACK_LOG_LINES = 80
FALLBACK_LOG_BYTES = 2048

_TICK_S = 0.1  # pod worker loop: process exits and the RSS watchdog are noticed this fast
_LEASE_DURATION_S = 40  # the kubelet's default
_WATCH_TIMEOUT_S = 10  # server-side watch timeout; bounds how long a dead stream goes unnoticed
_NODE_STATUS_EVERY_S = 30.0  # refresh the Ready heartbeat even though the Lease suffices
_RETRY_S = 0.5  # volume/env preparation retry (e.g. Node authorizer graph not yet updated)
_READY_TIMEOUT_S = 60.0
_JOIN_TIMEOUT_S = 10.0
_DEFAULT_GRACE_S = 30

_SETPRIV = shutil.which("setpriv")
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


class NodeAgentError(RuntimeError):
    """The node agent could not register its Node or lost track of its processes."""


class ApiError(Exception):
    """An API call answered with an HTTP error status."""

    def __init__(self, status: int, method: str, path: str, body: bytes) -> None:
        self.status = status
        try:
            decoded = json.loads(body)
            message = decoded.get("message", "") if isinstance(decoded, dict) else ""
        except ValueError:
            message = body[:200].decode(errors="replace")
        self.message = str(message)
        super().__init__(f"{method} {path}: HTTP {status}: {self.message}")


class _PrepareError(Exception):
    """A Pod's containers cannot be started yet (missing object, unsupported volume, ...)."""


# --------------------------------------------------------------------------------------------
# Pure helpers (unit-tested without a cluster)
# --------------------------------------------------------------------------------------------


def expand(value: str, env: Mapping[str, str]) -> str:
    """Expand ``$(VAR)`` references as Kubernetes does for env values, command and args.

    ``$$`` is an escaped ``$``; a reference to an undefined variable, or an unclosed ``$(``, is
    left as written (k8s.io/kubernetes third_party/forked/golang/expansion).
    """
    out: list[str] = []
    i = 0
    while i < len(value):
        char = value[i]
        if char == "$" and i + 1 < len(value):
            following = value[i + 1]
            if following == "$":
                out.append("$")
                i += 2
                continue
            if following == "(":
                close = value.find(")", i + 2)
                if close == -1:
                    out.append(value[i:])
                    break
                name = value[i + 2 : close]
                out.append(env[name] if name and name in env else value[i : close + 1])
                i = close + 1
                continue
        out.append(char)
        i += 1
    return "".join(out)


class PathRewriter:
    """Replaces container paths by host paths inside strings (command, args, env values).

    A path is replaced only where it stands as a whole path: not preceded by a word character,
    ``.`` or ``-`` and not followed by one, so ``/data`` does not touch ``/mnt/data`` or
    ``/data2`` but does rewrite ``/data/x``, ``--out=/data`` and ``file:///data``. The longest
    container path wins where mounts nest.
    """

    def __init__(self, mapping: Mapping[str, str | Path]) -> None:
        self.mapping: dict[str, str] = {
            k.rstrip("/") or "/": str(v) for k, v in mapping.items() if k.startswith("/")
        }
        keys = sorted(self.mapping, key=len, reverse=True)
        self._pattern = (
            re.compile(r"(?<![\w.-])(" + "|".join(re.escape(k) for k in keys) + r")(?![\w.-])")
            if keys
            else None
        )

    def rewrite(self, text: str) -> str:
        """``text`` with every whole occurrence of a container path replaced."""
        if self._pattern is None:
            return text
        return self._pattern.sub(lambda m: self.mapping[m.group(1)], text)

    def host_path(self, container_path: str) -> Path:
        """The host path of ``container_path`` (itself if no mapping covers it)."""
        return Path(self.rewrite(container_path))


def termination_message(
    message_file: Path, log_file: Path | None, policy: str, exit_code: int
) -> str:
    """The kubelet's rule for ``state.terminated.message``.

    The file's content, truncated to 4096 bytes; with ``FallbackToLogsOnError``, an empty file
    and a non-zero exit code, the last 80 lines of the container's log (at most 2048 bytes).
    """
    try:
        with message_file.open("rb") as handle:
            message = handle.read(MAX_TERMINATION_MESSAGE_BYTES)
    except OSError:
        message = b""
    if not message and policy == "FallbackToLogsOnError" and exit_code != 0 and log_file:
        try:
            lines = log_file.read_bytes().splitlines(keepends=True)
        except OSError:
            lines = []
        message = b"".join(lines[-FALLBACK_LOG_LINES:])[-FALLBACK_LOG_BYTES:]
    return message.decode(errors="replace")


_BINARY_SUFFIXES = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL_SUFFIXES = {
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "": Decimal(1),
    "k": Decimal(10**3),
    "M": Decimal(10**6),
    "G": Decimal(10**9),
    "T": Decimal(10**12),
    "P": Decimal(10**15),
    "E": Decimal(10**18),
}


def parse_quantity(text: str | int | float) -> Decimal:
    """A Kubernetes resource quantity (``64Mi``, ``1.5G``, ``500m``, ``1e3``) as a number."""
    raw = str(text).strip()
    match = re.fullmatch(r"([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)([a-zA-Z]*)", raw)
    if match is None:
        raise ValueError(f"not a quantity: {text!r}")
    number, suffix = Decimal(match.group(1)), match.group(2)
    if suffix in _BINARY_SUFFIXES:
        return number * _BINARY_SUFFIXES[suffix]
    if suffix in _DECIMAL_SUFFIXES:
        return number * _DECIMAL_SUFFIXES[suffix]
    raise ValueError(f"unknown quantity suffix in {text!r}")


def exit_code_of(returncode: int) -> int:
    """A container runtime's exit code: a process killed by signal N exits ``128 + N``."""
    return 128 - returncode if returncode < 0 else returncode


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _micro_now() -> str:
    # Lease times are MicroTime, which insists on the fractional part.
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# --------------------------------------------------------------------------------------------
# Process trees
# --------------------------------------------------------------------------------------------


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return kids
    for task in tasks:
        try:
            kids.extend(
                int(p) for p in Path(f"/proc/{pid}/task/{task}/children").read_text().split()
            )
        except (OSError, ValueError):
            continue
    return kids


def process_tree(pid: int) -> list[int]:
    """``pid`` and its live descendants, read from ``/proc`` (``children`` files)."""
    seen: list[int] = []
    pending = [pid]
    while pending:
        current = pending.pop()
        if current in seen or not Path(f"/proc/{current}").exists():
            continue
        seen.append(current)
        pending.extend(_children(current))
    return seen


def tree_rss_bytes(pid: int) -> int:
    """Resident memory of ``pid`` and its descendants (the watchdog's measure)."""
    total = 0
    for member in process_tree(pid):
        try:
            total += int(Path(f"/proc/{member}/statm").read_text().split()[1]) * _PAGE_SIZE
        except (OSError, ValueError, IndexError):
            continue
    return total


def _signal_tree(pid: int, sig: signal.Signals) -> None:
    """Signal ``pid``'s process group and every descendant (also those that left the group)."""
    members = process_tree(pid)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
    for member in members:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(member, sig)


# --------------------------------------------------------------------------------------------
# A small REST client (client certificate, JSON, watch streams)
# --------------------------------------------------------------------------------------------


class _Api:
    """JSON over HTTPS to the API server with one identity.

    Plain ``http.client`` rather than the ``kubernetes`` package: the agent needs a handful of
    calls, three patch content types and a watch stream it can interrupt from another thread.
    One connection per call keeps threads independent (loopback TLS costs a millisecond).
    """

    def __init__(self, server: str, ca_cert: Path, cert: Path, key: Path) -> None:
        parts = urllib.parse.urlsplit(server)
        if parts.hostname is None or parts.port is None:
            raise NodeAgentError(f"unexpected API server URL {server!r}")
        self._host, self._port = parts.hostname, parts.port
        self._context = ssl.create_default_context(cafile=str(ca_cert))
        self._context.load_cert_chain(str(cert), str(key))
        self._watch_lock = threading.Lock()
        self._watch_conn: http.client.HTTPSConnection | None = None

    def _connect(self, timeout: float) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection(
            self._host, self._port, context=self._context, timeout=timeout
        )

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        content_type: str = "application/json",
        timeout: float = 30.0,
    ) -> Any:
        """One request; returns the decoded JSON body, raises :class:`ApiError` on >= 400."""
        conn = self._connect(timeout)
        try:
            data = None if body is None else json.dumps(body).encode()
            headers = {"Accept": "application/json", "User-Agent": "kubevision-node-agent"}
            if data is not None:
                headers["Content-Type"] = content_type
            conn.request(method, path, body=data, headers=headers)
            response = conn.getresponse()
            raw = response.read()
        finally:
            conn.close()
        if response.status >= 400:
            raise ApiError(response.status, method, path, raw)
        return json.loads(raw) if raw else None

    def watch(self, path: str) -> Iterator[dict[str, Any]]:
        """Events of a watch request (``path`` holds ``watch=1`` and ``timeoutSeconds``)."""
        # The read timeout exceeds the server's timeoutSeconds: a silent stream is dead.
        conn = self._connect(_WATCH_TIMEOUT_S + 10.0)
        with self._watch_lock:
            self._watch_conn = conn
        try:
            conn.request("GET", path, headers={"Accept": "application/json"})
            response = conn.getresponse()
            if response.status != 200:
                raise ApiError(response.status, "GET", path, response.read())
            while True:
                line = response.readline()
                if not line:
                    return
                event: dict[str, Any] = json.loads(line)
                yield event
        finally:
            with self._watch_lock:
                self._watch_conn = None
            conn.close()

    def interrupt_watch(self) -> None:
        """Unblock a thread reading a watch stream (used by ``stop()``)."""
        with self._watch_lock:
            conn = self._watch_conn
        if conn is not None and conn.sock is not None:
            with contextlib.suppress(OSError):
                conn.sock.shutdown(socket.SHUT_RDWR)


# --------------------------------------------------------------------------------------------
# Containers
# --------------------------------------------------------------------------------------------

#: ``port_map`` hook: (pod, container port entry) -> host port. A Mapping maps port numbers.
PortMap = Callable[[Mapping[str, Any], Mapping[str, Any]], int] | Mapping[int, int]


@dataclasses.dataclass
class _TokenFile:
    """A projected ServiceAccount token file and when to rotate it."""

    path: Path
    audience: str | None
    expiration_s: int
    refresh_at: float  # monotonic


@dataclasses.dataclass
class _Container:
    """One container of a Pod: its spec, its current process and what status reports."""

    spec: dict[str, Any]
    init: bool
    folder: Path
    memory_limit: int | None
    process: subprocess.Popen[bytes] | None = None
    started_at: str = ""
    restart_count: int = 0
    state: dict[str, Any] = dataclasses.field(
        default_factory=lambda: {"waiting": {"reason": "ContainerCreating"}}
    )
    last_state: dict[str, Any] = dataclasses.field(default_factory=dict)
    exit_code: int | None = None
    oom_killed: bool = False
    restart_at: float | None = None  # monotonic time of a scheduled restart
    done: bool = False  # terminated, and no restart will follow

    @property
    def name(self) -> str:
        return str(self.spec["name"])

    @property
    def running(self) -> bool:
        return self.process is not None

    @property
    def termination_file(self) -> Path:
        return self.folder / "termination-log"

    def log_file(self, restart: int | None = None) -> Path:
        """Log of one run (``restart`` = restartCount at that run; default: the latest)."""
        return self.folder / "logs" / f"{self.restart_count if restart is None else restart}.log"

    def status(self, pod_terminal: bool) -> dict[str, Any]:
        """This container's entry of ``containerStatuses`` / ``initContainerStatuses``."""
        status: dict[str, Any] = {
            "name": self.name,
            "image": self.spec.get("image", ""),
            "imageID": "",
            "ready": self.running and not self.init and not pod_terminal,
            "restartCount": self.restart_count,
            "started": self.running,
            "state": self.state,
        }
        if self.process is not None:
            status["containerID"] = f"nodeagent://{self.process.pid}"
        if self.last_state:
            status["lastState"] = self.last_state
        return status


# --------------------------------------------------------------------------------------------
# Pod worker
# --------------------------------------------------------------------------------------------


class _PodWorker(threading.Thread):
    """Runs one Pod from first sight to termination and reports its status."""

    def __init__(self, agent: NodeAgent, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        super().__init__(name=f"pod-{meta['namespace']}/{meta['name']}", daemon=True)
        self.agent = agent
        self.uid: str = meta["uid"]
        self.namespace: str = meta["namespace"]
        self.pod_name: str = meta["name"]
        self.lock = threading.Lock()
        self.pod = pod
        self.folder = agent.workdir / "pods" / f"{self.namespace}_{self.pod_name}_{self.uid[:8]}"
        self.rewriter = PathRewriter({})
        self.ports: dict[int, int] = {}
        self.gpus: list[int] = []
        self.containers: list[_Container] = []
        self.init_containers: list[_Container] = []
        self._memory_dirs: list[Path] = []
        self._conditions: dict[str, dict[str, Any]] = {}
        self._start_time = _now()
        self._volumes: dict[str, Path] = {}
        self.terminating = False  # graceful deletion requested
        self.grace_s = _DEFAULT_GRACE_S
        self.gone = False  # the Pod object is deleted: kill, write nothing
        self.aborted = False  # the agent stops: kill, write nothing
        self.finished = False
        self.deleted_by_agent = False
        self._kill_deadline: float | None = None
        self._dirty = True
        self._active_since = time.monotonic()
        self.deadline_exceeded = False  # spec.activeDeadlineSeconds passed
        self.tokens: list[_TokenFile] = []
        self.update(pod)  # a Pod first seen with a deletionTimestamp is terminating already

    # ---- called from the agent's watch thread -----------------------------------------

    def update(self, pod: dict[str, Any]) -> None:
        """A newer version of the Pod was observed."""
        with self.lock:
            self.pod = pod
            meta = pod["metadata"]
            if meta.get("deletionTimestamp") and not self.terminating:
                self.terminating = True
                grace = meta.get("deletionGracePeriodSeconds")
                if grace is None:
                    grace = pod["spec"].get("terminationGracePeriodSeconds", _DEFAULT_GRACE_S)
                self.grace_s = int(grace)
                LOG.info("%s: deletion requested (grace %s s)", self.name, self.grace_s)

    def mark_gone(self) -> None:
        """The Pod object was removed from the API (DELETED event)."""
        self.gone = True

    # ---- thread body ------------------------------------------------------------------

    def run(self) -> None:
        try:
            self._run()
        except Exception:
            # A bug here must not leave processes behind or kill the agent's other pods.
            LOG.exception("%s: pod worker failed", self.name)
        finally:
            for container in [*self.init_containers, *self.containers]:
                self._kill(container, signal.SIGKILL)
                self._reap(container, wait=True)
            for memory_dir in self._memory_dirs:
                shutil.rmtree(memory_dir, ignore_errors=True)
            self.agent._release_gpus(self.gpus)
            with self.lock:
                self.finished = True
                delete_now = self.terminating and not self.gone and not self.aborted
            if delete_now and not self.deleted_by_agent:
                self._delete_pod()

    @property
    def _quit(self) -> bool:
        return self.gone or self.aborted

    def _run(self) -> None:
        spec = self.pod["spec"]
        self.folder.mkdir(parents=True, exist_ok=True)
        self.init_containers = [
            self._container(c, init=True) for c in spec.get("initContainers") or []
        ]
        self.containers = [self._container(c, init=False) for c in spec["containers"]]
        for container in self.init_containers:
            container.state = {"waiting": {"reason": "PodInitializing"}}
        self._publish()
        # Volumes first, with retries: a ConfigMap may not exist yet, and the Node authorizer
        # learns of the Pod's binding through its own informer, a moment after we do.
        while True:
            if self._quit:
                return
            if self.terminating:  # deleted before it could start: nothing to stop
                self._finish_unstarted()
                return
            if self._prepare():
                break
            time.sleep(_RETRY_S)
        if not self._run_init_containers():
            return
        if self._quit:
            return
        self._run_containers(self.containers)

    def _container(self, spec: dict[str, Any], *, init: bool) -> _Container:
        limits = (spec.get("resources") or {}).get("limits") or {}
        memory = limits.get("memory")
        return _Container(
            spec=spec,
            init=init,
            folder=self.folder / ("init-containers" if init else "containers") / spec["name"],
            memory_limit=int(parse_quantity(memory)) if memory is not None else None,
        )

    def _finish_unstarted(self) -> None:
        # Deleted before anything ran: nothing to stop, the kubelet just lets it go.
        self._delete_pod()

    def _prepare(self) -> bool:
        try:
            self._volumes = self.agent._volumes.prepare(self)
            gpus = sum(
                int(
                    ((c.get("resources") or {}).get("limits") or {}).get(self.agent.gpu_resource, 0)
                )
                for c in self.pod["spec"]["containers"]
            )
            if gpus and not self.gpus:
                self.gpus = self.agent._allocate_gpus(gpus)
        except (ApiError, OSError, _PrepareError, ValueError) as exc:
            message = str(exc)
            LOG.info("%s: not ready to start: %s", self.name, message)
            for container in self.containers:
                if not container.init:
                    container.state = {
                        "waiting": {"reason": "ContainerCreating", "message": message[:1000]}
                    }
            self._publish()
            return False
        return True

    # ---- running ----------------------------------------------------------------------

    def _run_init_containers(self) -> bool:
        """Run init containers one after the other; False if the Pod ends during them."""
        for container in self.init_containers:
            container.state = {"waiting": {"reason": "PodInitializing"}}
        for container in self.init_containers:
            self._run_containers([container])
            if self._quit or self.terminating:
                return False
            if container.exit_code != 0:
                return False  # restartPolicy Never: the Pod failed (status already written)
        return True

    def _run_containers(self, containers: list[_Container]) -> None:
        """Start ``containers`` and supervise them until each is done or the Pod ends."""
        for container in containers:
            self._start(container)
        self._publish()
        while True:
            if self._quit:
                return
            now = time.monotonic()
            self._refresh_tokens(now)
            with self.lock:
                terminating = self.terminating
                grace_s = self.grace_s
            deadline = self.pod["spec"].get("activeDeadlineSeconds")
            overdue = deadline is not None and now - self._active_since > int(deadline)
            if overdue and not self.deadline_exceeded:
                # The kubelet's own deadline: stop the containers, fail the Pod, keep it.
                LOG.info("%s: activeDeadlineSeconds %s exceeded", self.name, deadline)
                self.deadline_exceeded = True
                grace_s = int(self.pod["spec"].get("terminationGracePeriodSeconds", 30))
            ending = terminating or self.deadline_exceeded
            if ending and self._kill_deadline is None:
                self._kill_deadline = now + grace_s
                for container in containers:
                    container.restart_at = None  # no restarts once deletion is asked
                    if container.running:
                        self._kill(container, signal.SIGTERM)
                    elif not container.done:
                        container.done = True
                        self._dirty = True
            if self._kill_deadline is not None and now > self._kill_deadline:
                for container in containers:
                    self._kill(container, signal.SIGKILL)
            for container in containers:
                if container.running:
                    self._watch_memory(container)
                    if self._reap(container):
                        self._after_exit(container, ending)
                elif container.restart_at is not None and now >= container.restart_at:
                    container.restart_at = None
                    container.last_state = container.state
                    container.restart_count += 1
                    self._start(container)
                    self._dirty = True
            if all(c.done for c in containers):
                self._publish()
                return
            if self._dirty:
                self._publish()
            time.sleep(_TICK_S)

    def _after_exit(self, container: _Container, terminating: bool) -> None:
        policy = self.pod["spec"].get("restartPolicy", "Always")
        code = container.exit_code
        if container.init:
            # Init containers run to completion: whatever the policy, only failures repeat.
            restart = not terminating and policy != "Never" and code != 0
        else:
            restart = not terminating and (
                policy == "Always" or (policy == "OnFailure" and code != 0)
            )
        if restart:
            backoff = self.agent.restart_backoff_s * 2 ** min(container.restart_count, 5)
            backoff = min(backoff, self.agent.max_restart_backoff_s)
            container.restart_at = time.monotonic() + backoff
            LOG.info("%s/%s: restarting in %.1f s", self.name, container.name, backoff)
        else:
            container.done = True
        self._dirty = True

    def _start(self, container: _Container) -> None:
        try:
            argv, env, cwd = self._command(container)
        except _PrepareError as exc:
            # Kubernetes reports a bad env reference as CreateContainerConfigError and keeps
            # trying; here it cannot change while the Pod lives, so it counts as a failure.
            container.state = {
                "waiting": {"reason": "CreateContainerConfigError", "message": str(exc)}
            }
            container.exit_code = 128
            container.done = True
            self._dirty = True
            return
        container.folder.mkdir(parents=True, exist_ok=True)
        (container.folder / "logs").mkdir(exist_ok=True)
        # The kubelet mounts a fresh, empty file at terminationMessagePath for each run.
        container.termination_file.write_bytes(b"")
        if _SETPRIV is not None:
            # The kernel kills the process if the thread that started it dies (e.g. pytest is
            # killed): nothing outlives the test run. setpriv execs, so the pid stays the same.
            argv = [_SETPRIV, "--pdeathsig", "KILL", "--", *argv]
        with container.log_file().open("ab") as log:
            try:
                container.process = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                    cwd=cwd,
                    start_new_session=True,  # own process group: signals reach the whole tree
                )
            except OSError as exc:
                log.write(f"node agent: cannot start {argv!r}: {exc}\n".encode())
                container.state = {
                    "terminated": {
                        "exitCode": 128,
                        "reason": "StartError",
                        "message": str(exc),
                        "startedAt": _now(),
                        "finishedAt": _now(),
                    }
                }
                container.exit_code = 128
                container.done = True
                self._dirty = True
                return
        self.agent._track(container.process)
        container.started_at = _now()
        container.oom_killed = False
        container.exit_code = None
        container.state = {"running": {"startedAt": container.started_at}}
        self._dirty = True
        LOG.info("%s/%s: started pid %d", self.name, container.name, container.process.pid)

    def _watch_memory(self, container: _Container) -> None:
        if container.memory_limit is None or container.process is None:
            return
        rss = tree_rss_bytes(container.process.pid)
        if rss > container.memory_limit:
            LOG.info(
                "%s/%s: RSS %d > limit %d: OOM kill",
                self.name,
                container.name,
                rss,
                container.memory_limit,
            )
            container.oom_killed = True
            self._kill(container, signal.SIGKILL)

    def _kill(self, container: _Container, sig: signal.Signals) -> None:
        if container.process is not None and container.process.poll() is None:
            _signal_tree(container.process.pid, sig)

    def _reap(self, container: _Container, *, wait: bool = False) -> bool:
        """If the container's process exited: record its termination and return True."""
        process = container.process
        if process is None:
            return False
        if wait:
            try:
                process.wait(timeout=_JOIN_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                LOG.warning(
                    "%s/%s: pid %d survived SIGKILL", self.name, container.name, process.pid
                )
                return False
        returncode = process.poll()
        if returncode is None:
            return False
        # A container's processes die with its main process (the PID namespace goes away).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        self.agent._untrack(process)
        container.process = None
        code = exit_code_of(returncode)
        if container.oom_killed:
            code, reason = 137, "OOMKilled"
        else:
            reason = "Completed" if code == 0 else "Error"
        container.exit_code = code
        terminated: dict[str, Any] = {
            "exitCode": code,
            "reason": reason,
            "startedAt": container.started_at,
            "finishedAt": _now(),
            "containerID": f"nodeagent://{process.pid}",
        }
        if code == 137 and not container.oom_killed:
            terminated["signal"] = 9
        message = termination_message(
            container.termination_file,
            container.log_file(),
            container.spec.get("terminationMessagePolicy", "File"),
            code,
        )
        if message:
            terminated["message"] = message
        container.state = {"terminated": terminated}
        LOG.info("%s/%s: exited %d (%s)", self.name, container.name, code, reason)
        return True

    # ---- container environment ----------------------------------------------------------

    def _command(self, container: _Container) -> tuple[list[str], dict[str, str], str]:
        """argv, environment and working directory of one run of ``container``."""
        spec = container.spec
        mapping: dict[str, str | Path] = dict(self.agent.path_map)
        for mount in spec.get("volumeMounts") or []:
            host = self._volumes.get(mount["name"])
            if host is None:
                raise _PrepareError(f"volumeMount {mount['name']!r}: no such volume")
            sub = mount.get("subPath") or ""
            mapping[mount["mountPath"]] = host / sub if sub else host
        mapping[spec.get("terminationMessagePath") or "/dev/termination-log"] = (
            container.termination_file
        )
        rewriter = PathRewriter(mapping)
        self.rewriter = rewriter

        env = self.agent._env_builder.build(self, container)
        if self.gpus or self.agent.gpus:
            # What the NVIDIA device plugin hands a container: its devices, or none at all.
            wanted = int(
                ((spec.get("resources") or {}).get("limits") or {}).get(self.agent.gpu_resource, 0)
            )
            devices = ",".join(str(g) for g in self.gpus[:wanted]) if wanted else ""
            env.setdefault("NVIDIA_VISIBLE_DEVICES", devices or "void")
            env.setdefault("CUDA_VISIBLE_DEVICES", devices)
        for port in spec.get("ports") or []:
            host_port = self.agent._host_port(self.pod, port)
            self.ports[int(port["containerPort"])] = host_port
            env[f"{PORT_ENV_PREFIX}{port['containerPort']}"] = str(host_port)
            if port.get("name"):
                env[PORT_ENV_PREFIX + re.sub(r"\W", "_", port["name"]).upper()] = str(host_port)
        env = {k: rewriter.rewrite(v) for k, v in env.items()}
        env[PATHS_ENV] = json.dumps(rewriter.mapping, sort_keys=True)

        command = [expand(a, env) for a in spec.get("command") or []]
        args = [expand(a, env) for a in spec.get("args") or []]
        # There is no image, so no ENTRYPOINT/CMD to fall back on: command replaces the
        # entrypoint as in Kubernetes, and args alone are taken as the whole command line.
        argv = [rewriter.rewrite(a) for a in (command + args)]
        if not argv:
            raise _PrepareError(f"container {container.name!r} has neither command nor args")
        cwd = container.folder / "cwd"
        working_dir = spec.get("workingDir")
        if working_dir:
            mapped = rewriter.host_path(working_dir)
            if mapped.is_dir():
                cwd = mapped
        cwd.mkdir(parents=True, exist_ok=True)
        return argv, env, str(cwd)

    # ---- status -----------------------------------------------------------------------

    def _refresh_tokens(self, now: float) -> None:
        """Rotate projected tokens at 80 % of their lifetime, as the kubelet does."""
        for token in self.tokens:
            if now < token.refresh_at:
                continue
            try:
                value = self.agent._token(self.pod, token.audience, token.expiration_s)
            except (ApiError, OSError) as exc:
                LOG.warning("%s: token refresh failed, retrying: %s", self.name, exc)
                token.refresh_at = now + 10.0
                continue
            partial = token.path.with_name(token.path.name + ".tmp")
            partial.write_text(value)
            partial.chmod(token.path.stat().st_mode & 0o777)
            os.replace(partial, token.path)  # readers never see a half-written token
            token.refresh_at = now + 0.8 * token.expiration_s

    def _phase(self) -> str:
        inits, mains = self.init_containers, self.containers
        if self.deadline_exceeded and all(c.done for c in [*inits, *mains]):
            return "Failed"
        if any(c.done and c.exit_code != 0 for c in inits):
            return "Failed"
        if not all(c.done for c in inits) or not any(
            c.running or c.done or c.restart_at is not None or c.restart_count for c in mains
        ):
            return "Pending"
        if all(c.done for c in mains):
            return "Succeeded" if all(c.exit_code == 0 for c in mains) else "Failed"
        return "Running"

    def _condition(self, kind: str, ok: bool, reason: str = "") -> dict[str, Any]:
        status = "True" if ok else "False"
        previous = self._conditions.get(kind)
        if previous is not None and previous["status"] == status:
            return previous
        condition: dict[str, Any] = {
            "type": kind,
            "status": status,
            "lastProbeTime": None,
            "lastTransitionTime": _now(),
        }
        if reason:
            condition["reason"] = reason
        self._conditions[kind] = condition
        return condition

    def _publish(self) -> None:
        """Write the Pod's status (strategic merge: conditions merge by type)."""
        if self._quit:
            return
        phase = self._phase()
        terminal = phase in ("Succeeded", "Failed")
        initialized = all(c.done and c.exit_code == 0 for c in self.init_containers)
        ready = not terminal and all(c.running for c in self.containers)
        not_ready = "PodCompleted" if terminal else "ContainersNotReady"
        status: dict[str, Any] = {
            "phase": phase,
            "hostIP": LOOPBACK,
            "hostIPs": [{"ip": LOOPBACK}],
            "podIP": LOOPBACK,
            "podIPs": [{"ip": LOOPBACK}],
            "startTime": self._start_time,
            "conditions": [
                self._condition(
                    "Initialized", initialized, "" if initialized else "ContainersNotInitialized"
                ),
                self._condition("ContainersReady", ready, "" if ready else not_ready),
                self._condition("Ready", ready, "" if ready else not_ready),
            ],
            "containerStatuses": [c.status(terminal) for c in self.containers],
        }
        if self.init_containers:
            status["initContainerStatuses"] = [c.status(terminal) for c in self.init_containers]
        if self.deadline_exceeded:
            status["reason"] = "DeadlineExceeded"
            status["message"] = "Pod was active on the node longer than the specified deadline"
        try:
            self.agent._api.call(
                "PATCH",
                f"/api/v1/namespaces/{self.namespace}/pods/{self.pod_name}/status",
                {"status": status},
                content_type="application/strategic-merge-patch+json",
            )
            self._dirty = False
        except ApiError as exc:
            if exc.status == 404:
                self.gone = True
            else:
                LOG.warning("%s: status update failed: %s", self.name, exc)
        except OSError as exc:
            LOG.warning("%s: status update failed: %s", self.name, exc)

    def _delete_pod(self) -> None:
        """Finish a graceful deletion, as the kubelet does once the containers are gone."""
        self.deleted_by_agent = True
        self.agent._delete_pod(self.namespace, self.pod_name, self.uid)


# --------------------------------------------------------------------------------------------
# Volumes and environment
# --------------------------------------------------------------------------------------------


def _write_keys(
    folder: Path,
    data: Mapping[str, bytes],
    items: Sequence[Mapping[str, Any]] | None,
    mode: int,
    what: str,
    optional: bool,
) -> None:
    """Write ConfigMap/Secret keys as files (all keys, or the listed ``items``)."""
    folder.mkdir(parents=True, exist_ok=True)
    selected = [(item["key"], item["path"], item.get("mode", mode)) for item in items or []]
    if not items:
        selected = [(key, key, mode) for key in data]
    for key, rel, file_mode in selected:
        if key not in data:
            if optional:
                continue
            raise _PrepareError(f"{what}: key {key!r} not found")
        target = folder / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data[key])
        target.chmod(file_mode)


class _Volumes:
    """Materialises a Pod's volumes under its folder; returns {volume name: host path}."""

    def __init__(self, agent: NodeAgent) -> None:
        self.agent = agent

    def _object_data(
        self, kind: str, namespace: str, name: str, optional: bool
    ) -> dict[str, bytes] | None:
        """A ConfigMap's or Secret's keys as bytes; None if optional and absent."""
        try:
            obj = self.agent._api.call("GET", f"/api/v1/namespaces/{namespace}/{kind}/{name}")
        except ApiError as exc:
            if exc.status == 404 and optional:
                return None
            raise
        data: dict[str, bytes] = {}
        if kind == "secrets":
            for key, value in (obj.get("data") or {}).items():
                data[key] = base64.b64decode(value)
        else:
            for key, value in (obj.get("data") or {}).items():
                data[key] = str(value).encode()
            for key, value in (obj.get("binaryData") or {}).items():
                data[key] = base64.b64decode(value)
        return data

    def prepare(self, worker: _PodWorker) -> dict[str, Path]:
        pod = worker.pod
        volumes: dict[str, Path] = {}
        worker.tokens = []
        for volume in pod["spec"].get("volumes") or []:
            name = volume["name"]
            folder = worker.folder / "volumes" / name
            if "emptyDir" in volume:
                if (volume["emptyDir"] or {}).get("medium") == "Memory" and os.access(
                    "/dev/shm", os.W_OK
                ):
                    # A real tmpfs, as the kubelet mounts for medium: Memory.
                    if name not in worker._volumes:
                        memory = Path(tempfile.mkdtemp(prefix="node-agent-", dir="/dev/shm"))
                        worker._memory_dirs.append(memory)
                        folder = memory
                    else:
                        folder = worker._volumes[name]
                folder.mkdir(parents=True, exist_ok=True)
            elif "hostPath" in volume:
                folder = Path(volume["hostPath"]["path"])
            elif "configMap" in volume or "secret" in volume:
                self._key_volume(worker, volume, folder)
            elif "downwardAPI" in volume:
                source = volume["downwardAPI"]
                self._downward(pod, source.get("items") or [], folder, source.get("defaultMode"))
            elif "projected" in volume:
                projected = volume["projected"]
                mode = projected.get("defaultMode", 0o644)
                for source in projected.get("sources") or []:
                    self._projected_source(worker, source, folder, mode)
                folder.mkdir(parents=True, exist_ok=True)
            else:
                kinds = sorted(k for k in volume if k != "name")
                raise _PrepareError(f"volume {name!r}: type {kinds} is not supported")
            volumes[name] = folder
        return volumes

    def _key_volume(self, worker: _PodWorker, volume: Mapping[str, Any], folder: Path) -> None:
        if "configMap" in volume:
            source, kind, ref = volume["configMap"], "configmaps", volume["configMap"]["name"]
        else:
            source, kind, ref = volume["secret"], "secrets", volume["secret"]["secretName"]
        optional = bool(source.get("optional", False))
        data = self._object_data(kind, worker.namespace, ref, optional)
        what = f"{kind[:-1]} {worker.namespace}/{ref}"
        _write_keys(
            folder,
            data or {},
            source.get("items"),
            source.get("defaultMode", 0o644),
            what,
            optional,
        )

    def _projected_source(
        self, worker: _PodWorker, source: Mapping[str, Any], folder: Path, mode: int
    ) -> None:
        if "serviceAccountToken" in source:
            token = source["serviceAccountToken"]
            target = folder / token["path"]
            target.parent.mkdir(parents=True, exist_ok=True)
            audience, expiration_s = (
                token.get("audience"),
                int(token.get("expirationSeconds", 3600)),
            )
            target.write_text(self.agent._token(worker.pod, audience, expiration_s))
            target.chmod(0o600)
            worker.tokens.append(
                _TokenFile(target, audience, expiration_s, time.monotonic() + 0.8 * expiration_s)
            )
        elif "configMap" in source or "secret" in source:
            kind = "configmaps" if "configMap" in source else "secrets"
            ref = source["configMap" if kind == "configmaps" else "secret"]
            optional = bool(ref.get("optional", False))
            data = self._object_data(kind, worker.namespace, ref["name"], optional)
            what = f"{kind[:-1]} {worker.namespace}/{ref['name']}"
            _write_keys(folder, data or {}, ref.get("items"), mode, what, optional)
        elif "downwardAPI" in source:
            self._downward(worker.pod, source["downwardAPI"].get("items") or [], folder, mode)
        else:
            raise _PrepareError(f"projected source {sorted(source)} is not supported")

    def _downward(
        self,
        pod: Mapping[str, Any],
        items: Sequence[Mapping[str, Any]],
        folder: Path,
        mode: int | None,
    ) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        for item in items:
            if "fieldRef" not in item:
                raise _PrepareError("downwardAPI: only fieldRef items are supported")
            target = folder / item["path"]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(field_value(pod, item["fieldRef"]["fieldPath"]))
            target.chmod(item.get("mode", mode if mode is not None else 0o644))


def field_value(pod: Mapping[str, Any], field_path: str) -> str:
    """A downward-API ``fieldRef`` value; labels/annotations as ``k="v"`` lines when whole."""
    meta, spec = pod["metadata"], pod["spec"]
    simple = {
        "metadata.name": meta["name"],
        "metadata.namespace": meta["namespace"],
        "metadata.uid": meta["uid"],
        "spec.nodeName": spec.get("nodeName", ""),
        "spec.serviceAccountName": spec.get("serviceAccountName", ""),
        "status.podIP": LOOPBACK,
        "status.podIPs": LOOPBACK,
        "status.hostIP": LOOPBACK,
        "status.hostIPs": LOOPBACK,
    }
    if field_path in simple:
        return str(simple[field_path])
    match = re.fullmatch(r"metadata\.(labels|annotations)(?:\['(.+)'\])?", field_path)
    if match:
        values: dict[str, str] = meta.get(match.group(1)) or {}
        if match.group(2) is not None:
            return values.get(match.group(2), "")
        return "\n".join(f"{k}={json.dumps(v)}" for k, v in sorted(values.items()))
    raise _PrepareError(f"fieldRef {field_path!r} is not supported")


_ENV_NAME = re.compile(r"[-._a-zA-Z][-._a-zA-Z0-9]*")


class _EnvBuilder:
    """A container's environment: base, service variables, envFrom, then env in order."""

    def __init__(self, agent: NodeAgent, volumes: _Volumes) -> None:
        self.agent = agent
        self.volumes = volumes

    def build(self, worker: _PodWorker, container: _Container) -> dict[str, str]:
        spec, pod = container.spec, worker.pod
        env: dict[str, str] = dict(self.agent.base_env)
        env["HOSTNAME"] = pod["metadata"]["name"]
        home = worker.folder / "home"
        home.mkdir(parents=True, exist_ok=True)
        env.setdefault("HOME", str(home))
        # The `kubernetes` Service's variables, which every Pod gets (enableServiceLinks or
        # not), pointing at the real API server on loopback.
        port = str(urllib.parse.urlsplit(self.agent.control_plane.server).port)
        env["KUBERNETES_SERVICE_HOST"] = LOOPBACK
        env["KUBERNETES_SERVICE_PORT"] = port
        env["KUBERNETES_SERVICE_PORT_HTTPS"] = port
        for source in spec.get("envFrom") or []:
            prefix = source.get("prefix", "")
            if "configMapRef" in source:
                ref, kind = source["configMapRef"], "configmaps"
            else:
                ref, kind = source["secretRef"], "secrets"
            data = self._data(worker, kind, ref["name"], bool(ref.get("optional", False)))
            for key, raw in (data or {}).items():
                if _ENV_NAME.fullmatch(prefix + key):  # invalid names are skipped, as upstream
                    env[prefix + key] = raw.decode(errors="replace")
        for var in spec.get("env") or []:
            name = var["name"]
            if "valueFrom" not in var:
                env[name] = expand(var.get("value", ""), env)
                continue
            value = self._value_from(worker, container, var["valueFrom"])
            if value is not None:
                env[name] = value
        return env

    def _data(
        self, worker: _PodWorker, kind: str, name: str, optional: bool
    ) -> dict[str, bytes] | None:
        try:
            return self.volumes._object_data(kind, worker.namespace, name, optional)
        except ApiError as exc:
            raise _PrepareError(f"{kind[:-1]} {worker.namespace}/{name}: {exc.message}") from exc
        except OSError as exc:
            raise _PrepareError(f"{kind[:-1]} {worker.namespace}/{name}: {exc}") from exc

    def _value_from(
        self, worker: _PodWorker, container: _Container, source: Mapping[str, Any]
    ) -> str | None:
        for key, kind in (("configMapKeyRef", "configmaps"), ("secretKeyRef", "secrets")):
            if key in source:
                ref = source[key]
                optional = bool(ref.get("optional", False))
                data = self._data(worker, kind, ref["name"], optional)
                if data is None or ref["key"] not in data:
                    if optional:
                        return None
                    raise _PrepareError(f"{kind[:-1]} {ref['name']}: no key {ref['key']!r}")
                return data[ref["key"]].decode(errors="replace")
        if "fieldRef" in source:
            return field_value(worker.pod, source["fieldRef"]["fieldPath"])
        if "resourceFieldRef" in source:
            ref = source["resourceFieldRef"]
            kind, resource = ref["resource"].split(".", 1)
            resources = (container.spec.get("resources") or {}).get(kind) or {}
            divisor = parse_quantity(ref.get("divisor", "1"))
            raw = resources.get(resource)
            if raw is None:  # no limit: the node's allocatable, as upstream
                raw = {"cpu": self.agent.cpu, "memory": self.agent.memory}.get(resource, "0")
            # Rounded up, as the kubelet does (cpu 500m with divisor 1 gives 1).
            return str(int(-(-parse_quantity(raw) // divisor)))
        raise _PrepareError(f"env valueFrom {sorted(source)} is not supported")


# --------------------------------------------------------------------------------------------
# The agent
# --------------------------------------------------------------------------------------------


class NodeAgent:
    """A fake kubelet: registers a Node and runs the Pods bound to it as local processes.

    Args:
        control_plane: the cluster (``cluster.ControlPlane``).
        name: the Node's name (unique per agent in one cluster).
        gpus: how many ``nvidia.com/gpu`` (``gpu_resource``) the Node offers.
        cpu, memory, pods: capacity (and allocatable) of the Node.
        workdir: folder for per-Pod volumes, logs and termination messages.
        path_map: extra {container path: host path} rewrites for command, args and env.
        port_map: the host port of each declared container port, either a mapping of port
            numbers or ``hook(pod, port) -> int``; default: the same number.
        labels, taints: extra Node labels and ``spec.taints``.
        base_env: the environment every container starts from; default ``PATH`` (with this
            interpreter's folder first, so ``python`` is the test interpreter) and ``LANG``.
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
            path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
            base_env = {"PATH": path, "LANG": "C.UTF-8"}
        self.base_env = dict(base_env)
        #: The identity the agent acts as: the Node authorizer keys on user and group.
        self.user = f"system:node:{name}"
        cert, key = control_plane.client_certificate(self.user, ["system:nodes"])
        self._api = _Api(control_plane.server, control_plane.ca_cert, cert, key)
        self._volumes = _Volumes(self)
        self._env_builder = _EnvBuilder(self, self._volumes)
        self._lock = threading.Lock()
        self._workers: dict[str, _PodWorker] = {}
        self._processes: dict[int, subprocess.Popen[bytes]] = {}
        self._gpu_free = list(range(gpus))
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._started = False
        self._registered_at = _now()

    # ---- public API -------------------------------------------------------------------

    def start(self, *, ready_timeout: float = _READY_TIMEOUT_S) -> NodeAgent:
        """Register the Node and its Lease, start watching Pods; return once schedulable."""
        if self._started:
            return self
        self._started = True
        self.workdir.mkdir(parents=True, exist_ok=True)
        atexit.register(self.stop)
        try:
            self._register()
            self._renew_lease()
            for target, label in ((self._lease_loop, "lease"), (self._watch_loop, "watch")):
                thread = threading.Thread(target=target, name=f"{self.name}-{label}", daemon=True)
                thread.start()
                self._threads.append(thread)
            self._wait_schedulable(ready_timeout)
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
                thread.join(timeout=_JOIN_TIMEOUT_S)
        # Belt and braces: a worker that did not finish in time still has its processes killed.
        with self._lock:
            leftovers = list(self._processes.values())
        for process in leftovers:
            if process.poll() is None:
                _signal_tree(process.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(timeout=_JOIN_TIMEOUT_S)
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

    def _find(self, namespace: str, pod: str) -> _PodWorker:
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

    def pids(self) -> list[int]:
        """PIDs of the container processes running now."""
        with self._lock:
            return [p.pid for p in self._processes.values() if p.poll() is None]

    # ---- registration -----------------------------------------------------------------

    def _node_status(self) -> dict[str, Any]:
        capacity = {
            "cpu": self.cpu,
            "memory": self.memory,
            "pods": str(self.pods),
            "ephemeral-storage": "100Gi",
        }
        if self.gpus:
            capacity[self.gpu_resource] = str(self.gpus)
        now = _now()
        since = self._registered_at  # conditions never change, so neither do their transitions

        def condition(kind: str, status: str, reason: str, message: str) -> dict[str, str]:
            return {
                "type": kind,
                "status": status,
                "reason": reason,
                "message": message,
                "lastHeartbeatTime": now,
                "lastTransitionTime": since,
            }

        return {
            "capacity": capacity,
            "allocatable": dict(capacity),
            "conditions": [
                condition("MemoryPressure", "False", "KubeletHasSufficientMemory", "ok"),
                condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "ok"),
                condition("PIDPressure", "False", "KubeletHasSufficientPID", "ok"),
                condition("Ready", "True", "KubeletReady", "kubevision node agent is posting"),
            ],
            "addresses": [
                {"type": "InternalIP", "address": LOOPBACK},
                {"type": "Hostname", "address": self.name},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 0}},
            "nodeInfo": {
                "machineID": "",
                "systemUUID": "",
                "bootID": "",
                "kernelVersion": os.uname().release,
                "osImage": "kubevision node agent",
                "containerRuntimeVersion": "nodeagent://1",
                "kubeletVersion": self.control_plane.versions.kubernetes,
                "kubeProxyVersion": "",
                "operatingSystem": "linux",
                "architecture": "amd64",
            },
        }

    def _register(self) -> None:
        labels = {
            "kubernetes.io/hostname": self.name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            "kubevision.dev/node-agent": "true",
            **self.labels,
        }
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": self.name, "labels": labels},
            "spec": {"taints": self.taints} if self.taints else {},
            "status": self._node_status(),
        }
        try:
            # Nodes are the one kind whose status may be given at creation, as kubelets do.
            self._api.call("POST", "/api/v1/nodes", node)
        except ApiError as exc:
            if exc.status != 409:
                raise NodeAgentError(f"cannot register node {self.name}: {exc}") from exc
            # A Node of the same name is left over (an agent killed before stop()): take it over.
            self._api.call(
                "PATCH",
                f"/api/v1/nodes/{self.name}",
                {"metadata": {"labels": labels}, "spec": {"taints": self.taints or None}},
                content_type="application/merge-patch+json",
            )
            self._patch_node_status()

    def _patch_node_status(self) -> None:
        self._api.call(
            "PATCH",
            f"/api/v1/nodes/{self.name}/status",
            {"status": self._node_status()},
            content_type="application/merge-patch+json",
        )

    def _wait_schedulable(self, timeout: float) -> None:
        # The TaintNodesByCondition admission plugin gives every new Node the not-ready taint;
        # the node lifecycle controller lifts it once it sees Ready=True. Until then the
        # scheduler would not place anything here, so start() waits for it.
        deadline = time.monotonic() + timeout
        while True:
            node = self._api.call("GET", f"/api/v1/nodes/{self.name}")
            taints = [t["key"] for t in (node.get("spec") or {}).get("taints") or []]
            if not any(k.startswith("node.kubernetes.io/") for k in taints):
                return
            if time.monotonic() > deadline:
                raise NodeAgentError(
                    f"node {self.name} still has taints {taints} after {timeout:.0f} s"
                )
            time.sleep(0.2)

    def _renew_lease(self) -> None:
        path = f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{self.name}"
        try:
            self._api.call(
                "PATCH",
                path,
                {"spec": {"renewTime": _micro_now(), "holderIdentity": self.name}},
                content_type="application/merge-patch+json",
            )
        except ApiError as exc:
            if exc.status != 404:
                raise
            node = self._api.call("GET", f"/api/v1/nodes/{self.name}")
            lease = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {
                    "name": self.name,
                    "namespace": "kube-node-lease",
                    # As the kubelet does: the Lease goes when the Node goes.
                    "ownerReferences": [
                        {
                            "apiVersion": "v1",
                            "kind": "Node",
                            "name": self.name,
                            "uid": node["metadata"]["uid"],
                        }
                    ],
                },
                "spec": {
                    "holderIdentity": self.name,
                    "leaseDurationSeconds": _LEASE_DURATION_S,
                    "renewTime": _micro_now(),
                },
            }
            self._api.call(
                "POST", "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases", lease
            )

    def _lease_loop(self) -> None:
        last_status = time.monotonic()
        while not self._stopping.wait(self.lease_renew_s):
            try:
                self._renew_lease()
                if time.monotonic() - last_status > _NODE_STATUS_EVERY_S:
                    self._patch_node_status()
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
                    f"&timeoutSeconds={_WATCH_TIMEOUT_S}&resourceVersion={version}"
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
                self._stopping.wait(_RETRY_S)

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
                worker = _PodWorker(self, pod)
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
                raise _PrepareError(f"{count} {self.gpu_resource} wanted, {self._gpu_free} free")
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


# --------------------------------------------------------------------------------------------
# pytest fixture
# --------------------------------------------------------------------------------------------


@pytest.fixture
def node_agent(
    control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., NodeAgent]]:
    """Factory of started node agents: ``node_agent(gpus=1, name=..., path_map=...)``.

    Each call registers a new Node (unique name unless given) that is Ready and schedulable
    when the call returns; every agent is stopped, and its Node deleted, at teardown.
    """
    agents: list[NodeAgent] = []

    def make(**kwargs: Any) -> NodeAgent:
        kwargs.setdefault("name", f"node-{uuid.uuid4().hex[:6]}")
        kwargs.setdefault("workdir", tmp_path_factory.mktemp(kwargs["name"]))
        agent = NodeAgent(control_plane, **kwargs)
        agents.append(agent)
        return agent.start()

    try:
        yield make
    finally:
        for agent in reversed(agents):
            agent.stop()
