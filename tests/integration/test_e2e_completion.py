"""A finished version stays finished (docs/operator-status.md): a Succeeded ModelVersion whose
Job its TTL removed loses its status, by hand while the operator runs and in a restore
without status while it is down; both times the status comes back Succeeded with the same
metrics and checkpoint, from the annotation ``kubevision.dev/completion``, and no Job is
created again."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from kubevision_operator import completion
from testenv.operator_helpers import wait_for
from tests.integration import e2e_helpers as h
from tests.integration.e2e_helpers import e2e  # noqa: F401  (fixture)

pytestmark = pytest.mark.slow

#: Seconds without a Job after a restore that count as "none created" (a reconcile acts
#: within a second of the watch event; the operator's resync of 10 s is inside).
NO_JOB_S = 12


def _kept(obj: dict[str, Any]) -> dict[str, Any]:
    """What a restored status must give back as it was."""
    status = obj["status"]
    return {
        "conditions": [(c["type"], c["status"], c["reason"]) for c in status["conditions"]],
        "metrics": status["metrics"],
        "checkpoint": status["checkpoint"],
        "attempts": status.get("attempts"),
        "jobName": status["jobName"],
        "completionTime": status["completionTime"],
    }


def _wipe(env: h.E2E, name: str) -> dict[str, Any]:
    """Remove the status through the status subresource, as a user would
    (docs/operator-status.md); returns the object the API server answered."""
    done = env.cp.kubectl(
        "-n",
        env.namespace,
        "patch",
        "modelversion",
        name,
        "--subresource=status",
        "--type=merge",
        "-p",
        '{"status": null}',
        "-o",
        "json",
    )
    answered: dict[str, Any] = json.loads(done.stdout)
    assert not answered.get("status"), answered.get("status")
    return answered


def _restored(watcher: h.Watcher, wiped: dict[str, Any], what: str) -> dict[str, Any]:
    """The ModelVersion once a status with an outcome was written after the wipe."""
    after = int(wiped["metadata"]["resourceVersion"])
    return watcher.until(
        what,
        lambda o: h.outcome(o) is not None and int(o["metadata"]["resourceVersion"]) > after,
        timeout=60,
    )


def _restored_events(env: h.E2E, name: str) -> list[dict[str, Any]]:
    listing = env.cp.kubectl(
        "-n",
        env.namespace,
        "get",
        "events",
        "--field-selector",
        f"involvedObject.name={name},reason=StatusRestored",
        "-o",
        "json",
    )
    return list(json.loads(listing.stdout)["items"])


def _no_job_for(env: h.E2E, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert env.jobs() == [], [j["metadata"]["name"] for j in env.jobs()]
        time.sleep(0.5)


def test_a_finished_version_whose_status_is_lost_stays_finished(
    e2e: h.E2E,  # noqa: F811
    node_agent: Any,
) -> None:
    dataset = h.classification_dataset(e2e, per_class=6, prefix="wipe")
    name = "wipe-e2e"
    mv = h.modelversion(e2e, name, "wipe", epochs=1, run_policy={"ttlSecondsAfterFinished": 1})
    node_agent()
    watcher = h.Watcher(e2e, name)
    with e2e.operator() as operator:
        e2e.apply(e2e.secret(), h.view("wipe", dataset), mv)
        done = watcher.finished(timeout=600)
        assert h.outcome(done) == "Succeeded", json.dumps(done.get("status"), indent=1)
        wait_for("the Job removed by its TTL", lambda: e2e.jobs() == [], timeout=60)
        obj = e2e.get(name)
        assert obj is not None
        record = json.loads(obj["metadata"]["annotations"][completion.ANNOTATION])
        assert record["generation"] == obj["metadata"]["generation"]
        assert record["status"]["checkpoint"] == obj["status"]["checkpoint"]
        before = _kept(obj)
        assert before["checkpoint"]["uri"].endswith(f"runs/{name}/checkpoints/best.pt")

        # 1. Replaced by hand while the operator runs.
        wiped = _wipe(e2e, name)
        restored = _restored(watcher, wiped, "the status restored")
        assert _kept(restored) == before
        _no_job_for(e2e, NO_JOB_S)
        assert len(_restored_events(e2e, name)) == 1
        log = operator.log_text()
    assert log.count(f"created Job {e2e.namespace}/") == 1, log[-3000:]

    # 2. Lost while the operator is down (a restore from a backup without status).
    wiped = _wipe(e2e, name)
    with e2e.operator() as operator:
        restored = _restored(watcher, wiped, "the status restored by a starting operator")
        assert _kept(restored) == before
        _no_job_for(e2e, NO_JOB_S)
        # Both operators log to one file: one Job in all, the first.
        assert operator.log_text().count("created Job") == 1, operator.log_text()[-3000:]
    # The checkpoint the status names is the one in storage.
    assert e2e.read(f"runs/{name}/checkpoints/best.pt") is not None
