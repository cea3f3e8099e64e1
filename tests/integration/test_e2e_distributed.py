"""End to end, a training on two Pods (``resources.nodes: 2``): the operator renders an Indexed
Job and a headless Service, the node agent runs both Pods as real processes (torchrun, gloo on
the CPU) and maps their DNS names and the rendezvous port onto loopback while the specs keep
the real names (docs/node-agent.md, Gangs).

- one run: both Pods train, the run succeeds, one ``best.pt`` lands in S3, the status counts
  one attempt and Prometheus holds one series per metric; deleting the ModelVersion takes the
  Job and the Service with it;
- gang restart: one Pod SIGKILLed in the middle of epoch 2 fails the gang, the operator starts
  it again from ``last.pt``, and the parameters end equal, bit for bit, to those of an
  uninterrupted run of the same spec trained before it;
- a Pod without a node: with one GPU on the only Node and one asked per Pod, one Pod runs and
  waits at the rendezvous, the other stays Pending; nothing trains, and the status names the
  waiting Pod and the scheduler's message.
"""

from __future__ import annotations

import io
import json
import os
import re
import signal
import time
from typing import Any

import pytest
import torch

from kubevision_api.contract import ENV_MASTER_ADDR, ENV_MASTER_PORT, MASTER_PORT
from testenv.operator_helpers import get, wait_for
from tests.integration import e2e_helpers as h
from tests.integration.e2e_helpers import e2e  # noqa: F401  (fixture)

pytestmark = pytest.mark.slow

COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"
#: Two Pods of one CPU process each: world size 2.
GANG = {"gpus": 0, "cpu": "1", "memory": "3Gi", "nodes": 2, "processesPerNode": 1}


