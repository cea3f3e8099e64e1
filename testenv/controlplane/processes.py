"""Processes of the control plane: start options, readiness polling, stopping by PID.

The helpers that ``launch`` (start) and ``devcluster`` (stop a detached cluster by the PIDs it
recorded) share; nothing here knows which Kubernetes component it runs.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

POLL_INTERVAL_S = 0.1
STOP_TIMEOUT_S = 10.0
_LOG_TAIL_LINES = 40
_PR_SET_PDEATHSIG = 1


class ControlPlaneError(RuntimeError):
    """The control plane could not be built or did not become ready."""


def log(message: str) -> None:
    """One progress line of the control plane, on stderr."""
    # stderr, so that `eval "$(scripts/dev-cluster up)"` only sees the export line on stdout.
    print(f"[control-plane] {message}", file=sys.stderr, flush=True)


def die_with_parent() -> None:
    """preexec_fn: have the kernel SIGKILL the child if the test process dies.

    Teardown normally stops everything, but a pytest killed by a timeout or SIGKILL runs no
    teardown; without this the servers would outlive it and hold ports and memory.
    """
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


@dataclass
class Component:
    """One process of the control plane: its command line, log file and, once started, the
    process."""

    name: str
    argv: list[str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None


def spawn(component: Component, cwd: Path, *, detach: bool = False) -> None:
    """Start ``component``'s process, its output appended to its log: in a session of its own
    with ``detach`` (it outlives this process), otherwise killed with this process."""
    with component.log_path.open("ab") as log:
        component.process = subprocess.Popen(
            component.argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            start_new_session=detach,
            preexec_fn=None if detach else die_with_parent,  # noqa: PLW1509
        )


def tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    """The last ``lines`` lines of a log file, for error messages."""
    try:
        content = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(content[-lines:])


def pid_matches(pid: int, binary: str) -> bool:
    """Whether ``pid`` is still our process (guards against PID reuse before signalling)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0] == binary.encode()
    except OSError:
        return False


def stop_pids(pids: Mapping[str, int], binaries: Mapping[str, str]) -> None:
    """Stop the processes in reverse start order: SIGTERM, wait, SIGKILL stragglers.

    The order matters: an API server whose etcd is already gone spends its whole shutdown
    retrying etcd, and etcd waits for its clients; stopped after its clients, each one exits in
    about a second.
    """
    for name, pid in reversed(list(pids.items())):
        if not pid_matches(pid, binaries[name]):
            continue
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while pid_matches(pid, binaries[name]) and time.monotonic() < deadline:
            time.sleep(POLL_INTERVAL_S / 2)
        if pid_matches(pid, binaries[name]):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def wait_until(
    what: str, probe: Callable[[], bool], deadline: float, components: Sequence[Component]
) -> None:
    """Poll ``probe`` until it is true, a component exits, or the deadline passes."""
    while True:
        for component in components:
            if component.process is not None and component.process.poll() is not None:
                raise ControlPlaneError(
                    f"{component.name} exited with {component.process.returncode} "
                    f"while waiting for {what}"
                )
        if probe():
            return
        if time.monotonic() > deadline:
            raise ControlPlaneError(f"timed out waiting for {what}")
        time.sleep(POLL_INTERVAL_S)


def https_ok(url: str, context: ssl.SSLContext) -> bool:
    """Whether a GET of ``url`` answers 200 within 2 s (proxies bypassed)."""
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context)
    )
    try:
        with opener.open(url, timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False
