"""Which trainer groups on the Pushgateway the operator deletes (``pushgateway.stale``)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from kubevision_operator.pushgateway import Group, Known, stale

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


def test_stale_groups_and_why() -> None:
    groups = [
        Group("ns", "running", "uid-1"),
        Group("ns", "deleted", "uid-2"),
        Group("ns", "recreated", "uid-old"),
        Group("ns", "recent", "uid-4"),
        Group("ns", "old", "uid-5"),
    ]
    known = {
        ("ns", "running"): Known("uid-1", None),
        ("ns", "recreated"): Known("uid-new", None),
        ("ns", "recent"): Known("uid-4", NOW - timedelta(seconds=50)),
        ("ns", "old"): Known("uid-5", NOW - timedelta(seconds=61)),
    }
    assert stale(groups, known, NOW, retention_seconds=60) == [
        (Group("ns", "deleted", "uid-2"), "the ModelVersion was deleted"),
        (Group("ns", "recreated", "uid-old"), "the ModelVersion was re-created (uid uid-new)"),
        (Group("ns", "old", "uid-5"), "the training finished over 60 s ago"),
    ]
    # Retention 0: a finished training's group goes at the next sweep.
    assert [g.modelversion for g, _ in stale(groups, known, NOW, 0)] == [
        "deleted",
        "recreated",
        "recent",
        "old",
    ]
