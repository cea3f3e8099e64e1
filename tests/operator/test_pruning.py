"""Naming what the API server dropped from a status write (kubevision_operator.pruning)."""

from __future__ import annotations

from typing import Any

import pytest

from kubevision_operator.pruning import PrunedWrites, missing_paths

SENT: dict[str, Any] = {
    "phase": "Running",
    "message": None,
    "conditions": [{"type": "Running", "status": "True", "reason": "Training"}],
    "steps": [{"name": "Training", "state": "Running", "startedAt": "2026-12-07T00:00:00Z"}],
    "lastReport": {"pod": "p", "sequence": 3},
    "progress": {"percent": 40, "epoch": 1},
}


def test_missing_paths_names_dropped_fields_at_any_depth() -> None:
    stored = {
        "phase": "Running",
        "conditions": [{"type": "Running", "status": "True", "reason": "Training"}],
        "steps": [{"name": "Training", "state": "Running"}],
        "progress": {"percent": 40.0},
    }
    assert missing_paths(SENT, stored, "status") == [
        "status.steps[].startedAt",
        "status.lastReport",
        "status.progress.epoch",
    ]
    # Nothing dropped (values are not compared; a null sent is no field).
    assert missing_paths(SENT, {**SENT, "progress": {"percent": 41, "epoch": 1}}, "status") == []


def test_a_pruned_status_is_not_written_again_until_something_changes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    counted: list[tuple[str, str]] = []
    pruned = PrunedWrites("ModelVersion", lambda kind, path: counted.append((kind, path)))
    key = ("ns", "a")
    stored = {"phase": "Running"}
    paths = pruned.check(key, SENT, stored, stored)
    assert paths[0] == "status.conditions" and "status.steps" in paths
    assert counted == [("ModelVersion", "status.conditions")]
    assert "status.conditions, status.steps" in caplog.text
    assert pruned.unchanged(key, SENT, stored)
    assert not pruned.unchanged(key, {**SENT, "phase": "Succeeded"}, stored)
    assert not pruned.unchanged(key, SENT, {"phase": "Pending"})
    # The same set is logged once; a write that keeps everything clears the memory.
    caplog.clear()
    pruned.check(key, SENT, stored, stored)
    assert "dropped" not in caplog.text and len(counted) == 2
    assert pruned.check(key, SENT, SENT, SENT) == []
    assert not pruned.unchanged(key, SENT, stored)
