"""Process trees of containers, read from ``/proc``: members, resident memory, signals."""

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
