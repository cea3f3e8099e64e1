"""End to end, the ways a training ends other than well, and its lifecycle: the real operator
(a subprocess), the real control plane, the node agent running the real trainer, the real S3
server, Pushgateway and Prometheus (``e2e_helpers``).

- the trainer exits non-zero (a truncated image: InvalidInput, naming the file);
- the trainer exceeds its memory limit (OOMKilled, naming the limit);
- a GPU request no node can satisfy (Scheduling Pending with the scheduler's message);
- the operator is killed mid-training and restarted (one Job, progress continues);
- suspend and resume (SIGTERM, last.pt, exit 143; a new Pod resumes from last.pt);
- activeDeadlineSeconds exceeded (DeadlineExceeded).
"""

from __future__ import annotations

import json
import re
import signal
import time
from typing import Any

import pytest

from testenv.operator_helpers import condition, wait_for
from tests.integration import e2e_helpers as h
from tests.integration.e2e_helpers import e2e  # noqa: F401  (fixture)

pytestmark = pytest.mark.slow


def _failed(obj: dict[str, Any]) -> dict[str, Any]:
    assert h.outcome(obj) == "Failed", json.dumps(obj.get("status"), indent=1)
    failed = condition(obj, "Failed")
    assert failed is not None
    assert condition(obj, "Succeeded")["status"] == "False"  # type: ignore[index]
    assert obj["status"]["phase"] == "Failed"
    return failed


def _step(obj: dict[str, Any], name: str) -> dict[str, Any]:
    return next(s for s in obj["status"]["steps"] if s["name"] == name)


