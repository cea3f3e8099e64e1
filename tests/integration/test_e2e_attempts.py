"""End to end, a training that needs a second attempt: the real trainer is SIGKILLed during
its second epoch (the Pod fails with exit code 137), the Job starts another Pod, which resumes
from ``last.pt`` and succeeds. The status keeps count of the attempts and the first one's
failure, the failure is a Warning event, and the progress never goes back while the second
attempt loads its dataset again."""

from __future__ import annotations

import json
import os
import signal
from typing import Any

import pytest

from testenv.operator_helpers import get
from tests.integration import e2e_helpers as h
from tests.integration.e2e_helpers import e2e  # noqa: F401  (fixture)

pytestmark = pytest.mark.slow


def _epoch(obj: dict[str, Any]) -> int:
    return int(((obj.get("status") or {}).get("progress") or {}).get("epoch") or 0)


def test_a_second_attempt_keeps_the_first_ones_failure(e2e: h.E2E, node_agent: Any) -> None:  # noqa: F811
    dataset = h.classification_dataset(e2e, per_class=10, prefix="attempts")
    name = "attempts-e2e"
    mv = h.modelversion(e2e, name, "attempts", epochs=3, run_policy={"backoffLimit": 2})
    agent = node_agent()
    watcher = h.Watcher(e2e, name)
    with e2e.operator():
        e2e.apply(e2e.secret(), h.view("attempts", dataset), mv)
        watcher.until("the first epoch in status", lambda obj: _epoch(obj) >= 1, timeout=600)
        pids = agent.pids()
        assert pids, "no trainer process"
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        seen: list[int] = []

        def finished(obj: dict[str, Any]) -> bool:
            seen.append(_epoch(obj))
            return h.outcome(obj) is not None

        obj = watcher.until("an outcome", finished, timeout=900)

    assert h.outcome(obj) == "Succeeded", json.dumps(obj.get("status"), indent=1)
    status = obj["status"]
    assert status["attempts"] == 2, status
    failure = status["lastFailure"]
    assert failure["attempt"] == 1 and failure["reason"] == "TrainerCrashed", failure
    assert failure["exitCode"] == 137 and "code 137" in failure["message"], failure
    # Progress never went below an epoch once shown, while the second Pod loaded again.
    assert seen == sorted(seen), seen
    assert seen[0] >= 1 and status["progress"]["epoch"] == 3
    events = get(e2e.cp, f"/api/v1/namespaces/{e2e.namespace}/events") or {}
    warnings = [
        (ev["reason"], ev["message"])
        for ev in events.get("items", [])
        if ev["involvedObject"].get("name") == name and ev["type"] == "Warning"
    ]
    assert ("TrainerCrashed", f"Attempt 1 failed: {failure['message']}") in warnings, warnings
