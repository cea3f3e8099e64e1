"""One Pod on the node, from first sight to termination: volumes, init containers then
containers, restarts with back-off, graceful deletion, ``activeDeadlineSeconds``, token
rotation, and the Pod's status written after every change."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from testenv.nodeagent.api import ApiError
from testenv.nodeagent.containers import Container, TokenFile
from testenv.nodeagent.network import map_network
from testenv.nodeagent.podspec import (
    PATHS_ENV,
    PORT_ENV_PREFIX,
    PathRewriter,
    PrepareError,
    command_line,
    mount_paths,
    parse_quantity,
)
from testenv.nodeagent.status import Conditions, pod_status, timestamp

if TYPE_CHECKING:
    from testenv.nodeagent.agent import NodeAgent

LOG = logging.getLogger("kubevision.testenv.nodeagent")

TICK_S = 0.1  # pod worker loop: process exits and the RSS watchdog are noticed this fast
RETRY_S = 0.5  # volume/env preparation retry (e.g. Node authorizer graph not yet updated)
DEFAULT_GRACE_S = 30


class PodWorker(threading.Thread):
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
        self.containers: list[Container] = []
        self.init_containers: list[Container] = []
        self.memory_dirs: list[Path] = []  # medium: Memory emptyDirs, removed at the end
        self._conditions = Conditions()
        self._start_time = timestamp()
        self.volumes: dict[str, Path] = {}  # volume name -> host folder
        self.terminating = False  # graceful deletion requested
        self.grace_s = DEFAULT_GRACE_S
        self.gone = False  # the Pod object is deleted: kill, write nothing
        self.aborted = False  # the agent stops: kill, write nothing
        self.finished = False
        self.deleted_by_agent = False
        self._kill_deadline: float | None = None
        self._dirty = True
        self._active_since = time.monotonic()
        self.deadline_exceeded = False  # spec.activeDeadlineSeconds passed
        self.tokens: list[TokenFile] = []
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
                    grace = pod["spec"].get("terminationGracePeriodSeconds", DEFAULT_GRACE_S)
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
                container.kill(signal.SIGKILL)
                self._reap(container, wait=True)
            for memory_dir in self.memory_dirs:
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
            time.sleep(RETRY_S)
        if not self._run_init_containers():
            return
        if self._quit:
            return
        self._run_containers(self.containers)

    def _container(self, spec: dict[str, Any], *, init: bool) -> Container:
        limits = (spec.get("resources") or {}).get("limits") or {}
        memory = limits.get("memory")
        return Container(
            spec=spec,
            init=init,
            folder=self.folder / ("init-containers" if init else "containers") / spec["name"],
            pod=self.name,
            memory_limit=int(parse_quantity(memory)) if memory is not None else None,
        )

    def _finish_unstarted(self) -> None:
        # Deleted before anything ran: nothing to stop, the kubelet just lets it go.
        self._delete_pod()

    def _prepare(self) -> bool:
        try:
            self.volumes = self.agent._volumes.prepare(self)
            gpus = sum(
                int(
                    ((c.get("resources") or {}).get("limits") or {}).get(self.agent.gpu_resource, 0)
                )
                for c in self.pod["spec"]["containers"]
            )
            if gpus and not self.gpus:
                self.gpus = self.agent._allocate_gpus(gpus)
        except (ApiError, OSError, PrepareError, ValueError) as exc:
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

    def _run_containers(self, containers: list[Container]) -> None:
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
                        container.kill(signal.SIGTERM)
                    elif not container.done:
                        container.done = True
                        self._dirty = True
            if self._kill_deadline is not None and now > self._kill_deadline:
                for container in containers:
                    container.kill(signal.SIGKILL)
            for container in containers:
                if container.running:
                    container.watch_memory()
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
            time.sleep(TICK_S)

    def _after_exit(self, container: Container, terminating: bool) -> None:
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

    def _start(self, container: Container) -> None:
        try:
            argv, env, cwd = self._command(container)
        except PrepareError as exc:
            # Kubernetes reports a bad env reference as CreateContainerConfigError and keeps
            # trying; here it cannot change while the Pod lives, so it counts as a failure.
            container.state = {
                "waiting": {"reason": "CreateContainerConfigError", "message": str(exc)}
            }
            container.exit_code = 128
            container.done = True
            self._dirty = True
            return
        if container.launch(argv, env, cwd):
            assert container.process is not None
            self.agent._track(container.process)
        self._dirty = True

    def _reap(self, container: Container, *, wait: bool = False) -> bool:
        """If the container's process exited: record its termination and return True."""
        process = container.reap(wait=wait)
        if process is None:
            return False
        self.agent._untrack(process)
        return True

    # ---- container environment ----------------------------------------------------------

    def _command(self, container: Container) -> tuple[list[str], dict[str, str], str]:
        """argv, environment and working directory of one run of ``container``."""
        spec = container.spec
        rewriter = PathRewriter(
            mount_paths(spec, self.volumes, container.termination_file, self.agent.path_map)
        )
        self.rewriter = rewriter
        env, rendezvous = map_network(
            self.agent._env_builder.build(self, container, rewriter), self.pod
        )
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
            if self.agent.port_map is None:  # the rendezvous port moves with the variable
                host_port = rendezvous.get(int(port["containerPort"]), host_port)
            self.ports[int(port["containerPort"])] = host_port
            env[f"{PORT_ENV_PREFIX}{port['containerPort']}"] = str(host_port)
            if port.get("name"):
                env[PORT_ENV_PREFIX + re.sub(r"\W", "_", port["name"]).upper()] = str(host_port)
        env[PATHS_ENV] = json.dumps(rewriter.mapping, sort_keys=True)
        argv = command_line(spec, env, rewriter)
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

    def _publish(self) -> None:
        """Write the Pod's status (strategic merge: conditions merge by type)."""
        if self._quit:
            return
        status = pod_status(
            self.init_containers,
            self.containers,
            self._conditions,
            start_time=self._start_time,
            deadline_exceeded=self.deadline_exceeded,
        )
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
