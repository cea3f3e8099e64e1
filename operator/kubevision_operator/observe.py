"""What is true now about one training, read from the objects the operator can see.

:func:`observe` turns the Job, its Pods, whether the View exists and the queue into one
:class:`Observation`. It is pure (plain dicts in, a frozen dataclass out, no clock), so every
case is a unit test; ``statustable.TABLE`` maps each :class:`Situation` to conditions and
steps.
"""

from __future__ import annotations

from typing import Any

from kubevision_api.modelversion import ModelVersionSpec
from kubevision_api.progress import TrainerReport
from kubevision_api.status import StepState
from kubevision_operator import gang, podstate
from kubevision_operator.jobstate import job_end
from kubevision_operator.situation import TERMINAL, Observation, Situation

__all__ = ["TERMINAL", "Observation", "Situation", "observe"]


def _job_succeeded(
    job: dict[str, Any], condition: dict[str, Any], common: dict[str, Any]
) -> Observation:
    """The Job's Complete condition: the training finished at the Job's completionTime (or the
    condition's transition time)."""
    finished = podstate.parse_time(
        job.get("status", {}).get("completionTime")
    ) or podstate.parse_time(condition.get("lastTransitionTime"))
    return Observation(
        Situation.SUCCEEDED, "The training finished.", finished_at=finished, exit_code=0, **common
    )


def _failed(
    job: dict[str, Any],
    cond: dict[str, Any],
    pods: list[dict[str, Any]],
    spec: ModelVersionSpec,
    common: dict[str, Any],
) -> Observation:
    """A failed Job: the deadline first (the Job's own condition says so), then the last
    failed attempt's trainer, then the Job's condition."""
    finished = podstate.parse_time(cond.get("lastTransitionTime"))
    job_reason = str(cond.get("reason") or "")
    if job_reason == "DeadlineExceeded":
        deadline = job.get("spec", {}).get("activeDeadlineSeconds")
        return Observation(
            Situation.DEADLINE_EXCEEDED,
            f"The training ran longer than its activeDeadlineSeconds ({deadline} s) and was "
            "stopped.",
            reason="DeadlineExceeded",
            finished_at=finished,
            **common,
        )
    failed_pods = [p for p in pods if p.get("status", {}).get("phase") == "Failed"]
    newest = podstate.newest(failed_pods)
    failure = podstate.pod_failure(newest, spec) if newest is not None else None
    if failure is not None:
        return Observation(
            Situation.OOM_KILLED if failure.oom_killed else Situation.FAILED,
            failure.message,
            reason=failure.reason,
            finished_at=finished,
            exit_code=failure.exit_code,
            **common,
        )
    message = podstate.sentence(str(cond.get("message") or "The training Job failed"))
    if job_reason == "BackoffLimitExceeded":
        return Observation(
            Situation.BACKOFF_LIMIT_EXCEEDED,
            message,
            reason="BackoffLimitExceeded",
            finished_at=finished,
            **common,
        )
    reason = job_reason if podstate.CAMEL.match(job_reason) else "JobFailed"
    return Observation(Situation.FAILED, message, reason=reason, finished_at=finished, **common)


def _trainer_ended(
    pod: dict[str, Any],
    ended: podstate.TrainerExit,
    spec: ModelVersionSpec,
    common: dict[str, Any],
) -> Observation:
    """The trainer container ended while its Pod has not (yet) failed: exit 0 is the
    outcome Succeeded; a failure that no retry can mend is the outcome Failed; another failure
    is an attempt to retry. Containers that outlive the trainer are named."""
    names = ", ".join(repr(name) for name in ended.lingering)
    held = (
        f" Container {names} kept the Pod running after the trainer exited; the operator ends "
        "the Job."
        if ended.lingering
        else ""
    )
    common = {
        **common,
        "lingering": ended.lingering,
        "exit_code": ended.exit_code,
        "trainer_ended_at": ended.finished_at,
    }
    if ended.exit_code == 0:
        return Observation(
            Situation.SUCCEEDED,
            "The training finished." + held,
            finished_at=ended.finished_at,
            **common,
        )
    failure = podstate.pod_failure(pod, spec)
    reason = failure.reason if failure else "TrainerCrashed"
    message = failure.message if failure else f"The trainer exited with code {ended.exit_code}."
    if failure is not None and not failure.retry:
        return Observation(
            Situation.FAILED,
            message + held,
            reason=reason,
            finished_at=ended.finished_at,
            **common,
        )
    return Observation(
        Situation.RETRYING,
        f"{message}{held} The Job starts another attempt.",
        reason=reason,
        **common,
    )


