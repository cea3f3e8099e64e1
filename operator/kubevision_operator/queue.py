"""The global concurrency limit (design notes §7): extra ModelVersions wait, ordered by
(creationTimestamp, namespace, name). Pure: the operator keeps the entries and asks."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass

Key = tuple[str, str]


@dataclass(frozen=True)
class Entry:
    """What the queue needs to know of one ModelVersion.

    Attributes:
        created: its metadata.creationTimestamp (RFC 3339, so strings sort in time order).
        namespace, name: its key.
        admitted: it has a Job that the limit let run.
        finished: Succeeded or Failed.
        kueue: it names a Kueue queue; Kueue decides instead.
    """

    created: str
    namespace: str
    name: str
    admitted: bool = False
    finished: bool = False
    kueue: bool = False


def positions(entries: Iterable[Entry], limit: int) -> dict[Key, int]:
    """Position (from 1) of every ModelVersion that must wait now; those absent may run.

    With ``limit`` 0 nothing waits. Running ones count against the limit until they finish;
    the oldest waiting ones take the free places."""
    if limit <= 0:
        return {}
    entries = list(entries)
    active = sum(1 for e in entries if e.admitted and not e.finished and not e.kueue)
    waiting = sorted(
        (e for e in entries if not e.admitted and not e.finished and not e.kueue),
        key=lambda e: (e.created, e.namespace, e.name),
    )
    free = max(0, limit - active)
    return {(e.namespace, e.name): i + 1 for i, e in enumerate(waiting[free:])}


class Queue:
    """The operator's entries, safe to share between handler threads."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._entries: dict[Key, Entry] = {}
        self._lock = threading.Lock()

    def update(self, entry: Entry) -> None:
        """Record the latest state of one ModelVersion."""
        with self._lock:
            self._entries[(entry.namespace, entry.name)] = entry

    def remove(self, key: Key) -> None:
        """Forget a deleted ModelVersion."""
        with self._lock:
            self._entries.pop(key, None)

    def position(self, key: Key) -> int | None:
        """Where ``key`` waits (from 1), or None when it may run."""
        with self._lock:
            return positions(self._entries.values(), self.limit).get(key)

    def waiting(self) -> list[Key]:
        """The waiting ModelVersions in queue order."""
        with self._lock:
            table = positions(self._entries.values(), self.limit)
        return sorted(table, key=lambda k: table[k])

    def next_admissible(self) -> list[Key]:
        """ModelVersions that may start now but have not: to be reconciled after a finish."""
        with self._lock:
            table = positions(self._entries.values(), self.limit)
            return [
                key
                for key, e in self._entries.items()
                if not e.admitted and not e.finished and not e.kueue and key not in table
            ]
