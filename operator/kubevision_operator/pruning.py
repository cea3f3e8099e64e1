"""What the API server dropped from the operator's status writes.

The API server prunes every field that the installed CRD's structural schema does not know,
and answers 200 (docs/crds.md): an outdated CRD loses the operator's status fields without an
error. Each status write's answer is the stored object, so comparing it with what was sent
names the dropped paths on the first write, on a real object (the start-up check reads the
schema; this sees what the API server does). It also ends a write loop: a status that the
API server prunes differs from the one the operator wants after every write, and each write's
watch event asks for another; a status whose stored form is what the last write left is not
written again.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Hashable, Mapping
from typing import Any

log = logging.getLogger(__name__)


def missing_paths(sent: Mapping[str, Any], stored: Mapping[str, Any], prefix: str) -> list[str]:
    """Field paths (``status.steps[].startedAt``) of ``sent`` that ``stored`` lacks, in
    ``sent``'s order: keys with a non-null value absent from ``stored``, recursively into
    objects and, pairwise, into lists of objects (list items as ``[]``, each path once).
    Values are not compared (the API server may format a time or a number anew)."""
    found: list[str] = []
    _walk(sent, stored, prefix, found)
    return list(dict.fromkeys(found))


def _walk(sent: Any, stored: Any, path: str, found: list[str]) -> None:
    if isinstance(sent, Mapping):
        if not isinstance(stored, Mapping):
            return
        for key, value in sent.items():
            if value is None:
                continue
            if key not in stored:
                found.append(f"{path}.{key}")
            else:
                _walk(value, stored[key], f"{path}.{key}", found)
    elif isinstance(sent, list) and isinstance(stored, list):
        for item, kept in zip(sent, stored, strict=False):
            _walk(item, kept, f"{path}[]", found)


class PrunedWrites:
    """The status writes of one operator whose answers lacked fields, by object key.

    Args:
        kind: the Kubernetes kind written (``ModelVersion``), for the log and metrics.
        count: ``count(kind, path)``, called with the first dropped path of each pruned
            write (a metric).
    """

    def __init__(self, kind: str, count: Callable[[str, str], None]) -> None:
        self.kind = kind
        self._count = count
        self._lock = threading.Lock()
        self._last: dict[Hashable, tuple[dict[str, Any], dict[str, Any]]] = {}
        self._told: set[tuple[str, ...]] = set()

    def check(
        self,
        key: Hashable,
        sent: dict[str, Any],
        stored: dict[str, Any],
        stored_as_read: dict[str, Any],
    ) -> list[str]:
        """Compare the status ``sent`` with the ``stored`` one the write answered; returns the
        dropped paths (:func:`missing_paths`), logged once per distinct set and counted.
        ``stored_as_read`` is ``stored`` as the reconcile reads it (parsed and written out
        again), which :meth:`unchanged` compares with."""
        paths = missing_paths(sent, stored, "status")
        with self._lock:
            if not paths:
                self._last.pop(key, None)
                return paths
            self._last[key] = (sent, stored_as_read)
            first = tuple(paths) not in self._told
            self._told.add(tuple(paths))
        self._count(self.kind, paths[0])
        if first:
            name = "/".join(map(str, key)) if isinstance(key, tuple) else str(key)
            log.warning(
                "the API server dropped %s from the status write of %s %s: the installed "
                "CRD's schema lacks them; apply the CRDs of this release (docs/crds.md)",
                ", ".join(paths),
                self.kind,
                name,
            )
        return paths

    def unchanged(self, key: Hashable, wanted: dict[str, Any], stored: dict[str, Any]) -> bool:
        """Whether the last write of ``key`` sent ``wanted`` and left ``stored``: writing it
        again would leave the same (pruned) status."""
        with self._lock:
            return self._last.get(key) == (wanted, stored)

    def forget(self, key: Hashable) -> None:
        """The object was deleted."""
        with self._lock:
            self._last.pop(key, None)