def _suspended(
    job: dict[str, Any], spec: ModelVersionSpec, common: dict[str, Any]
) -> Observation | None:
    """A suspended Job: by its user, waiting for Kueue, or being resumed (None otherwise)."""
    if not job.get("spec", {}).get("suspend"):
        return None
    policy = spec.run_policy
    if policy.suspend:
        return Observation(
            Situation.SUSPENDED,
            "spec.runPolicy.suspend is true; the trainer resumes from last.pt when it is unset.",
            **common,
        )
    if policy.queue_name:
        return Observation(
            Situation.AWAITING_ADMISSION,
            f"The Job waits for Kueue to admit it from LocalQueue {policy.queue_name!r}.",
            **common,
        )
    return Observation(Situation.STARTING, "The training Job is being resumed.", **common)


def _gang_failed(
    job: dict[str, Any],
    pods: list[dict[str, Any]],
    spec: ModelVersionSpec,
    attempt: int,
    common: dict[str, Any],
) -> Observation:
    """A multi-Pod attempt failed: the gang restarts while its first failure allows a retry
    and attempts are left (``runPolicy.backoffLimit`` retries after the first); otherwise the
    training fails."""
    end = job_end(job)
    found, failed_at = gang.attempt_failure(pods, spec, end.condition if end else None)
    common = {**common, "attempts": podstate.Attempts(attempt, found, attempt, failed_at)}
    attempts = spec.run_policy.backoff_limit + 1
    if found.retry and attempt < attempts:
        return Observation(
            Situation.RETRYING,
            f"{found.message} The gang restarts: attempt {attempt + 1} of {attempts}.",
            reason=found.reason,
            exit_code=found.exit_code,
            restart=True,
            **common,
        )
    left = f" Attempt {attempt} of {attempts}: no retry is left." if found.retry else ""
    return Observation(
        Situation.OOM_KILLED if found.oom_killed else Situation.FAILED,
        found.message + left,
        reason=found.reason,
        finished_at=failed_at,
        exit_code=found.exit_code,
        **common,
    )


def _gang(
    job: dict[str, Any],
    pods: list[dict[str, Any]],
    spec: ModelVersionSpec,
    report: TrainerReport | None,
) -> Observation:
    """A multi-Pod Job (``gang``): its deletion for a restart, its outcome, a failed Pod,
    suspension, then Pods that wait for a node, are not created yet, or start. The rank-0
    Pod speaks for the gang (it alone reports)."""
    nodes = int(job.get("spec", {}).get("completions") or 1)
    attempt = gang.job_attempt(job)
    ranked = gang.by_rank(pods)
    common: dict[str, Any] = {
        "job_name": job.get("metadata", {}).get("name"),
        "attempts": podstate.Attempts(attempt),
        "pod_name": gang.pod_name(ranked[0]) if ranked else None,
        "scheduled_at": gang.scheduled_at(pods, nodes),
        "started_at": gang.started_at(pods, nodes),
    }
    if job.get("metadata", {}).get("deletionTimestamp"):
        return Observation(
            Situation.RETRYING,
            f"The Pods of attempt {attempt} are stopping; attempt {attempt + 1} starts once "
            "they are gone.",
            reason="GangRestart",
            restart=True,
            **common,
        )
    end = job_end(job)
    if end is not None and end.succeeded:
        return _job_succeeded(job, end.condition, common)
    if end is not None and end.condition.get("reason") == "DeadlineExceeded":
        return _failed(job, end.condition, [], spec, common)
    if end is not None or any(podstate.failed(p) for p in pods):
        return _gang_failed(job, pods, spec, attempt, common)
    suspended = _suspended(job, spec, common)
    if suspended is not None:
        return suspended
    done = gang.all_done(pods, nodes)
    if done is not None:
        # Every trainer exited 0; other containers may still hold their Pods.
        lingering, ended = done
        return Observation(
            Situation.SUCCEEDED,
            "The training finished.",
            finished_at=ended,
            exit_code=0,
            lingering=lingering,
            trainer_ended_at=ended,
            **common,
        )
    wait = gang.waiting(pods, nodes)
    if wait is not None:
        return Observation(Situation.UNSCHEDULABLE, wait, reason="Unschedulable", **common)
    if len(ranked) < nodes:
        return Observation(
            Situation.STARTING,
            f"The Job has created {len(ranked)} of {nodes} trainer Pods.",
            **common,
        )
    starting = gang.starting(pods, nodes)
    if starting is None:
        return Observation(Situation.RUNNING, _running_message(report), **common)
    message, reason = starting
    return Observation(Situation.POD_PENDING, message, reason=reason, **common)


def _running_message(report: TrainerReport | None) -> str:
    if report is None:
        return "The trainer is running."
    for step in report.steps:
        if step.state is StepState.RUNNING:
            return f"The trainer is running: {step.name.value}, epoch {report.progress.display}."
    return f"The trainer is running: epoch {report.progress.display}."


