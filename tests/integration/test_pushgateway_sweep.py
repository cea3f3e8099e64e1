"""The operator sweeps the trainers' groups off the real Pushgateway: a deleted ModelVersion's
group and a re-created one's old group go at the next sweep, a finished training's group once
its retention has passed, and a running training's group stays. Trainings run the stub trainer
on the node agent; the groups are pushed as a trainer pushes them
(``kubevision_trainer.report.prometheus``)."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from kubevision_operator import pushgateway
from kubevision_trainer.report.prometheus import PrometheusReporter
from testenv.controlplane import ControlPlane
from testenv.operator_helpers import apply, condition, get, mv_path, running_operator, wait_for
from testenv.scale import stub_trainer, workload
from tests.integration import services

pytestmark = pytest.mark.slow

RETENTION_S = 8


def _push(url: str, namespace: str, name: str, run: str, ok: bool | None) -> None:
    reporter = PrometheusReporter(
        namespace=namespace, view="digits", modelversion=name, run=run, pushgateway_url=url
    )
    if ok is None:
        assert reporter.push()
    else:
        reporter.close(ok)


def _runs(url: str, namespace: str) -> set[tuple[str, str]]:
    return {(g.modelversion, g.run) for g in pushgateway.groups(url) if g.namespace == namespace}


def test_the_operator_sweeps_groups_that_had_their_day(
    crds: ControlPlane,
    namespace: str,
    node_agent: Any,
    pushgateway: services.Pushgateway,
    tmp_path: Path,
) -> None:
    node_agent(pods=5, cpu="16", memory="64Gi")
    apply(crds, workload.view_manifest(), namespace=namespace)
    url = pushgateway.url
    env = {
        "KUBEVISION_TRAINER_COMMAND_OVERRIDE": json.dumps(stub_trainer.command(pause=0.2)),
        "KUBEVISION_TRAINER_METRICS_PORT": "0",
        "KUBEVISION_PUSHGATEWAY_URL": url,
        "KUBEVISION_PUSHGATEWAY_SWEEP_SECONDS": "1",
        "KUBEVISION_PUSHGATEWAY_RETENTION_SECONDS": str(RETENTION_S),
        "KUBEVISION_NAMESPACES": namespace,
    }
    listing = workload.modelversion_list(2)
    finished, running = (item["metadata"]["name"] for item in listing["items"])
    # The second never starts (suspended): a training still on its way keeps its group.
    listing["items"][1]["spec"]["runPolicy"] = {"suspend": True}
    with running_operator(crds, tmp_path, **env):
        apply(crds, listing, namespace=namespace)

        def uid_of(name: str) -> str | None:
            obj = get(crds, mv_path(namespace, name))
            return obj["metadata"]["uid"] if obj else None

        def succeeded() -> bool:
            cond = condition(get(crds, mv_path(namespace, finished)), "Succeeded")
            return cond is not None and cond["status"] == "True"

        wait_for("the first training to succeed", succeeded, 120)
        done_uid, running_uid = uid_of(finished), uid_of(running)
        assert done_uid and running_uid
        _push(url, namespace, finished, done_uid, ok=True)
        _push(url, namespace, running, running_uid, ok=None)
        _push(url, namespace, running, "uid-of-a-deleted-namesake", ok=False)
        _push(url, namespace, "gone", "uid-gone", ok=True)
        pushed = time.monotonic()

        wait_for(
            "the deleted and re-created ModelVersions' groups to go",
            lambda: _runs(url, namespace) == {(finished, done_uid), (running, running_uid)},
            30,
        )
        wait_for(
            "the finished training's group to go after its retention",
            lambda: _runs(url, namespace) == {(running, running_uid)},
            RETENTION_S + 30,
        )
        # Retention counts from the training's completionTime (whole seconds), not from the
        # push, which may come later on a loaded machine.
        obj = get(crds, mv_path(namespace, finished))
        assert obj is not None
        completed = obj["status"]["completionTime"]
        since = (datetime.now(UTC) - datetime.fromisoformat(completed)).total_seconds()
        assert since >= RETENTION_S - 1, (since, time.monotonic() - pushed)
        time.sleep(2)
        assert _runs(url, namespace) == {(running, running_uid)}
