"""One container of a Pod as a local process: its spec, its runs (each with a log and a fresh
termination-message file), the memory watchdog, and the status entry the kubelet writes."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

from testenv.nodeagent.processes import (
    JOIN_TIMEOUT_S,
    MEMBER_ENV,
    SETPRIV,
    kill_members,
    signal_tree,
    tree_rss_bytes,
)
from testenv.nodeagent.status import exit_code_of, termination_message, timestamp

LOG = logging.getLogger("kubevision.testenv.nodeagent")


@dataclasses.dataclass
class TokenFile:
    """A projected ServiceAccount token file and when to rotate it."""

    path: Path
    audience: str | None
    expiration_s: int
    refresh_at: float  # monotonic


@dataclasses.dataclass
class Container:
    """One container of a Pod: its spec, its current process and what status reports."""

    spec: dict[str, Any]
    init: bool
    folder: Path
    pod: str  # namespace/name, for log lines
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
        """The container's name in the Pod spec."""
        return str(self.spec["name"])

    @property
    def running(self) -> bool:
        """Whether a run's process is alive (or exited and not yet reaped)."""
        return self.process is not None

    @property
    def termination_file(self) -> Path:
        """The host file behind ``terminationMessagePath``."""
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

    @property
    def marker(self) -> str:
        """The value of ``MEMBER_ENV`` in this run's processes (unique per run)."""
        return f"{self.folder}#{self.restart_count}"

    def launch(self, argv: list[str], env: dict[str, str], cwd: str) -> bool:
        """Start one run; False (and a ``StartError`` termination) if it cannot be started."""
        env = {**env, MEMBER_ENV: self.marker}
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "logs").mkdir(exist_ok=True)
        # The kubelet mounts a fresh, empty file at terminationMessagePath for each run.
        self.termination_file.write_bytes(b"")
        if SETPRIV is not None:
            # The kernel kills the process if the thread that started it dies (e.g. pytest is
            # killed): nothing outlives the test run. setpriv execs, so the pid stays the same.
            argv = [SETPRIV, "--pdeathsig", "KILL", "--", *argv]
        with self.log_file().open("ab") as log:
            try:
                self.process = subprocess.Popen(
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
                self.state = {
                    "terminated": {
                        "exitCode": 128,
                        "reason": "StartError",
                        "message": str(exc),
                        "startedAt": timestamp(),
                        "finishedAt": timestamp(),
                    }
                }
                self.exit_code = 128
                self.done = True
                return False
        self.started_at = timestamp()
        self.oom_killed = False
        self.exit_code = None
        self.state = {"running": {"startedAt": self.started_at}}
        LOG.info("%s/%s: started pid %d", self.pod, self.name, self.process.pid)
        return True

    def watch_memory(self) -> None:
        """SIGKILL the run if its process tree's RSS exceeds ``limits.memory`` (OOMKilled)."""
        if self.memory_limit is None or self.process is None:
            return
        rss = tree_rss_bytes(self.process.pid)
        if rss > self.memory_limit:
            LOG.info(
                "%s/%s: RSS %d > limit %d: OOM kill", self.pod, self.name, rss, self.memory_limit
            )
            self.oom_killed = True
            self.kill(signal.SIGKILL)

    def kill(self, sig: signal.Signals) -> None:
        """Signal the run, if it still runs: SIGTERM to its main process only, as a container
        runtime stops a container (the main process passes it on, as torchrun does to its
        workers); SIGKILL to every process of the run."""
        if self.process is None or self.process.poll() is not None:
            return
        if sig == signal.SIGKILL:
            signal_tree(self.process.pid, sig)
            kill_members(self.marker)
        else:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(sig)

    def reap(self, *, wait: bool = False) -> subprocess.Popen[bytes] | None:
        """If the run's process exited: record its termination, return the process."""
        process = self.process
        if process is None:
            return None
        if wait:
            try:
                process.wait(timeout=JOIN_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                LOG.warning("%s/%s: pid %d survived SIGKILL", self.pod, self.name, process.pid)
                return None
        returncode = process.poll()
        if returncode is None:
            return None
        # A container's processes die with its main process (the PID namespace goes away),
        # also those in sessions of their own (torchrun's workers) or already orphaned.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        kill_members(self.marker)
        self.process = None
        code = exit_code_of(returncode)
        if self.oom_killed:
            code, reason = 137, "OOMKilled"
        else:
            reason = "Completed" if code == 0 else "Error"
        self.exit_code = code
        terminated: dict[str, Any] = {
            "exitCode": code,
            "reason": reason,
            "startedAt": self.started_at,
            "finishedAt": timestamp(),
            "containerID": f"nodeagent://{process.pid}",
        }
        if code == 137 and not self.oom_killed:
            terminated["signal"] = 9
        message = termination_message(
            self.termination_file,
            self.log_file(),
            self.spec.get("terminationMessagePolicy", "File"),
            code,
        )
        if message:
            terminated["message"] = message
        self.state = {"terminated": terminated}
        LOG.info("%s/%s: exited %d (%s)", self.pod, self.name, code, reason)
        return process
