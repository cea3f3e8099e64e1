"""The concurrency queue (docs/operator.md, The concurrency queue): order, the place a
ModelVersion told it may run holds, registration in watch order, and which positions went out
of date."""

from __future__ import annotations

import threading

from kubevision_operator.queue import Entry, Queue, entry_of, positions

T0, T1 = "2024-05-01T10:00:00Z", "2024-05-01T10:00:01Z"


def entry(name: str, created: str = T0, namespace: str = "ns", **kw: bool) -> Entry:
    return Entry(created=created, namespace=namespace, name=name, **kw)


def test_order_is_creation_time_then_namespace_then_name() -> None:
    entries = [
        entry("b", T1, "a"),
        entry("b", T0, "b"),
        entry("a", T0, "b"),
        entry("z", T0, "a"),
    ]
    assert positions(entries, 1) == {("b", "a"): 1, ("b", "b"): 2, ("a", "b"): 3}
    assert positions(entries, 0) == {}


def test_running_ones_count_until_finished_and_kueue_never() -> None:
    entries = [
        entry("run", admitted=True),
        entry("done", admitted=True, finished=True),
        entry("kueue", kueue=True),
        entry("a", T1),
        entry("b", T1),
    ]
    assert positions(entries, 2) == {("ns", "b"): 1}


def test_a_place_told_is_held_until_the_next_update() -> None:
    queue = Queue(1)
    queue.update(entry("b", T1))
    assert queue.position(("ns", "b")) is None
    # An older ModelVersion seen only now waits: "b" took the place on another thread.
    queue.update(entry("a", T0))
    assert queue.position(("ns", "a")) == 1
    # "b"'s next reconcile finds no Job (its View is missing, say): the place is free again.
    queue.update(entry("b", T1))
    assert queue.position(("ns", "a")) is None
    assert queue.position(("ns", "b")) == 1


def test_the_last_place_goes_to_one_of_many_racing_threads() -> None:
    queue = Queue(3)
    names = [f"mv-{i:02d}" for i in range(30)]
    for name in names:
        queue.update(entry(name))
    admitted: list[str] = []
    barrier = threading.Barrier(len(names))

    def ask(name: str) -> None:
        barrier.wait()
        if queue.position(("ns", name)) is None:
            admitted.append(name)

    threads = [threading.Thread(target=ask, args=(n,)) for n in names]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(admitted) == names[:3]


def test_register_keeps_what_is_known() -> None:
    queue = Queue(1)
    queue.update(entry("a", admitted=True))
    queue.register(entry("a"))
    queue.register(entry("b"))
    assert queue.waiting() == [("ns", "b")]


def test_moved_names_the_positions_that_halved() -> None:
    queue = Queue(1)
    names = [f"m{i}" for i in range(6)]
    for name in names:
        queue.update(entry(name, created=f"2026-01-01T00:00:0{name[1]}Z"))
    assert [queue.position(("ns", n)) for n in names] == [None, 1, 2, 3, 4, 5]
    assert queue.moved() == []
    queue.update(entry("m0", admitted=True, finished=True))
    # "m1" may run now (next_admissible); each other moved up by one: only "m2" (2 -> 1)
    # halved its position.
    assert queue.next_admissible() == [("ns", "m1")]
    assert queue.table() == {("ns", n): i for i, n in enumerate(names[2:], 1)}
    assert queue.moved() == [("ns", "m2")]
    assert queue.position(("ns", "m2")) == 1
    assert queue.moved() == []
    for gone in ("m1", "m2"):
        queue.update(entry(gone, admitted=True, finished=True))
    # The place is free again: "m3" (told 3) may run; "m4" (4 -> 1) and "m5" (5 -> 2) halved.
    assert queue.table() == {("ns", "m4"): 1, ("ns", "m5"): 2}
    assert queue.moved() == [("ns", "m4"), ("ns", "m5")]
    queue.remove(("ns", "m4"))
    queue.remove(("ns", "m5"))
    assert queue.moved() == []


def test_entry_of_a_modelversion() -> None:
    obj = {
        "metadata": {"name": "m", "namespace": "ns", "creationTimestamp": T0},
        "spec": {"runPolicy": {"queueName": "q"}},
        "status": {
            "jobName": "kv-m",
            "conditions": [{"type": "Succeeded", "status": "True"}],
        },
    }
    assert entry_of(obj) == Entry(T0, "ns", "m", admitted=True, finished=True, kueue=True)
    assert entry_of({"metadata": {"name": "m", "namespace": "ns"}}) == Entry("", "ns", "m")


def test_entry_of_with_what_the_reconcile_found() -> None:
    """The reconcile knows whether the Job exists and whether the training can start: those
    override what the stored status and the user's suspend say."""
    obj = {
        "metadata": {"name": "m", "namespace": "ns", "creationTimestamp": T0},
        "spec": {"runPolicy": {"suspend": True}},
        "status": {"jobName": "kv-m"},
    }
    assert entry_of(obj) == Entry(T0, "ns", "m", admitted=True, held=True)
    assert entry_of(obj, admitted=False, held=False) == Entry(T0, "ns", "m")
    assert entry_of({**obj, "spec": {}, "status": {}}, admitted=True, held=True) == Entry(
        T0, "ns", "m", admitted=True, held=True
    )


def test_held_entries_neither_count_nor_wait() -> None:
    """A ModelVersion whose View is missing, or that its user suspended, must not take the
    place of the next one in line."""
    entries = [
        Entry("2026-01-01T00:00:00Z", "ns", "a", held=True),
        Entry("2026-01-01T00:00:01Z", "ns", "b"),
        Entry("2026-01-01T00:00:02Z", "ns", "c", admitted=True, held=True),
        Entry("2026-01-01T00:00:03Z", "ns", "d"),
    ]
    assert positions(entries, limit=1) == {("ns", "d"): 1}


def test_update_says_when_a_place_is_freed() -> None:
    queue = Queue(1)
    running = Entry("2026-01-01T00:00:00Z", "ns", "a", admitted=True)
    assert queue.update(running) is False
    # The outcome is known but the Job still runs (a sidecar): the place stays held.
    assert queue.update(running) is False
    assert queue.update(Entry("2026-01-01T00:00:00Z", "ns", "a", admitted=True, finished=True))
    # Told once only.
    assert not queue.update(Entry("2026-01-01T00:00:00Z", "ns", "a", admitted=True, finished=True))


def test_entry_of_takes_the_reconciles_word_for_finished() -> None:
    obj = {
        "metadata": {"namespace": "ns", "name": "a", "creationTimestamp": "t"},
        "status": {"conditions": [{"type": "Succeeded", "status": "True"}], "jobName": "kv-a"},
    }
    assert entry_of(obj).finished is True
    assert entry_of(obj, finished=False).finished is False
