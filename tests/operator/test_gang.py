"""Multi-Pod trainings: the Indexed Job's and the Service's rules, what the gang's Pods say
(observe), and the status of a gang restart and of waiting Pods (compose_status)."""

from __future__ import annotations

from typing import Any

import pytest

from kubevision_api import contract
from kubevision_api.contract import StepName
from kubevision_api.modelversion import ModelVersionSpec
from kubevision_api.status import AttemptFailure, Phase, StepState
from kubevision_operator import gang, naming, render
from kubevision_operator import status as st
from kubevision_operator.observe import Observation, Situation, observe
from tests.operator.operator_helpers import (
    at,
    condition,
    modelversion,
    plan_for,
    pod,
    running,
    settings,
    stamp,
    terminated,
    view,
)

GANG = modelversion(
    name="pets-ddp",
    resources={"gpus": 0, "nodes": 2, "cpu": "2", "memory": "4Gi"},
    runPolicy={"backoffLimit": 2},
)
UNSCHEDULABLE = "0/1 nodes are available: 1 Insufficient nvidia.com/gpu."


def gang_job(
    attempt: int = 1,
    *,
    conditions: list[dict[str, Any]] | None = None,
    deleting: bool = False,
    suspend: bool = False,
) -> dict[str, Any]:
    """The Job of GANG as the API server returns it."""
    metadata: dict[str, Any] = {
        "name": "kv-pets-ddp",
        "uid": "job-uid",
        "annotations": {naming.ATTEMPT_ANNOTATION: str(attempt)},
    }
    if deleting:
        metadata["deletionTimestamp"] = stamp(900)
    return {
        "metadata": metadata,
        "spec": {
            "suspend": suspend,
            "completionMode": "Indexed",
            "completions": 2,
            "parallelism": 2,
        },
        "status": {"conditions": conditions or []},
    }


def ranked(index: int, suffix: str = "xxxxx", **kwargs: Any) -> dict[str, Any]:
    """A Pod of the gang with its completion index (Kubernetes names it <job>-<index>-<x>)."""
    made = pod(f"kv-pets-ddp-{index}-{suffix}", **kwargs)
    made["metadata"]["annotations"] = {naming.COMPLETION_INDEX_ANNOTATION: str(index)}
    return made


def look(
    job: dict[str, Any], pods: list[dict[str, Any]], spec: ModelVersionSpec = GANG.spec
) -> Observation:
    return observe(job, pods, True, None, None, spec=spec)


# ---- rendering --------------------------------------------------------------------------------


def test_pods_find_the_master_through_the_service() -> None:
    plan = plan_for(view(), GANG)
    job = render.render_job(plan, GANG, settings(), suspend=False, attempt=3)
    service = render.render_service(plan, GANG)
    template = job["spec"]["template"]
    env = {e["name"]: e for e in template["spec"]["containers"][0]["env"]}
    # Kubernetes names the Pod of index 0 <job>-0; its subdomain is the Service.
    host, subdomain, namespace, svc = env[contract.ENV_MASTER_ADDR]["value"].split(".")
    assert host == f"{job['metadata']['name']}-0"
    assert subdomain == template["spec"]["subdomain"] == service["metadata"]["name"]
    assert (namespace, svc) == ("team-a", "svc")
    assert env[contract.ENV_NODE_RANK]["valueFrom"]["fieldRef"]["fieldPath"] == (
        "metadata.annotations['batch.kubernetes.io/job-completion-index']"
    )
    assert env[contract.ENV_ATTEMPT]["value"] == "3"
    assert job["metadata"]["annotations"] == {"kubevision.dev/attempt": "3"}
    assert (env[contract.ENV_NNODES]["value"], env[contract.ENV_NPROC_PER_NODE]["value"]) == (
        "2",
        "1",
    )
    # The Service selects the Job's Pods by the label the Job controller gives them.
    assert service["spec"]["selector"] == {"batch.kubernetes.io/job-name": "kv-pets-ddp"}
    assert service["spec"]["ports"][0]["port"] == contract.MASTER_PORT == 29500
    assert service["metadata"]["ownerReferences"] == job["metadata"]["ownerReferences"]
    assert (job["spec"]["backoffLimit"], job["spec"]["completions"]) == (0, 2)


