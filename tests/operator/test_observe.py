"""observe(): what is true now, from the Job, its Pods, the View and the queue."""

from __future__ import annotations

from typing import Any

import pytest

from kubevision_api.contract import StepName
from kubevision_api.modelversion import ModelVersionSpec
from kubevision_api.progress import TrainerReport
from kubevision_api.status import Progress, Step, StepState
from kubevision_operator.observe import Observation, Situation, observe
from tests.operator.operator_helpers import (
    at,
    condition,
    job,
    modelversion,
    pod,
    running,
    terminated,
)

SPEC = modelversion().spec


def spec(**run_policy: Any) -> ModelVersionSpec:
    return modelversion(runPolicy=run_policy).spec


def look(
    j: dict[str, Any] | None,
    pods: list[dict[str, Any]] | None = None,
    *,
    view_found: bool = True,
    report: TrainerReport | None = None,
    queued: int | None = None,
    s: ModelVersionSpec = SPEC,
    plan_error: str | None = None,
) -> Observation:
    return observe(j, pods or [], view_found, report, queued, spec=s, plan_error=plan_error)


# ---- before the Job exists --------------------------------------------------------------


def test_view_missing() -> None:
    obs = look(None, view_found=False)
    assert obs.situation is Situation.VIEW_MISSING
    assert "'pets' was not found" in obs.message


def test_invalid_plan_is_terminal() -> None:
    obs = look(None, plan_error="'resnet18' does not fit the detection task")
    assert obs.situation is Situation.INVALID_PLAN and obs.terminal
    assert obs.message == "'resnet18' does not fit the detection task."


def test_view_missing_comes_before_suspend_and_queue() -> None:
    assert (
        look(None, view_found=False, queued=1, s=spec(suspend=True)).situation
        is Situation.VIEW_MISSING
    )


def test_suspended_before_creation() -> None:
    assert look(None, queued=3, s=spec(suspend=True)).situation is Situation.SUSPENDED


def test_queued_before_creation() -> None:
    obs = look(None, queued=3)
    assert obs.situation is Situation.QUEUED and obs.position == 3
    assert "position 3" in obs.message


def test_starting() -> None:
    assert look(None).situation is Situation.STARTING


# ---- a suspended Job --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("run_policy", "situation"),
    [
        ({"suspend": True}, Situation.SUSPENDED),
        ({"suspend": True, "queueName": "q"}, Situation.SUSPENDED),
        ({"queueName": "q"}, Situation.AWAITING_ADMISSION),
        ({}, Situation.STARTING),
    ],
)
def test_suspended_job(run_policy: dict[str, Any], situation: Situation) -> None:
    obs = look(job(suspend=True), s=spec(**run_policy))
    assert obs.situation is situation
    assert obs.job_name == "kv-pets-v1"


def test_a_job_is_never_queued() -> None:
    """The operator creates a Job once the limit admits the training: a queue position given
    with a Job is not read."""
    assert look(job(suspend=True), queued=2).situation is Situation.STARTING


def test_once_a_job_exists_the_view_no_longer_matters() -> None:
    obs = look(job(), [pod(phase="Running", scheduled=5, state=running(9))], view_found=False)
    assert obs.situation is Situation.RUNNING


# ---- an active Job ----------------------------------------------------------------------


def test_job_without_pod_is_starting() -> None:
    assert look(job()).situation is Situation.STARTING


def test_unschedulable_pod_shows_the_scheduler_message() -> None:
    message = "0/1 nodes are available: 1 Insufficient nvidia.com/gpu."
    obs = look(job(), [pod(unschedulable=message)])
    assert obs.situation is Situation.UNSCHEDULABLE
    assert obs.message == message
    assert obs.scheduled_at is None and obs.started_at is None


@pytest.mark.parametrize(
    ("waiting", "reason"),
    [
        (None, "ContainerCreating"),
        ({"reason": "ImagePullBackOff", "message": "Back-off pulling image"}, "ImagePullBackOff"),
        (
            {"reason": "CreateContainerConfigError", "message": 'secret "d" not found'},
            "CreateContainerConfigError",
        ),
    ],
)
def test_scheduled_pod_waiting(waiting: dict[str, Any] | None, reason: str) -> None:
    state = {"waiting": waiting} if waiting else None
    obs = look(job(), [pod(scheduled=5, state=state)])
    assert obs.situation is Situation.POD_PENDING
    assert obs.reason == reason
    assert obs.scheduled_at == at(5) and obs.started_at is None
    assert obs.message.endswith(".")


