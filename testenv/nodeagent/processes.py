"""Process trees of containers, read from ``/proc``: members, resident memory, signals.

A container is a PID namespace on a real node: when its main process dies, every process in
it dies, and only the main process gets the SIGTERM of a graceful stop (torchrun forwards it to
its workers itself). Here each run of a container carries :data:`MEMBER_ENV` in its
environment, which its descendants inherit even when they start a session of their own (as
torchrun's workers do) or are orphaned: :func:`members` finds them all by it."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
from pathlib import Path

#: How long to wait for a killed process, or a stopping thread, to finish.
JOIN_TIMEOUT_S = 10.0
SETPRIV = shutil.which("setpriv")
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
#: Environment variable naming the container run a process belongs to (inherited).
MEMBER_ENV = "KUBEVISION_NODE_AGENT_CONTAINER"


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


def signal_tree(pid: int, sig: signal.Signals) -> None:
    """Signal ``pid``'s process group and every descendant (also those that left the group)."""
    members = process_tree(pid)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
    for member in members:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(member, sig)


def members(marker: str) -> list[int]:
    """PIDs of the live processes whose environment has ``MEMBER_ENV=marker`` (a container
    run's processes, wherever they were reparented); those of other users are not readable
    and not listed."""
    needle = f"{MEMBER_ENV}={marker}".encode()
    found: list[int] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            environ = Path(f"/proc/{entry}/environ").read_bytes()
        except OSError:
            continue
        if needle in environ.split(b"\0"):
            found.append(int(entry))
    return found


def kill_members(marker: str) -> None:
    """SIGKILL every process of a container run (its PID namespace going away)."""
    for pid in members(marker):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