def _indexed(pods: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """{completion index: Pod}; the last Pod seen wins for an index."""
    return {int(p["metadata"]["annotations"][COMPLETION_INDEX]): p for p in pods}


def _owned_by(obj: dict[str, Any], owner: dict[str, Any]) -> bool:
    return any(
        ref["uid"] == owner["metadata"]["uid"] and ref.get("controller")
        for ref in obj["metadata"].get("ownerReferences") or []
    )


def _model(env: h.E2E, prefix: str, name: str) -> dict[str, torch.Tensor]:
    """The ``model`` state dict of a checkpoint read back from S3."""
    data = env.read(f"{prefix}/checkpoints/{name}")
    assert data is not None, f"{prefix}/checkpoints/{name} is missing"
    state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    model: dict[str, torch.Tensor] = state["model"]
    return model


def _assert_bit_equal(left: dict[str, torch.Tensor], right: dict[str, torch.Tensor]) -> None:
    assert sorted(left) == sorted(right)
    different = [key for key in left if not torch.equal(left[key], right[key])]
    assert not different, f"{len(different)} of {len(left)} tensors differ: {different[:5]}"


def test_two_pods_train_as_one_run(e2e: h.E2E, node_agent: Any) -> None:  # noqa: F811
    dataset = h.classification_dataset(e2e, per_class=20, prefix="ddp")
    name, epochs, batch = "ddp-e2e", 2, 8
    mv = h.modelversion(e2e, name, "ddp", epochs=epochs, batch=batch, resources=GANG)
    agent = node_agent(cpu="4", memory="16Gi")
    prefix = f"runs/{name}"
    watcher = h.Watcher(e2e, name, records_prefix=prefix)
    watcher.watch_pods = True
    ns = e2e.namespace
    services: list[dict[str, Any]] = []

    def finished(obj: dict[str, Any]) -> bool:
        # The operator deletes the Service once the training has finished: seen while it runs.
        job_name = (obj.get("status") or {}).get("jobName")
        if job_name and not services:
            found = get(e2e.cp, f"/api/v1/namespaces/{ns}/services/{job_name}")
            services.extend([found] if found else [])
        return h.outcome(obj) is not None

    started = time.monotonic()
    with e2e.operator():
        e2e.apply(e2e.secret(), h.view("ddp", dataset), mv)
        obj = watcher.until("an outcome", finished, timeout=900)
        elapsed = time.monotonic() - started
        owner = e2e.get(name)
        assert owner is not None
        job_name = obj["status"]["jobName"]
        job = get(e2e.cp, f"/apis/batch/v1/namespaces/{ns}/jobs/{job_name}")
    print(f"2 Pods x 1 process, {epochs} epochs: {elapsed:.1f} s from apply to Succeeded")

    # One Indexed Job of two Pods and one headless Service, both owned by the ModelVersion.
    assert job is not None and services, "no Job, or no Service seen while training"
    service = services[0]
    assert (job["spec"]["completionMode"], job["spec"]["completions"]) == ("Indexed", 2)
    assert (job["spec"]["parallelism"], job["spec"]["backoffLimit"]) == (2, 0)
    assert job["spec"]["template"]["spec"]["subdomain"] == job_name
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["publishNotReadyAddresses"] is True
    assert [p["port"] for p in service["spec"]["ports"]] == [MASTER_PORT]
    assert _owned_by(job, owner) and _owned_by(service, owner)
    assert len(e2e.jobs()) == 1

    # Both Pods ran, as processes of this machine, and succeeded; the specs keep real names.
    pods = _indexed(list(watcher.pods.values()))
    assert sorted(pods) == [0, 1] and len(watcher.pods) == 2, sorted(watcher.pods)
    for index, pod in pods.items():
        pod_name = pod["metadata"]["name"]
        assert pod["spec"]["nodeName"] == agent.name and pod["spec"]["hostname"] == (
            f"{job_name}-{index}"
        )
        assert pod["status"]["phase"] == "Succeeded", pod["status"]
        terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
        assert terminated["exitCode"] == 0, terminated
        # torchrun ran in each Pod, at its node rank (the launcher's log line).
        assert f"node rank {index})" in agent.logs(ns, pod_name), agent.logs(ns, pod_name)
        env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
        assert env[ENV_MASTER_ADDR] == f"{job_name}-0.{job_name}.{ns}.svc"
        assert env[ENV_MASTER_PORT] == str(MASTER_PORT)

    # One run: one best.pt, one attempt, metrics.jsonl and Prometheus as for one process.
    trained = h.assert_trained(e2e, obj, prefix, epochs)
    status = obj["status"]
    assert status["attempts"] == 1 and "lastFailure" not in status, status
    listed = e2e.client.list_objects_v2(Bucket=e2e.bucket, Prefix="runs/")
    bests = [o["Key"] for o in listed.get("Contents", []) if o["Key"].endswith("best.pt")]
    assert bests == [f"{prefix}/checkpoints/best.pt"], bests
    h.assert_prometheus(e2e, name, "ddp", trained, epochs, batch)
    labels = f'namespace="{e2e.namespace}",modelversion="{name}"'
    for metric in ("kubevision_train_epoch", "kubevision_train_batches_total"):
        series = e2e.prometheus.query(f"{metric}{{{labels}}}")
        assert len(series) == 1, (metric, series)

    # Deleting the ModelVersion garbage-collects the Job (and the Service, if still there).
    e2e.cp.kubectl("-n", ns, "delete", "modelversion", name, "--wait=true", "--timeout=30s")
    wait_for(
        "the Job and the Service to be garbage-collected",
        lambda: (
            get(e2e.cp, f"/apis/batch/v1/namespaces/{ns}/jobs/{job_name}") is None
            and get(e2e.cp, f"/api/v1/namespaces/{ns}/services/{job_name}") is None
        ),
        timeout=60,
    )


def _percent(obj: dict[str, Any]) -> int:
    return int(((obj.get("status") or {}).get("progress") or {}).get("percent") or 0)


def test_gang_restarts_from_last_pt_bit_exact(e2e: h.E2E, node_agent: Any) -> None:  # noqa: F811
    # 90 images in global batches of 4: 18 batches an epoch. (With 60 images the last batch of
    # 3 leaves one rank a single image, which BatchNorm refuses.) Three epochs: the kill comes
    # once the status shows epoch 1 done, and two epochs are left to land in; within an epoch
    # the trainer reports batches at most every 5 s, longer than an epoch here may take, so
    # no point within one epoch can be aimed at (CI once saw epoch 2 end between two reports).
    dataset = h.classification_dataset(e2e, per_class=30, prefix="gang")
    epochs, batch = 3, 4
    reference, victim = "gang-ref", "gang-kill"
    manifests = {
        name: h.modelversion(
            e2e,
            name,
            "gang",
            epochs=epochs,
            batch=batch,
            resources=GANG,
            run_policy={"backoffLimit": 2},
        )
        for name in (reference, victim)
    }
    agent = node_agent(cpu="8", memory="32Gi")
    ns = e2e.namespace
    watcher = h.Watcher(e2e, victim)
    pod_events = h.PodEvents(e2e)
    started = time.monotonic()
    # Status patches as the reports come (not merged over 5 s): the victim is killed at the
    # epoch the status shows.
    with e2e.operator(KUBEVISION_STATUS_WRITE_INTERVAL_SECONDS="0"):
        # One after the other: the Pods of a node agent share one network namespace, and
        # every trainer of one operator serves its metrics on the same port.
        e2e.apply(e2e.secret(), h.view("gang", dataset), manifests[reference])
        ref = h.Watcher(e2e, reference).finished(timeout=600)
        reference_s = time.monotonic() - started
        e2e.apply(manifests[victim])
        # The epoch's report goes before its last.pt: the kill waits for both.
        obj = watcher.until(
            "epoch 1 done in status and its last.pt in storage",
            lambda o: (
                h.outcome(o) is not None
                or (
                    h.progress_epoch(o) >= 1
                    and e2e.read(f"runs/{victim}/checkpoints/last.pt") is not None
                )
            ),
            timeout=600,
        )
        assert h.outcome(obj) is None, json.dumps(obj.get("status"), indent=1)
        job_name = obj["status"]["jobName"]
        killed = _indexed(e2e.pods(job_name))[1]["metadata"]["name"]
        pids = agent.pod_pids(ns, killed)
        assert pids, f"no process of {killed}"
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        killed_at = h.progress_epoch(obj), _percent(obj)
        obj = watcher.finished(timeout=600)
    print(
        f"reference run {reference_s:.1f} s; killed {killed} ({len(pids)} processes) at "
        f"epoch {killed_at[0]} done, {killed_at[1]} %; both runs {time.monotonic() - started:.1f} s"
    )

    assert h.outcome(ref) == "Succeeded", json.dumps(ref.get("status"), indent=1)
    assert ref["status"]["attempts"] == 1, ref["status"]
    status = obj["status"]
    assert h.outcome(obj) == "Succeeded", json.dumps(status, indent=1)
    assert status["attempts"] == 2, status
    failure = status["lastFailure"]
    # The first Pod to fail is the killed one: the other fails after it (or is stopped).
    assert failure["attempt"] == 1 and failure["reason"] == "TrainerCrashed", failure
    assert failure["exitCode"] == 137, failure
    terminated = pod_events.terminated(killed)
    assert terminated is not None and terminated["exitCode"] == 137, terminated
    # Two attempts of two Pods each, all of one Job name (the Job was created again).
    victim_pods = [
        n for n in pod_events.names() if n.startswith(f"{job_name}-") and n.count("-") >= 2
    ]
    assert len(victim_pods) == 4, victim_pods
    # The second attempt's two Pods resumed from one last.pt, of an epoch the killed attempt
    # had finished (1, or 2 if it ended before the kill), not from scratch nor past the end.
    resumed = {n: re.findall(r"resuming at epoch (\d+),", agent.logs(ns, n)) for n in victim_pods}
    resumed = {n: at for n, at in resumed.items() if at}
    assert len(resumed) == 2 and killed not in resumed, resumed
    assert len({tuple(at) for at in resumed.values()}) == 1, resumed
    assert all(len(at) == 1 and 2 <= int(at[0]) <= epochs for at in resumed.values()), resumed

    # The restarted gang ends where the uninterrupted one does, bit for bit.
    for checkpoint in ("best.pt", "last.pt"):
        _assert_bit_equal(
            _model(e2e, f"runs/{victim}", checkpoint), _model(e2e, f"runs/{reference}", checkpoint)
        )
    # And so do its records: the same losses and accuracies, epoch by epoch.
    records = e2e.records(f"runs/{victim}")
    assert [r["epoch"] for r in records] == list(range(1, epochs + 1))
    assert records == e2e.records(f"runs/{reference}")


def _messages(obj: dict[str, Any]) -> list[str]:
    """Every condition and step message of the status."""
    status = obj.get("status") or {}
    return [
        str(item["message"])
        for item in [*status.get("conditions", []), *status.get("steps", [])]
        if item.get("message")
    ]


def test_a_pod_without_a_node_holds_the_gang(e2e: h.E2E, node_agent: Any) -> None:  # noqa: F811
    dataset = h.classification_dataset(e2e, per_class=5, prefix="wait")
    name = "wait-e2e"
    resources = {"gpus": 1, "cpu": "1", "memory": "3Gi", "nodes": 2}
    mv = h.modelversion(e2e, name, "wait", epochs=1, batch=4, resources=resources)
    agent = node_agent(gpus=1)  # room for one of the two Pods
    prefix = f"runs/{name}"
    watcher = h.Watcher(e2e, name, records_prefix=prefix)
    ns = e2e.namespace
    with e2e.operator():
        e2e.apply(e2e.secret(), h.view("wait", dataset), mv)

        def one_waits(obj: dict[str, Any]) -> bool:
            job_name = (obj.get("status") or {}).get("jobName")
            pods = e2e.pods(job_name) if job_name else []
            pending = [p["metadata"]["name"] for p in pods if not p["spec"].get("nodeName")]
            return (
                len(pods) == 2
                and len(pending) == 1
                and any(
                    pending[0] in m and "Insufficient nvidia.com/gpu" in m for m in _messages(obj)
                )
            )

        obj = watcher.until("the status to name the waiting Pod", one_waits, timeout=300)
        job_name = obj["status"]["jobName"]
        pods = _indexed(e2e.pods(job_name))
        placed = [p for p in pods.values() if p["spec"].get("nodeName")]
        assert len(placed) == 1 and placed[0]["spec"]["nodeName"] == agent.name
        running = placed[0]["metadata"]["name"]
        wait_for(
            f"{running} to run",
            lambda: (
                (get(e2e.cp, f"/api/v1/namespaces/{ns}/pods/{running}") or {})
                .get("status", {})
                .get("phase")
                == "Running"
            ),
            timeout=60,
        )
        # The placed Pod waits at the rendezvous: alive, and no rank trains meanwhile.
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            obj = watcher.poll()
            assert h.progress_epoch(obj) == 0, obj["status"]
            assert not watcher.record_epochs, watcher.record_epochs
            time.sleep(1)
        assert agent.pod_pids(ns, running), f"{running} is not running"
    pending = next(p for p in pods.values() if not p["spec"].get("nodeName"))
    scheduled = next(c for c in pending["status"]["conditions"] if c["type"] == "PodScheduled")
    assert (scheduled["status"], scheduled["reason"]) == ("False", "Unschedulable")
    assert "Insufficient nvidia.com/gpu" in scheduled["message"]
    assert "metrics" not in obj["status"] and "checkpoint" not in obj["status"]
    assert e2e.records(prefix) == []
    print("waiting status:", [m for m in _messages(obj) if "nvidia.com/gpu" in m])