def _report(step: StepName, display: str = "3/10") -> TrainerReport:
    return TrainerReport(
        namespace="team-a",
        model_version="pets-v1",
        steps=[Step(name=step, state=StepState.RUNNING)],
        progress=Progress(percent=30, epoch=3, epochs=10, display=display),
        sequence=4,
    )


def test_running() -> None:
    obs = look(job(), [pod(phase="Running", scheduled=5, state=running(9))])
    assert obs.situation is Situation.RUNNING
    assert (obs.scheduled_at, obs.started_at) == (at(5), at(9))
    assert obs.pod_name == "kv-pets-v1-abcde"
    assert obs.message == "The trainer is running."
    with_report = look(
        job(),
        [pod(phase="Running", scheduled=5, state=running(9))],
        report=_report(StepName.TRAINING),
    )
    assert with_report.message == "The trainer is running: Training, epoch 3/10."


def test_newest_pod_decides() -> None:
    old = pod("kv-pets-v1-aaaaa", phase="Failed", created=0, state=terminated(1, "Error: x"))
    new = pod("kv-pets-v1-bbbbb", phase="Running", created=50, scheduled=51, state=running(55))
    obs = look(job(), [new, old])
    assert obs.situation is Situation.RUNNING and obs.pod_name == "kv-pets-v1-bbbbb"


def test_failed_attempt_with_retries_left_is_retrying() -> None:
    failed = pod(phase="Failed", scheduled=5, state=terminated(1, "TrainingFailed: loss is nan"))
    obs = look(job(), [failed])
    assert obs.situation is Situation.RETRYING and obs.reason == "TrainingFailed"
    assert obs.message == "Loss is nan. The Job starts another attempt."


def test_disrupted_attempt_is_retrying() -> None:
    obs = look(job(), [pod(phase="Failed", scheduled=5, disrupted=True)])
    assert obs.situation is Situation.RETRYING and obs.reason == "Disrupted"


# ---- a finished Job ---------------------------------------------------------------------


def test_succeeded() -> None:
    j = job(conditions=[condition("Complete", seconds=300)], completion=299)
    obs = look(j, [pod(phase="Succeeded", scheduled=5, state=terminated(0, started=9))])
    assert obs.situation is Situation.SUCCEEDED and obs.terminal
    assert obs.finished_at == at(299) and obs.started_at == at(9)


def test_success_criteria_met_is_success() -> None:
    assert look(job(conditions=[condition("SuccessCriteriaMet")])).situation is Situation.SUCCEEDED


def test_deadline_exceeded_comes_from_the_job() -> None:
    j = job(conditions=[condition("Failed", "DeadlineExceeded", seconds=600)], deadline=600)
    obs = look(j, [pod(phase="Failed", state=terminated(143, "Preempted: stopped"))])
    assert obs.situation is Situation.DEADLINE_EXCEEDED
    assert "activeDeadlineSeconds (600 s)" in obs.message
    assert obs.finished_at == at(600)


def test_oom_killed_names_the_memory_limit() -> None:
    j = job(conditions=[condition("Failed", "BackoffLimitExceeded")])
    oom = pod(phase="Failed", memory="512Mi", state=terminated(137, reason="OOMKilled"))
    obs = look(j, [oom])
    assert obs.situation is Situation.OOM_KILLED and obs.exit_code == 137
    assert "memory limit of 512Mi" in obs.message