def test_one_process_gets_no_torchrun_variables() -> None:
    mv = modelversion()
    job = render.render_job(plan_for(view(), mv), mv, settings(), suspend=False)
    names = {e["name"] for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert not {n for n in names if n.startswith("PET_")} and contract.ENV_ATTEMPT not in names
    assert "annotations" not in job["metadata"] and "subdomain" not in job["spec"]["template"]
    assert "completionMode" not in job["spec"]


def test_a_gang_job_is_told_from_its_own_spec() -> None:
    assert gang.is_gang_job(gang_job())
    assert not gang.is_gang_job({"spec": {"completions": 1, "parallelism": 1}})
    assert gang.job_attempt(gang_job(4)) == 4
    assert gang.job_attempt({"metadata": {"annotations": {naming.ATTEMPT_ANNOTATION: "x"}}}) == 1


# ---- observe: a failed attempt ------------------------------------------------------------------

FAILED_JOB = [condition("FailureTarget", "BackoffLimitExceeded", "Job has reached the limit", 70)]


def _crashed_gang() -> list[dict[str, Any]]:
    """Rank 1 crashes at 50; the Job then stops rank 0, which ends at 65 (SIGTERM)."""
    return [
        ranked(
            0,
            "aaaaa",
            phase="Failed",
            state=terminated(143, "Preempted: stopped by SIGTERM", finished=65),
        ),
        ranked(
            1,
            "bbbbb",
            phase="Failed",
            state=terminated(1, "RuntimeError: connection reset by peer", finished=50),
        ),
    ]


def test_the_first_failure_by_finish_time_restarts_the_gang() -> None:
    obs = look(gang_job(1, conditions=FAILED_JOB), _crashed_gang())
    assert obs.situation is Situation.RETRYING and obs.restart and not obs.terminal
    assert obs.message == (
        "Pod kv-pets-ddp-1-bbbbb: The trainer exited with code 1: RuntimeError: connection "
        "reset by peer. The gang restarts: attempt 2 of 3."
    )
    assert (obs.reason, obs.exit_code) == ("TrainerCrashed", 1)
    seen = obs.attempts
    assert seen is not None and (seen.count, seen.failed_attempt, seen.failed_at) == (
        1,
        1,
        at(50),
    )
    assert obs.pod_name == "kv-pets-ddp-0-aaaaa"  # rank 0 speaks for the gang


def test_a_failed_pod_restarts_the_gang_before_the_job_says_so() -> None:
    pods = _crashed_gang()
    pods[0] = ranked(0, "aaaaa", phase="Running", state=running(20))
    obs = look(gang_job(2), pods)
    assert obs.situation is Situation.RETRYING and obs.restart
    assert obs.message.endswith("The gang restarts: attempt 3 of 3.")


def test_no_attempt_left_fails_the_training() -> None:
    obs = look(gang_job(3, conditions=FAILED_JOB), _crashed_gang())
    assert obs.situation is Situation.FAILED and obs.terminal and not obs.restart
    assert obs.message.endswith("reset by peer. Attempt 3 of 3: no retry is left.")
    assert obs.finished_at == at(50)


def test_a_failure_no_retry_can_mend_fails_at_once() -> None:
    line = contract.termination_line(contract.Outcome.INVALID_INPUT, "s3://d/x.png: empty file")
    pods = [
        ranked(0, "aaaaa", phase="Running", state=running(20)),
        ranked(1, "bbbbb", phase="Failed", state=terminated(2, line, finished=40)),
    ]
    obs = look(gang_job(1, conditions=FAILED_JOB), pods)
    assert obs.situation is Situation.FAILED and not obs.restart
    assert obs.reason == "InvalidInput"
    assert obs.message == "Pod kv-pets-ddp-1-bbbbb: s3://d/x.png: empty file."


def test_a_failed_job_whose_pods_are_gone_restarts_from_its_condition() -> None:
    obs = look(gang_job(1, conditions=FAILED_JOB), [])
    assert obs.situation is Situation.RETRYING and obs.restart
    assert obs.message == "Job has reached the limit. The gang restarts: attempt 2 of 3."
    assert obs.reason == "PodFailed"


def test_a_job_being_deleted_is_a_restart_under_way() -> None:
    obs = look(gang_job(1, conditions=FAILED_JOB, deleting=True), [])
    assert obs.situation is Situation.RETRYING and obs.restart
    assert obs.message == (
        "The Pods of attempt 1 are stopping; attempt 2 starts once they are gone."
    )


def test_deadline_exceeded_is_final_for_a_gang_too() -> None:
    cond = [condition("Failed", "DeadlineExceeded", "Job was active longer", 80)]
    obs = look(gang_job(1, conditions=cond), _crashed_gang())
    assert obs.situation is Situation.DEADLINE_EXCEEDED and not obs.restart


# ---- observe: waiting, starting, running, done ------------------------------------------------


def test_waiting_pods_are_counted_and_named() -> None:
    pods = [
        ranked(0, "aaaaa", phase="Running", scheduled=5, state=running(20)),
        ranked(1, "bbbbb", unschedulable=UNSCHEDULABLE),
    ]
    obs = look(gang_job(), pods)
    assert obs.situation is Situation.UNSCHEDULABLE and obs.reason == "Unschedulable"
    assert obs.message == (
        "1 of 2 Pods wait to be scheduled: kv-pets-ddp-1-bbbbb: 0/1 nodes are available: "
        "1 Insufficient nvidia.com/gpu."
    )
    assert obs.scheduled_at is None and obs.started_at is None
    both = [ranked(1, "bbbbb", unschedulable=UNSCHEDULABLE), ranked(0, "aaaaa", unschedulable="x")]
    assert (
        look(gang_job(), both).message
        == "2 of 2 Pods wait to be scheduled: kv-pets-ddp-0-aaaaa: x."
    )


def test_pods_not_created_yet() -> None:
    obs = look(gang_job(), [ranked(0, phase="Running", scheduled=5, state=running(20))])
    assert (obs.situation, obs.message) == (
        Situation.STARTING,
        "The Job has created 1 of 2 trainer Pods.",
    )


def test_starting_pods_name_the_first_by_rank() -> None:
    waiting = {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image"}}
    pods = [
        ranked(1, "bbbbb", scheduled=5, state=waiting),
        ranked(0, "aaaaa", phase="Running", scheduled=4, state=running(20)),
    ]
    obs = look(gang_job(), pods)
    assert (obs.situation, obs.reason) == (Situation.POD_PENDING, "ImagePullBackOff")
    assert obs.message == "1 of 2 Pods are starting: kv-pets-ddp-1-bbbbb: Back-off pulling image."


def test_a_running_gang_started_when_its_last_pod_did() -> None:
    pods = [
        ranked(0, "aaaaa", phase="Running", scheduled=4, state=running(20)),
        ranked(1, "bbbbb", phase="Running", scheduled=6, state=running(25)),
    ]
    obs = look(gang_job(2), pods)
    assert obs.situation is Situation.RUNNING
    assert (obs.scheduled_at, obs.started_at) == (at(6), at(25))
    assert obs.attempts is not None and obs.attempts.count == 2 and obs.attempts.failure is None


def test_every_trainer_done_is_success_even_while_a_sidecar_holds_on() -> None:
    pods = [
        ranked(0, "aaaaa", phase="Running", state=terminated(0, finished=90), sidecar=running(1)),
        ranked(1, "bbbbb", phase="Succeeded", state=terminated(0, finished=95)),
    ]
    obs = look(gang_job(), pods)
    assert obs.situation is Situation.SUCCEEDED
    assert (obs.lingering, obs.finished_at) == (("mesh-proxy",), at(95))
    # One rank done is not the gang done.
    pods[1] = ranked(1, "bbbbb", phase="Running", state=running(20))
    assert look(gang_job(), pods).situation is Situation.RUNNING


# ---- the status of a gang restart --------------------------------------------------------------


def test_status_of_a_gang_restart() -> None:
    restarting = look(gang_job(1, conditions=FAILED_JOB), _crashed_gang())
    status = st.compose_status(None, restarting, None, 1, at(100))
    assert status.phase == Phase.PENDING.value
    running_cond = {c.type: c for c in status.conditions}["Running"]
    assert (running_cond.status, running_cond.reason) == ("False", "Retrying")
    assert running_cond.message == restarting.message
    assert status.attempts == 1
    assert status.last_failure == AttemptFailure(
        attempt=1,
        reason="TrainerCrashed",
        message="Pod kv-pets-ddp-1-bbbbb: The trainer exited with code 1: RuntimeError: "
        "connection reset by peer.",
        exit_code=1,
        finished_at=at(50),
    )
    assert st.between_attempts(status) and st.next_attempt(status) == 2
    # The next attempt's Job runs: two attempts, the first one's failure kept.
    pods = [
        ranked(0, "ccccc", phase="Running", scheduled=204, state=running(220)),
        ranked(1, "ddddd", phase="Running", scheduled=206, state=running(225)),
    ]
    second = st.compose_status(status, look(gang_job(2), pods), None, 1, at(300))
    assert (second.attempts, second.last_failure) == (2, status.last_failure)
    assert second.phase == Phase.RUNNING.value and not st.between_attempts(second)


def test_between_attempts_and_the_next_attempt() -> None:
    assert (st.next_attempt(None), st.between_attempts(None)) == (1, False)
    fresh = st.initial_status(1, at(0))
    assert (st.next_attempt(fresh), st.between_attempts(fresh)) == (1, False)


@pytest.mark.parametrize("waiting", [1, 2])
def test_waiting_pods_show_in_the_scheduling_step(waiting: int) -> None:
    pods = [ranked(1, "bbbbb", unschedulable=UNSCHEDULABLE)]
    pods.append(
        ranked(0, "aaaaa", unschedulable=UNSCHEDULABLE)
        if waiting == 2
        else ranked(0, "aaaaa", phase="Running", scheduled=5, state=running(20))
    )
    status = st.compose_status(None, look(gang_job(), pods), None, 1, at(30))
    first = "kv-pets-ddp-0-aaaaa" if waiting == 2 else "kv-pets-ddp-1-bbbbb"
    message = f"{waiting} of 2 Pods wait to be scheduled: {first}: {UNSCHEDULABLE}"
    scheduling = status.steps[0]
    assert (scheduling.name, scheduling.state, scheduling.message) == (
        StepName.SCHEDULING,
        StepState.PENDING,
        message,
    )
    running_cond = {c.type: c for c in status.conditions}["Running"]
    assert (running_cond.reason, running_cond.message) == ("Unschedulable", message)
    assert status.current_step is StepName.SCHEDULING and status.phase == Phase.PENDING.value
