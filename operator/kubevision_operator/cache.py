"""What the watches delivered: the operator's informer caches (docs/scale.md, Reads from the
watches).

kopf watches ModelVersions, Views and the operator's Jobs and Pods; its handlers put every
object they see here, and the reconciler reads from here instead of the API server. A
:class:`Store` holds one kind by namespace and name, and (for Pods) by the value of one label,
so a Job's Pods are one lookup. Each object is replaced only by a newer one: resourceVersions
are compared as integers (etcd's revisions, which the API server's resourceVersions are in
every release; KEP-5504 makes the comparison official), so a watch event that is older than
the operator's own write, whose answer was put here first (write-through), cannot take the
cache back.

:class:`Cache` also says whether the caches are **synced**: kopf runs the index handlers of
every object of its initial listings before it runs any other handler (kopf's docs,
"Indexing": handlers wait until all indices are populated), so the first watch handler that
runs marks the caches full. Nothing is decided before: no reconcile acts on a half-filled
cache (a restarted operator would admit out of queue order, or twice).

Thread-safe: handlers write on the event loop, reconciles read on their threads.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any

Obj = dict[str, Any]
Key = tuple[str, str]


def resource_version(obj: Obj) -> int | None:
    """The object's ``metadata.resourceVersion`` as an integer; None when absent or not an
    integer (then the newest arrival wins)."""
    value = (obj.get("metadata") or {}).get("resourceVersion")
    try:
        return int(str(value))
    except ValueError:
        return None


def _key(obj: Obj) -> Key:
    meta = obj["metadata"]
    return (str(meta.get("namespace") or ""), str(meta["name"]))


def is_newer(new: Obj, old: Obj | None) -> bool:
    """Whether ``new`` may replace ``old``: a resourceVersion at least as high (equal: the same
    version, maybe from another source). Revisions are global, so this holds across
    incarnations too: a late event of a deleted Job cannot replace the Job created again under
    its name."""
    if old is None:
        return True
    new_rv, old_rv = resource_version(new), resource_version(old)
    return new_rv is None or old_rv is None or new_rv >= old_rv


class Store:
    """One kind's objects, by (namespace, name), and by the value of ``index_label``.

    Args:
        kind: the kind, for messages (``"Pod"``).
        index_label: a label whose value indexes the objects (``job-name`` for Pods).
    """

    def __init__(self, kind: str, index_label: str | None = None) -> None:
        self.kind = kind
        self.index_label = index_label
        self._objects: dict[Key, Obj] = {}
        #: (namespace, label value) -> names of the objects carrying it.
        self._by_label: dict[Key, set[str]] = {}
        self._lock = threading.Lock()

    def _label(self, obj: Obj | None) -> str | None:
        if obj is None or self.index_label is None:
            return None
        value = ((obj.get("metadata") or {}).get("labels") or {}).get(self.index_label)
        return str(value) if value is not None else None

    def _unindex(self, key: Key, obj: Obj | None) -> None:
        label = self._label(obj)
        if label is not None:
            names = self._by_label.get((key[0], label))
            if names is not None:
                names.discard(key[1])
                if not names:
                    del self._by_label[(key[0], label)]

    def put(self, obj: Obj) -> bool:
        """Keep ``obj`` unless the store holds a newer version of it; True when kept."""
        key = _key(obj)
        with self._lock:
            old = self._objects.get(key)
            if not is_newer(obj, old):
                return False
            self._unindex(key, old)
            self._objects[key] = obj
            label = self._label(obj)
            if label is not None:
                self._by_label.setdefault((key[0], label), set()).add(key[1])
        return True

    def delete(self, namespace: str, name: str, uid: str | None = None) -> None:
        """Forget an object the watch showed deleted; with ``uid``, only that incarnation (a
        Job deleted for a gang restart and created again under its name is another object)."""
        key = (namespace, name)
        with self._lock:
            old = self._objects.get(key)
            if old is None or (uid is not None and old["metadata"].get("uid") != uid):
                return
            del self._objects[key]
            self._unindex(key, old)

    def get(self, namespace: str, name: str) -> Obj | None:
        """The object, or None when the watch has not shown it (or showed it deleted)."""
        with self._lock:
            return self._objects.get((namespace, name))

    def items(self, namespace: str | None = None) -> list[Obj]:
        """The objects of one namespace, or of every one (None), in name order."""
        with self._lock:
            return [
                obj
                for key, obj in sorted(self._objects.items())
                if namespace is None or key[0] == namespace
            ]

    def by_label(self, namespace: str, value: str) -> list[Obj]:
        """The objects of ``namespace`` whose ``index_label`` is ``value``.

        Raises:
            ValueError: the store indexes no label.
        """
        if self.index_label is None:
            raise ValueError(f"the {self.kind} cache indexes no label")
        with self._lock:
            names = sorted(self._by_label.get((namespace, value), ()))
            return [self._objects[(namespace, name)] for name in names]

    def keep_only(
        self, listed: Iterable[Obj], listed_version: int | None, namespace: str | None
    ) -> list[Obj]:
        """A fresh list of the kind in ``namespace`` (None: all): forget the objects there that
        it lacks and that are older than the list (deleted while no watch saw them: kopf
        lists again after a lost watch, and a list shows no deletions), and keep what it shows.
        Returns the objects forgotten."""
        listed = list(listed)
        present = {_key(obj) for obj in listed}
        gone = []
        with self._lock:
            for key, obj in list(self._objects.items()):
                if namespace is not None and key[0] != namespace:
                    continue
                version = resource_version(obj)
                if key in present or (
                    listed_version is not None and version is not None and version > listed_version
                ):
                    continue
                del self._objects[key]
                self._unindex(key, obj)
                gone.append(obj)
        for obj in listed:
            self.put(obj)
        return gone

    def __len__(self) -> int:
        with self._lock:
            return len(self._objects)


class Cache:
    """The four caches of the operator, and whether they are synced."""

    def __init__(self, pod_index_label: str) -> None:
        self.modelversions = Store("ModelVersion")
        self.views = Store("View")
        self.jobs = Store("Job")
        self.pods = Store("Pod", index_label=pod_index_label)
        self._synced = threading.Event()

    def store(self, kind: str) -> Store:
        """The store of ``kind`` (``ModelVersion``, ``View``, ``Job``, ``Pod``).

        Raises:
            KeyError: another kind.
        """
        return {store.kind: store for store in self.stores()}[kind]

    def stores(self) -> tuple[Store, ...]:
        """The four stores: ModelVersions, Views, Jobs, Pods."""
        return (self.modelversions, self.views, self.jobs, self.pods)

    @property
    def synced(self) -> bool:
        """Whether every initial listing is in (:meth:`mark_synced` has run)."""
        return self._synced.is_set()

    def mark_synced(self) -> None:
        """kopf ran a watch handler: its initial listings are all in the caches."""
        self._synced.set()

    def wait_synced(self, timeout: float | None = None) -> bool:
        """Block until synced (or ``timeout`` seconds); returns whether it is."""
        return self._synced.wait(timeout)