@pytest.mark.parametrize(
    ("message", "reason", "text"),
    [
        (
            "InvalidInput: s3://d/x.json: record 3: no such concept",
            "InvalidInput",
            "s3://d/x.json: record 3: no such concept.",
        ),
        (
            "TrainingFailed: the loss diverged at epoch 2",
            "TrainingFailed",
            "The loss diverged at epoch 2.",
        ),
        ("Preempted: SIGTERM at epoch 2, batch 5", "Preempted", "SIGTERM at epoch 2, batch 5."),
        ("Error: OSError: connection reset", "Error", "OSError: connection reset."),
        # A crash before the trainer could write its line: the log tail (FallbackToLogsOnError).
        (
            "Traceback (most recent call last):\n  File x\nImportError: no torch",
            "TrainerCrashed",
            "The trainer exited with code 1: ImportError: no torch.",
        ),
        (
            "Nonsense: a log line that looks like a reason",
            "TrainerCrashed",
            "The trainer exited with code 1: Nonsense: a log line that looks like a reason.",
        ),
        ("", "TrainerCrashed", "The trainer exited with code 1."),
    ],
)
def test_trainer_termination_message_decides_the_reason(
    message: str, reason: str, text: str
) -> None:
    j = job(conditions=[condition("Failed", "BackoffLimitExceeded")])
    obs = look(j, [pod(phase="Failed", state=terminated(1, message))])
    assert (obs.situation, obs.reason, obs.message) == (Situation.FAILED, reason, text)


def test_bad_input_fails_through_the_pod_failure_policy() -> None:
    j = job(conditions=[condition("FailureTarget", "PodFailurePolicy")])
    obs = look(j, [pod(phase="Failed", state=terminated(2, "InvalidInput: empty split"))])
    assert (obs.situation, obs.reason, obs.exit_code) == (Situation.FAILED, "InvalidInput", 2)


def test_backoff_limit_without_pods() -> None:
    j = job(
        conditions=[
            condition(
                "Failed", "BackoffLimitExceeded", "Job has reached the specified backoff limit"
            )
        ]
    )
    obs = look(j)
    assert obs.situation is Situation.BACKOFF_LIMIT_EXCEEDED
    assert obs.message == "Job has reached the specified backoff limit."


def test_other_job_failure_reasons_pass_through() -> None:
    obs = look(job(conditions=[condition("Failed", "MaxFailedIndexesExceeded", "x")]))
    assert (obs.situation, obs.reason) == (Situation.FAILED, "MaxFailedIndexesExceeded")


# ---- the trainer's own end, and containers that outlive it --------------------------------


def test_trainer_exit_zero_succeeds_while_a_sidecar_keeps_the_pod_running() -> None:
    j = job()
    p = pod(phase="Running", scheduled=5, state=terminated(0, finished=100), sidecar=running(6))
    obs = look(j, [p])
    assert obs.situation is Situation.SUCCEEDED and obs.terminal
    assert obs.lingering == ("mesh-proxy",)
    assert obs.trainer_ended_at == at(100) and obs.finished_at == at(100)
    assert obs.message == (
        "The training finished. Container 'mesh-proxy' kept the Pod running after the trainer "
        "exited; the operator ends the Job."
    )


def test_trainer_exit_zero_without_sidecar_names_nothing() -> None:
    obs = look(job(), [pod(phase="Running", scheduled=5, state=terminated(0))])
    assert obs.situation is Situation.SUCCEEDED and obs.lingering == ()
    assert obs.message == "The training finished."


def test_a_failure_no_retry_can_mend_is_the_outcome_despite_a_sidecar() -> None:
    p = pod(
        phase="Running",
        state=terminated(2, "InvalidInput: s3://b/x.png: cannot decode the image"),
        sidecar=running(6),
    )
    obs = look(job(), [p])
    assert obs.situation is Situation.FAILED and obs.reason == "InvalidInput"
    assert obs.lingering == ("mesh-proxy",)


def test_a_retryable_failure_with_a_sidecar_is_an_attempt_to_end() -> None:
    p = pod(phase="Running", state=terminated(137), sidecar=running(6))
    obs = look(job(), [p])
    assert obs.situation is Situation.RETRYING and obs.reason == "TrainerCrashed"
    assert obs.lingering == ("mesh-proxy",) and not obs.terminal


def test_attempts_and_the_latest_failure() -> None:
    first = pod(
        "kv-pets-v1-aaaaa",
        phase="Failed",
        created=0,
        state=terminated(1, "TrainingFailed: the loss is nan", finished=50),
    )
    second = pod("kv-pets-v1-bbbbb", phase="Running", created=60, state=running(70))
    obs = look(job(), [second, first])
    assert obs.situation is Situation.RUNNING
    seen = obs.attempts
    assert seen is not None and seen.count == 2 and seen.failed_attempt == 1
    assert seen.failure is not None and seen.failure.reason == "TrainingFailed"
    assert seen.failed_at == at(50)
