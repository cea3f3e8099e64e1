"""The operator's informer caches against the real control plane (docs/scale.md, Reads from
the watches):

- a restarted operator decides nothing before its caches are full: restarted while 100
  ModelVersions wait behind 5 running trainings, it creates no Job out of queue order and
  none twice, and never more than 5 run;
- the caches resynchronise after the API server itself restarts (every connection of the
  operator breaks, its watches' resourceVersions may be gone): a ModelVersion applied
  afterwards gets its Job within the watch's client timeout plus a few seconds;
- a resync forgets an object deleted while no watch saw it.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from kubernetes import config

from kubevision_operator.cache import Cache
from kubevision_operator.housekeeping import Housekeeping
from kubevision_operator.kube import Kube
from kubevision_operator.metrics import OperatorMetrics
from kubevision_operator.queue import Queue
from kubevision_operator.reconcile import Reconciler
from kubevision_operator.reports import Reports
from kubevision_operator.settings import OperatorSettings
from testenv import controlplane
from testenv.controlplane import ControlPlane
from testenv.nodeagent import NodeAgent
from testenv.operator_helpers import (
    Operator,
    apply,
    install_crds,
    job_exists,
    stop_cleanly,
    succeeded,
    wait_for,
)
from testenv.scale import figures, stub_trainer, workload
from testenv.scale.recorder import Recorder

pytestmark = pytest.mark.slow

LIMIT = 5
WAITING = 100
WATCH_SERVER_TIMEOUT_S = 10
WATCH_CLIENT_TIMEOUT_S = 12


def _env(**extra: str) -> dict[str, str]:
    return {
        **workload.operator_env(LIMIT),
        # Trainings long enough that the restart falls while five of them run.
        "KUBEVISION_TRAINER_COMMAND_OVERRIDE": json.dumps(stub_trainer.command(pause=1.5)),
        "KUBEVISION_WATCH_SERVER_TIMEOUT_SECONDS": str(WATCH_SERVER_TIMEOUT_S),
        "KUBEVISION_WATCH_CLIENT_TIMEOUT_SECONDS": str(WATCH_CLIENT_TIMEOUT_S),
        **extra,
    }


def _metric(operator: Operator, name: str) -> list[tuple[dict[str, str], float]]:
    return figures.parse_metrics(operator.metrics_text(), name)


def test_a_restarted_operator_decides_nothing_before_its_caches_are_full(
    crds: ControlPlane, namespace: str, node_agent: Any, tmp_path: Path
) -> None:
    node_agent(pods=WAITING + 30, cpu="64", memory="256Gi")
    apply(crds, workload.view_manifest(), namespace=namespace)
    count = LIMIT + WAITING
    try:
        with Recorder(crds, namespace) as recorder:
            first = Operator(crds, tmp_path / "first", _env())
            first.start()
            try:
                workload.apply_all(crds, namespace, count)
                wait_for(
                    "every ModelVersion with a status and 5 Jobs",
                    lambda: len(recorder.mv_status_at) == count and len(recorder.jobs) >= LIMIT,
                    120,
                )
            finally:
                assert first.stop() == 0, first.log_text()[-3000:]
            jobs_before = len(recorder.jobs)
            second = Operator(crds, tmp_path / "second", _env())
            second.start()
            try:
                wait_for(
                    "20 more Jobs after the restart",
                    lambda: len(recorder.jobs) >= jobs_before + 20,
                    240,
                )
                synced = _metric(second, "kubevision_operator_cache_synced")
                cached = {
                    labels["kind"]: value
                    for labels, value in _metric(second, "kubevision_operator_cache_objects")
                }
                requests = {
                    (labels["verb"], labels["resource"]): value
                    for labels, value in _metric(second, "kubevision_operator_api_requests_total")
                }
            finally:
                assert second.stop() == 0, second.log_text()[-3000:]
    finally:
        workload.delete_all(crds, namespace)

    print(
        f"\nrestart with {count - jobs_before} waiting: {len(recorder.jobs) - jobs_before} Jobs"
        f" created after it, at most {recorder.max_active} active; second operator's requests"
        f" {sorted(requests.items())}"
    )
    assert synced == [({}, 1.0)]
    assert cached["ModelVersion"] == count and cached["View"] == 1, cached
    # No Job twice, none out of queue order, never more than the limit, before or after.
    per_mv = Counter(job.modelversion for job in recorder.jobs)
    assert max(per_mv.values()) == 1, per_mv.most_common(3)
    assert not figures.order_violations(recorder, LIMIT)
    assert recorder.max_active <= LIMIT
    # The second operator read nothing from the API but its CA Secret and CRDs, at start.
    reads = {k: v for k, v in requests.items() if k[0] in figures.READS}
    at_start = ("secrets", "customresourcedefinitions")
    assert not {k: v for k, v in reads.items() if k[1] not in ("pods", *at_start)}, reads
    # The CA Secret and the two CRDs (the start-up check), once each.
    assert reads.get(("get", "customresourcedefinitions")) == 2.0, reads
    # A Pod is read only when a report outran the Pod's watch event.
    assert sum(v for (_, r), v in reads.items() if r == "pods") <= 2, reads


def test_caches_resynchronise_after_the_api_server_restarts(tmp_path: Path) -> None:
    cp = controlplane.start(tmp_path / "control-plane")
    agent: NodeAgent | None = None
    operator: Operator | None = None
    namespace = "restart"
    try:
        install_crds(cp, namespace)
        agent = NodeAgent(
            cp, name="restart-node", pods=10, cpu="16", memory="64Gi", workdir=tmp_path / "node"
        ).start()
        apply(cp, workload.view_manifest(), namespace=namespace)
        operator = Operator(cp, tmp_path / "operator", _env())
        operator.start()
        listing = workload.modelversion_list(2)
        before, after = listing["items"]
        before["metadata"]["name"], after["metadata"]["name"] = "before", "after"
        apply(cp, before, namespace=namespace)
        wait_for("the first training", lambda: succeeded(cp, namespace, "before"), 120)

        cp.restart_apiserver(down_seconds=3.0)
        back = time.monotonic()
        apply(cp, after, namespace=namespace)
        bound = WATCH_CLIENT_TIMEOUT_S + 10
        wait_for(
            "the Job of the one applied after", lambda: job_exists(cp, namespace, "after"), bound
        )
        took = time.monotonic() - back
        wait_for("its training", lambda: succeeded(cp, namespace, "after"), 120)
        print(f"\nAPI server back: the next ModelVersion had its Job after {took:.1f} s")
        assert _metric(operator, "kubevision_operator_cache_synced") == [({}, 1.0)]
    finally:
        stop_cleanly(operator)
        if agent is not None:
            agent.stop()
        cp.stop()


def test_a_resync_forgets_what_was_deleted_unseen(crds: ControlPlane, namespace: str) -> None:
    apply(crds, workload.view_manifest(), namespace=namespace)
    listing = workload.modelversion_list(2)
    apply(crds, listing, namespace=namespace)
    settings = OperatorSettings(namespaces=[namespace])
    metrics = OperatorMetrics()
    kube = Kube(api=crds_client(crds), on_request=metrics.api_request)
    cache = Cache(pod_index_label="batch.kubernetes.io/job-name")
    queue = Queue(0)
    reconciler = Reconciler(
        kube, cache, queue, settings, metrics, Reports(kube, cache, metrics), None
    )
    stale = json.loads(json.dumps(listing["items"][0]))
    stale["metadata"].update(name="deleted-unseen", namespace=namespace, resourceVersion="1")
    cache.modelversions.put(stale)
    gone = Housekeeping(reconciler).resync("ModelVersion")
    assert gone == [(namespace, "deleted-unseen")]
    names = [obj["metadata"]["name"] for obj in cache.modelversions.items(namespace)]
    assert names == ["mv-0000", "mv-0001"]
    assert requests_of(metrics) == {("list", "modelversions"): 1.0}


def crds_client(cp: ControlPlane) -> Any:
    """A kubernetes ApiClient with the control plane's admin kubeconfig."""
    return config.new_client_from_config(config_file=str(cp.kubeconfig))  # type: ignore[no-untyped-call]


def requests_of(metrics: OperatorMetrics) -> dict[tuple[str, str], float]:
    text = metrics.exposition()[0].decode()
    return {
        (labels["verb"], labels["resource"]): value
        for labels, value in figures.parse_metrics(text, "kubevision_operator_api_requests_total")
    }