def test_truncated_image_fails_with_invalid_input(e2e: h.E2E, node_agent: Any) -> None:  # noqa: F811
    dataset = h.classification_dataset(e2e, per_class=6, prefix="bad")
    victim = sorted((e2e.tmp_path / "bad" / "one").glob("*.png"))[2]
    key = f"bad/one/{victim.name}"
    body = e2e.read(key)
    assert body is not None
    e2e.client.put_object(Bucket=e2e.bucket, Key=key, Body=body[: len(body) // 2])
    node_agent()
    watcher = h.Watcher(e2e, "bad-e2e")
    with e2e.operator():
        e2e.apply(e2e.secret(), h.view("bad", dataset), h.modelversion(e2e, "bad-e2e", "bad"))
        obj = watcher.finished(timeout=300)

    failed = _failed(obj)
    assert failed["reason"] == "InvalidInput", failed
    # The trainer's termination message, which names the file.
    assert f"s3://{e2e.bucket}/{key}" in failed["message"], failed
    assert "cannot decode the image" in failed["message"], failed
    assert condition(obj, "Running")["reason"] == "InvalidInput"  # type: ignore[index]
    loading = _step(obj, "LoadingDataset")
    assert loading["state"] == "Failed" and key in loading["message"], loading
    assert [_step(obj, s)["state"] for s in ("Training", "Evaluating", "Exporting")] == [
        "Skipped"
    ] * 3
    # Exit code 2 fails the Job at once (podFailurePolicy): one Pod, no retry.
    assert len(e2e.jobs()) == 1
    assert len(e2e.pods("kv-bad-e2e")) == 1


def test_memory_limit_exceeded_is_oomkilled(e2e: h.E2E, node_agent: Any) -> None:  # noqa: F811
    dataset = h.classification_dataset(e2e, per_class=6)
    mv = h.modelversion(
        e2e,
        "oom-e2e",
        "digits",
        resources={"gpus": 0, "cpu": "1", "memory": "200Mi"},
        run_policy={"backoffLimit": 0},
    )
    node_agent()
    watcher = h.Watcher(e2e, "oom-e2e")
    with e2e.operator():
        e2e.apply(e2e.secret(), h.view("digits", dataset), mv)
        obj = watcher.finished(timeout=300)

    failed = _failed(obj)
    assert failed["reason"] == "OOMKilled", failed
    assert "200Mi" in failed["message"], failed
    assert condition(obj, "Running")["reason"] == "OOMKilled"  # type: ignore[index]


def test_gpu_request_no_node_can_satisfy(e2e: h.E2E, node_agent: Any) -> None:  # noqa: F811
    # The trainer never runs, so the dataset need not exist.
    dataset = h.Dataset("classification", f"s3://{e2e.bucket}/none", "imagefolder", ["a", "b"])
    mv = h.modelversion(
        e2e, "gpu-e2e", "digits", resources={"gpus": 1, "cpu": "1", "memory": "1Gi"}
    )
    agent = node_agent()  # no GPUs
    watcher = h.Watcher(e2e, "gpu-e2e")
    with e2e.operator():
        e2e.apply(e2e.secret(), h.view("digits", dataset), mv)

        def unschedulable(obj: dict[str, Any]) -> bool:
            running = condition(obj, "Running")
            return bool(running and running["reason"] == "Unschedulable")

        obj = watcher.until("Running=False Unschedulable", unschedulable, timeout=120)

    status = obj["status"]
    scheduling = _step(obj, "Scheduling")
    assert scheduling["state"] == "Pending", scheduling
    assert "Insufficient nvidia.com/gpu" in scheduling["message"], scheduling
    assert "startedAt" not in scheduling
    assert "startTime" not in status
    assert status["currentStep"] == "Scheduling"
    assert status["phase"] == "Pending"
    running = condition(obj, "Running")
    assert running is not None and running["status"] == "False"
    assert "Insufficient nvidia.com/gpu" in running["message"]
    pod = e2e.pods("kv-gpu-e2e")[0]
    assert pod["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert not pod["spec"].get("nodeName")
    assert agent.pids() == []


def test_operator_killed_mid_training_and_restarted(e2e: h.E2E, node_agent: Any) -> None:  # noqa: F811
    epochs = 3
    dataset = h.classification_dataset(e2e, per_class=30)
    mv = h.modelversion(e2e, "crash-e2e", "digits", epochs=epochs)
    node_agent(cpu="4", memory="16Gi")
    prefix = "runs/crash-e2e"
    watcher = h.Watcher(e2e, "crash-e2e")
    pods = h.PodEvents(e2e)
    # Status patches as the reports come (not merged over 5 s): the operator is killed at the
    # first batch the status shows, with most of the training still to come.
    with e2e.operator(KUBEVISION_STATUS_WRITE_INTERVAL_SECONDS="0") as operator:
        e2e.apply(e2e.secret(), h.view("digits", dataset), mv)
        before = watcher.until("the first training batch", h.training_running, timeout=600)
        job = e2e.jobs()[0]
        percent = before["status"]["progress"]["percent"]
        assert h.outcome(before) is None
        assert operator.stop(signal.SIGKILL) == -signal.SIGKILL
        time.sleep(3)  # the trainer goes on; its reports fail meanwhile
        operator.start()
        after = watcher.until(
            "progress reported to the restarted operator",
            lambda obj: obj["status"]["progress"]["percent"] > percent,
            timeout=300,
        )
        assert h.outcome(after) is None  # it was still training when the operator came back
        obj = watcher.finished(timeout=900)

    jobs = e2e.jobs()
    assert [j["metadata"]["uid"] for j in jobs] == [job["metadata"]["uid"]]
    assert len(pods.names()) == 1, pods.names()  # the trainer never restarted
    h.assert_steps_in_order(watcher)
    h.assert_trained(e2e, obj, prefix, epochs)
    assert max(watcher.status_epochs) == epochs


def test_suspend_and_resume(e2e: h.E2E, node_agent: Any) -> None:  # noqa: F811
    epochs, batch = 2, 4
    # 92 train images: 23 full batches. (With 40 per class, 101 % 4 == 1: a last batch of
    # one image, which resnet18's BatchNorm refuses at 32 px; see the report.)
    dataset = h.classification_dataset(e2e, per_class=36)
    mv = h.modelversion(e2e, "pause-e2e", "digits", epochs=epochs, batch=batch)
    agent = node_agent(cpu="4", memory="16Gi")
    prefix = "runs/pause-e2e"
    watcher = h.Watcher(e2e, "pause-e2e", records_prefix=prefix)
    pods = h.PodEvents(e2e)

    def suspend(value: bool) -> None:
        patch = {"spec": {"runPolicy": {"suspend": value}}}
        e2e.cp.kubectl(
            "-n", e2e.namespace, "patch", "mv/pause-e2e", "--type=merge", "-p", json.dumps(patch)
        )

    # Progress within an epoch patched as it comes (it waits 30 s by default): the training is
    # suspended at its first batch the status shows, mid-epoch.
    with e2e.operator(KUBEVISION_STATUS_WRITE_INTERVAL_SECONDS="0"):
        e2e.apply(e2e.secret(), h.view("digits", dataset), mv)
        watcher.until("the first training batch", h.training_running, timeout=600)
        first = pods.names()[0]
        suspend(True)

        def suspended(obj: dict[str, Any]) -> bool:
            cond = condition(obj, "Suspended")
            return bool(cond and cond["status"] == "True") and not e2e.pods("kv-pause-e2e")

        obj = watcher.until("Suspended with no Pod left", suspended, timeout=300)
        assert obj["status"]["phase"] == "Suspended"
        assert condition(obj, "Running")["reason"] == "Suspended"  # type: ignore[index]
        assert _step(obj, "Training")["state"] == "Pending"
        assert e2e.jobs()[0]["spec"]["suspend"] is True
        # The Pod was deleted gracefully: SIGTERM, last.pt saved, exit 143.
        terminated = pods.terminated(first)
        assert terminated is not None and terminated["exitCode"] == 143, terminated
        stopped = re.fullmatch(
            r"Preempted: stopped (?:at epoch (\d+), batch (\d+)|after epoch (\d+))",
            terminated["message"],
        )
        assert stopped is not None, terminated
        epoch, position = (
            (int(stopped[1]), int(stopped[2])) if stopped[1] else (int(stopped[3]) + 1, 0)
        )
        assert e2e.read(f"{prefix}/checkpoints/last.pt") is not None
        assert len(pods.names()) == 1

        suspend(False)
        obj = watcher.finished(timeout=900)

    names = pods.names()
    assert len(names) == 2 and names[0] == first, names
    resumed = agent.logs(e2e.namespace, names[1])
    assert f"resuming at epoch {epoch}, batch {position}" in resumed, resumed[-3000:]
    trained = h.assert_trained(e2e, obj, prefix, epochs)  # each epoch once in metrics.jsonl
    assert [s["state"] for s in obj["status"]["steps"]] == ["Succeeded"] * 5
    h.assert_prometheus(e2e, "pause-e2e", "digits", trained, epochs, batch)


def test_active_deadline_exceeded(e2e: h.E2E, node_agent: Any) -> None:  # noqa: F811
    dataset = h.classification_dataset(e2e, per_class=20)
    mv = h.modelversion(
        e2e, "late-e2e", "digits", epochs=20, run_policy={"activeDeadlineSeconds": 10}
    )
    node_agent(cpu="4", memory="16Gi")
    watcher = h.Watcher(e2e, "late-e2e")
    with e2e.operator():
        e2e.apply(e2e.secret(), h.view("digits", dataset), mv)
        obj = watcher.finished(timeout=300)

    failed = _failed(obj)
    assert failed["reason"] == "DeadlineExceeded", failed
    assert "activeDeadlineSeconds (10 s)" in failed["message"], failed

    # The operator reports the failure from the Job's FailureTarget condition; the Job
    # controller adds Failed once the Pod has terminated.
    def job_failed() -> dict[str, Any] | None:
        job = e2e.jobs()[0]
        reasons = {c["type"]: c.get("reason") for c in job["status"].get("conditions", [])}
        return job if reasons.get("Failed") == "DeadlineExceeded" else None

    wait_for("the Job's Failed condition", job_failed, timeout=60)