def observe(
    job: dict[str, Any] | None,
    pods: list[dict[str, Any]],
    view_found: bool,
    report: TrainerReport | None,
    queued_position: int | None,
    *,
    spec: ModelVersionSpec,
    plan_error: str | None = None,
) -> Observation:
    """What is true now.

    Args:
        job: the ModelVersion's Job as the API server returns it, or None when absent.
        pods: the Job's Pods (any attempt, any phase).
        view_found: whether the View named by ``spec.viewRef`` exists. Once a Job exists the
            plan is a snapshot, so the View no longer matters.
        report: the trainer's latest report, if any (for the Running message only).
        queued_position: position (from 1) in the operator's concurrency queue, or None when
            the limit lets the training run. Read only without a Job: the operator creates
            a Job once the limit admits the training, so a Job is never queued.
        spec: the ModelVersion's spec (suspend, queue name, memory limit).
        plan_error: why ``resolve()`` refused the plan (architecture and task disagree).

    Precedence: a finished Job (:func:`jobstate.job_end`), then a suspended Job, then the
    newest Pod; without a Job: the View, the plan, the user's suspend, the queue.
    """
    policy = spec.run_policy
    if job is None:
        if not view_found:
            return Observation(
                Situation.VIEW_MISSING,
                f"View {spec.view_ref.name!r} was not found; the training starts once it exists.",
            )
        if plan_error:
            return Observation(
                Situation.INVALID_PLAN, podstate.sentence(plan_error), reason="InvalidPlan"
            )
        if policy.suspend:
            return Observation(Situation.SUSPENDED, "spec.runPolicy.suspend is true.")
        if queued_position is not None:
            return Observation(
                Situation.QUEUED,
                f"Queued at position {queued_position}: the operator's concurrency limit is "
                "reached.",
                position=queued_position,
            )
        return Observation(Situation.STARTING, "The training Job is being created.")

    if gang.is_gang_job(job):
        return _gang(job, pods, spec, report)
    common: dict[str, Any] = {
        "job_name": job.get("metadata", {}).get("name"),
        "attempts": podstate.attempts(pods, spec),
    }
    pod = podstate.newest(pods)
    if pod is not None:
        common["pod_name"] = pod.get("metadata", {}).get("name")
        common["scheduled_at"] = podstate.scheduled_at(pod)
        common["started_at"] = podstate.started_at(pod)
    end = job_end(job)
    if end is not None and end.succeeded:
        return _job_succeeded(job, end.condition, common)
    if end is not None:
        return _failed(job, end.condition, pods, spec, common)

    suspended = _suspended(job, spec, common)
    if suspended is not None:
        return suspended
    if pod is None:
        return Observation(Situation.STARTING, "The Job is creating the trainer Pod.", **common)
    phase = pod.get("status", {}).get("phase")
    ended = podstate.trainer_exit(pod)
    if ended is not None and phase != "Failed":
        # The trainer's own end decides, not the Pod's phase: another container (a service
        # mesh's proxy) may keep the Pod running after the trainer is done.
        return _trainer_ended(pod, ended, spec, common)
    if phase == "Failed":
        attempt = podstate.pod_failure(pod, spec)
        reason = attempt.reason if attempt else "PodFailed"
        detail = attempt.message if attempt else "The trainer Pod failed."
        return Observation(
            Situation.RETRYING,
            f"{detail} The Job starts another attempt.",
            reason=reason,
            exit_code=attempt.exit_code if attempt else None,
            **common,
        )
    if phase in ("Running", "Succeeded"):
        return Observation(Situation.RUNNING, _running_message(report), **common)
    scheduled = next(
        (
            c
            for c in pod.get("status", {}).get("conditions") or []
            if c.get("type") == "PodScheduled"
        ),
        None,
    )
    if scheduled is not None and scheduled.get("status") == "False":
        message = scheduled.get("message") or scheduled.get("reason") or "Not scheduled yet"
        return Observation(
            Situation.UNSCHEDULABLE,
            podstate.sentence(str(message)),
            reason=str(scheduled.get("reason") or "Unschedulable"),
            **common,
        )
    waiting = (podstate.container_status(pod).get("state") or {}).get("waiting") or {}
    waiting_reason = str(waiting.get("reason") or "ContainerCreating")
    detail = waiting.get("message") or f"The trainer container is waiting ({waiting_reason})"
    return Observation(
        Situation.POD_PENDING,
        podstate.sentence(str(detail)),
        reason=waiting_reason if podstate.CAMEL.match(waiting_reason) else "ContainerCreating",
        **common,
    )
