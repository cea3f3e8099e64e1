"""The global concurrency limit (docs/operator.md, The concurrency queue): extra
ModelVersions wait, ordered by (creationTimestamp, namespace, name). No I/O: the operator keeps
the entries here and asks."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

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
        held: it cannot use a place now (the user suspended it, or its View or plan is
            missing): it neither counts against the limit nor waits in line.
    """

    created: str
    namespace: str
    name: str
    admitted: bool = False
    finished: bool = False
    kueue: bool = False
    held: bool = False


def entry_of(
    obj: Mapping[str, Any],
    *,
    admitted: bool | None = None,
    held: bool | None = None,
    finished: bool | None = None,
) -> Entry:
    """The entry of a ModelVersion as the API server holds it.

    Args:
        obj: the ModelVersion.
        admitted: whether it has a Job; None (the operator has not looked for its Job yet):
            when its status names one.
        held: whether it cannot use a place now; None: its user's ``runPolicy.suspend``.
        finished: whether its place is free for good; None: when its status says Succeeded
            or Failed. The reconcile knows better: a training whose outcome is known holds
            its place until its Job has ended too (its Pod still holds the resources).
    """
    meta, spec = obj["metadata"], obj.get("spec") or {}
    status = obj.get("status") or {}
    policy = spec.get("runPolicy") or {}
    return Entry(
        created=str(meta.get("creationTimestamp", "")),
        namespace=meta["namespace"],
        name=meta["name"],
        admitted=bool(status.get("jobName")) if admitted is None else admitted,
        finished=any(
            c.get("type") in ("Succeeded", "Failed") and c.get("status") == "True"
            for c in status.get("conditions") or []
        )
        if finished is None
        else finished,
        kueue=bool(policy.get("queueName")),
        held=bool(policy.get("suspend")) if held is None else held,
    )


def positions(entries: Iterable[Entry], limit: int) -> dict[Key, int]:
    """Position (from 1) of every ModelVersion that must wait now; those absent may run.

    With ``limit`` 0 nothing waits. Running ones count against the limit until they finish;
    the oldest waiting ones take the free places."""
    if limit <= 0:
        return {}
    entries = list(entries)
    active = sum(1 for e in entries if e.admitted and not e.finished and not e.kueue and not e.held)
    waiting = sorted(
        (e for e in entries if not e.admitted and not e.finished and not e.kueue and not e.held),
        key=lambda e: (e.created, e.namespace, e.name),
    )
    free = max(0, limit - active)
    return {(e.namespace, e.name): i + 1 for i, e in enumerate(waiting[free:])}


class Queue:
    """The operator's entries, safe to share between handler threads."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._entries: dict[Key, Entry] = {}
        #: The position each key was last told by :meth:`position` (None: it may run).
        self._told: dict[Key, int | None] = {}
        self._lock = threading.Lock()

    def update(self, entry: Entry) -> bool:
        """Record the latest state of one ModelVersion; returns whether this update freed a
        place (the entry went from unfinished to finished)."""
        key = (entry.namespace, entry.name)
        with self._lock:
            before = self._entries.get(key)
            self._entries[key] = entry
        return entry.finished and (before is None or not before.finished)

    def register(self, entry: Entry) -> None:
        """Record a ModelVersion the operator has not reconciled yet; an entry it holds
        already stays (it knows more). Called as watch events arrive, in creation order, so
        that a ModelVersion reconciled early on another thread does not pass older ones."""
        with self._lock:
            self._entries.setdefault((entry.namespace, entry.name), entry)

    def remove(self, key: Key) -> None:
        """Forget a deleted ModelVersion."""
        with self._lock:
            self._entries.pop(key, None)
            self._told.pop(key, None)

    def position(self, key: Key) -> int | None:
        """Where ``key`` waits (from 1), or None when it may run.

        A ModelVersion told that it may run holds its place from then on (it counts as
        admitted) until its next :meth:`update`, which says whether it got its Job: two
        ModelVersions reconciled at once on two threads cannot both take the last place."""
        with self._lock:
            found = positions(self._entries.values(), self.limit).get(key)
            self._told[key] = found
            entry = self._entries.get(key)
            if (
                found is None
                and entry is not None
                and not (entry.admitted or entry.finished or entry.kueue or entry.held)
            ):
                self._entries[key] = replace(entry, admitted=True)
            return found

    def moved(self) -> list[Key]:
        """Waiting ModelVersions, in queue order, whose position is at most half the one
        :meth:`position` last told them: the position in their status is worth rewriting.

        Exact positions in every status would cost one status patch per waiting ModelVersion
        per admission, N²/2 for N ModelVersions (~150 per ModelVersion at 300, docs/scale.md);
        halving costs about log2(N) at most per ModelVersion, and a status never shows more
        than twice the true position (the exact one is a metric, free at each scrape)."""
        with self._lock:
            table = positions(self._entries.values(), self.limit)
            return [
                key
                for key in sorted(table, key=lambda k: table[k])
                if self._told.get(key) is not None and table[key] * 2 <= (self._told[key] or 0)
            ]

    def table(self) -> dict[Key, int]:
        """Every waiting ModelVersion's position (from 1), exact now."""
        with self._lock:
            return positions(self._entries.values(), self.limit)

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
                if not e.admitted
                and not e.finished
                and not e.kueue
                and not e.held
                and key not in table
            ]
