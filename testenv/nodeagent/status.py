"""The kubelet's rules for what Pod status reports: exit codes, termination messages, the
Pod's phase and conditions. Pure functions of the containers' states."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from testenv.nodeagent.podspec import LOOPBACK

# The kubelet's limits (pkg/kubelet/container): a termination message file is read up to 4 KiB;
# the log fallback takes the last 80 lines, at most 2 KiB.
MAX_TERMINATION_MESSAGE_BYTES = 4096
FALLBACK_LOG_LINES = 80
FALLBACK_LOG_BYTES = 2048


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


def exit_code_of(returncode: int) -> int:
    """A container runtime's exit code: a process killed by signal N exits ``128 + N``."""
    return 128 - returncode if returncode < 0 else returncode


def timestamp() -> str:
    """The time as API timestamps have it (seconds, UTC)."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def micro_timestamp() -> str:
    """The time as a MicroTime (Lease times)."""
    # Lease times are MicroTime, which insists on the fractional part.
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class ContainerState(Protocol):
    """What the Pod-level rules read of a container (``containers.Container``)."""

    done: bool
    exit_code: int | None
    restart_at: float | None
    restart_count: int

    @property
    def running(self) -> bool: ...

    def status(self, pod_terminal: bool) -> dict[str, Any]: ...


def pod_phase(
    inits: Sequence[ContainerState], mains: Sequence[ContainerState], deadline_exceeded: bool
) -> str:
    """The Pod's phase from its init and main containers, as the kubelet derives it."""
    if deadline_exceeded and all(c.done for c in [*inits, *mains]):
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


class Conditions:
    """A Pod's conditions; a condition keeps its ``lastTransitionTime`` until its status
    changes."""

    def __init__(self) -> None:
        self._by_type: dict[str, dict[str, Any]] = {}

    def get(self, kind: str, ok: bool, reason: str = "") -> dict[str, Any]:
        """The condition ``kind`` with status ``ok``, new only if the status changed."""
        status = "True" if ok else "False"
        previous = self._by_type.get(kind)
        if previous is not None and previous["status"] == status:
            return previous
        condition: dict[str, Any] = {
            "type": kind,
            "status": status,
            "lastProbeTime": None,
            "lastTransitionTime": timestamp(),
        }
        if reason:
            condition["reason"] = reason
        self._by_type[kind] = condition
        return condition


def pod_status(
    inits: Sequence[ContainerState],
    mains: Sequence[ContainerState],
    conditions: Conditions,
    *,
    start_time: str,
    deadline_exceeded: bool,
) -> dict[str, Any]:
    """The Pod's ``status`` (for a strategic merge patch: conditions merge by type)."""
    phase = pod_phase(inits, mains, deadline_exceeded)
    terminal = phase in ("Succeeded", "Failed")
    initialized = all(c.done and c.exit_code == 0 for c in inits)
    ready = not terminal and all(c.running for c in mains)
    not_ready = "PodCompleted" if terminal else "ContainersNotReady"
    status: dict[str, Any] = {
        "phase": phase,
        "hostIP": LOOPBACK,
        "hostIPs": [{"ip": LOOPBACK}],
        "podIP": LOOPBACK,
        "podIPs": [{"ip": LOOPBACK}],
        "startTime": start_time,
        "conditions": [
            conditions.get(
                "Initialized", initialized, "" if initialized else "ContainersNotInitialized"
            ),
            conditions.get("ContainersReady", ready, "" if ready else not_ready),
            conditions.get("Ready", ready, "" if ready else not_ready),
        ],
        "containerStatuses": [c.status(terminal) for c in mains],
    }
    if inits:
        status["initContainerStatuses"] = [c.status(terminal) for c in inits]
    if deadline_exceeded:
        status["reason"] = "DeadlineExceeded"
        status["message"] = "Pod was active on the node longer than the specified deadline"
    return status
