"""The informer caches (``cache``): newest resourceVersion wins, also across incarnations;
the label index follows every change; a resync forgets what a fresh list lacks."""

from __future__ import annotations

from typing import Any

import pytest

from kubevision_operator.cache import Cache, Store, resource_version

LABEL = "batch.kubernetes.io/job-name"


def _obj(
    name: str, rv: int | str, *, ns: str = "a", uid: str = "u1", job: str | None = None
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": ns, "resourceVersion": str(rv), "uid": uid}
    if job is not None:
        meta["labels"] = {LABEL: job}
    return {"metadata": meta}


def test_newer_resource_version_wins_and_older_events_are_refused() -> None:
    store = Store("Job")
    assert store.put(_obj("j", 10))
    # A late watch event, older than the operator's own write-through: refused.
    assert not store.put(_obj("j", 9))
    assert resource_version(store.get("a", "j") or {}) == 10
    assert store.put(_obj("j", 10))  # the same version again (the echo of a write)
    assert store.put(_obj("j", 12))
    assert resource_version(store.get("a", "j") or {}) == 12
    # Revisions are global: the next incarnation (another uid) has a higher one; a late event
    # of the deleted one cannot replace it, and its deletion does not remove the new one.
    assert store.put(_obj("j", 20, uid="u2"))
    assert not store.put(_obj("j", 13, uid="u1"))
    store.delete("a", "j", uid="u1")
    assert (store.get("a", "j") or {})["metadata"]["uid"] == "u2"
    store.delete("a", "j", uid="u2")
    assert store.get("a", "j") is None and len(store) == 0


def test_label_index_follows_changes() -> None:
    pods = Store("Pod", index_label=LABEL)
    pods.put(_obj("p1", 1, job="j1"))
    pods.put(_obj("p2", 2, job="j1"))
    pods.put(_obj("p3", 3, job="j2"))
    pods.put(_obj("p4", 4, ns="b", job="j1"))
    assert [p["metadata"]["name"] for p in pods.by_label("a", "j1")] == ["p1", "p2"]
    pods.put(_obj("p2", 5, job="j2"))  # relabelled
    assert [p["metadata"]["name"] for p in pods.by_label("a", "j1")] == ["p1"]
    assert [p["metadata"]["name"] for p in pods.by_label("a", "j2")] == ["p2", "p3"]
    pods.delete("a", "p1")
    assert pods.by_label("a", "j1") == []
    assert [p["metadata"]["name"] for p in pods.by_label("b", "j1")] == ["p4"]
    with pytest.raises(ValueError, match="Job cache indexes no label"):
        Store("Job").by_label("a", "x")


def test_keep_only_forgets_what_a_fresh_list_lacks() -> None:
    store = Store("ModelVersion")
    for name, rv in (("gone", 5), ("kept", 6), ("newer", 30)):
        store.put(_obj(name, rv))
    store.put(_obj("other-ns", 7, ns="b"))
    # The list (at revision 20) lacks "gone" (deleted while no watch saw it) and "newer",
    # which was created after the list was made: only "gone" goes; namespace b is not listed.
    gone = store.keep_only([_obj("kept", 8), _obj("added", 9)], 20, "a")
    assert [o["metadata"]["name"] for o in gone] == ["gone"]
    assert [o["metadata"]["name"] for o in store.items("a")] == ["added", "kept", "newer"]
    assert resource_version(store.get("a", "kept") or {}) == 8
    assert store.get("b", "other-ns") is not None
    assert [o["metadata"]["name"] for o in store.items()] == ["added", "kept", "newer", "other-ns"]


def test_cache_is_unsynced_until_marked() -> None:
    cache = Cache(pod_index_label=LABEL)
    assert not cache.synced and not cache.wait_synced(0.01)
    cache.mark_synced()
    assert cache.synced and cache.wait_synced(0)
    assert cache.store("Pod") is cache.pods and cache.store("View") is cache.views
    with pytest.raises(KeyError):
        cache.store("Service")
