"""What is true now about one training, read from the objects the operator can see.

:func:`observe` turns the Job, its Pods, whether the View exists and the queue into one
:class:`Observation`. It is pure (plain dicts in, a frozen dataclass out, no clock), so every
case is a unit test; ``statustable.TABLE`` maps each :class:`Situation` to conditions and
steps.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Final

from kubevision_api.modelversion import ModelVersionSpec
from kubevision_api.progress import TrainerReport
from kubevision_api.status import StepState
from kubevision_operator import podstate
from kubevision_operator.jobstate import job_end


class Situation(StrEnum):
    """Where a training stands now: one value per row of ``statustable.TABLE``."""

    VIEW_MISSING = "ViewMissing"
    INVALID_PLAN = "InvalidPlan"
    QUEUED = "Queued"
    AWAITING_ADMISSION = "AwaitingAdmission"
    SUSPENDED = "Suspended"
    STARTING = "Starting"
    UNSCHEDULABLE = "Unschedulable"
    POD_PENDING = "PodPending"
    RUNNING = "Running"
    RETRYING = "Retrying"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    OOM_KILLED = "OOMKilled"
    DEADLINE_EXCEEDED = "DeadlineExceeded"
    BACKOFF_LIMIT_EXCEEDED = "BackoffLimitExceeded"


#: Situations after which nothing changes any more: the training is over.
TERMINAL: Final = frozenset(
    {
        Situation.INVALID_PLAN,
        Situation.SUCCEEDED,
        Situation.FAILED,
        Situation.OOM_KILLED,
        Situation.DEADLINE_EXCEEDED,
        Situation.BACKOFF_LIMIT_EXCEEDED,
    }
)


@dataclass(frozen=True)
class Observation:
    """One observation. ``message`` is a sentence for people; ``reason`` a CamelCase word
    where the situation has several causes (the trainer's reason for Failed, the container's
    waiting reason for PodPending, the failed attempt's for Retrying)."""

    situation: Situation
    message: str
    reason: str | None = None
    job_name: str | None = None
    pod_name: str | None = None
    #: When the newest Pod was bound to a node (PodScheduled), from the Pod's status.
    scheduled_at: datetime | None = None
    #: When the trainer container started, from the Pod's status.
    started_at: datetime | None = None
    #: When the Job finished (completionTime, or the Failed condition's time).
    finished_at: datetime | None = None
    exit_code: int | None = None
    #: Position in the operator's queue, from 1 (Queued only).
    position: int | None = None
    #: The Job's attempts so far, and the latest that failed.
    attempts: podstate.Attempts | None = None
    #: Containers that keep the trainer's Pod running after the trainer ended (a sidecar):
    #: the operator ends the attempt once they have outlived it by a bound.
    lingering: tuple[str, ...] = ()
    #: When the trainer container ended while its Pod went on (``lingering``).
    trainer_ended_at: datetime | None = None

    @property
    def terminal(self) -> bool:
        """Whether the training is over."""
        return self.situation in TERMINAL


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
        finished = podstate.parse_time(
            job.get("status", {}).get("completionTime")
        ) or podstate.parse_time(end.condition.get("lastTransitionTime"))
        return Observation(
            Situation.SUCCEEDED,
            "The training finished.",
            finished_at=finished,
            exit_code=0,
            **common,
        )
    if end is not None:
        return _failed(job, end.condition, pods, spec, common)

    if job.get("spec", {}).get("suspend"):
        if policy.suspend:
            return Observation(
                Situation.SUSPENDED,
                "spec.runPolicy.suspend is true; the trainer resumes from last.pt when it is "
                "unset.",
                **common,
            )
        if policy.queue_name:
            return Observation(
                Situation.AWAITING_ADMISSION,
                f"The Job waits for Kueue to admit it from LocalQueue {policy.queue_name!r}.",
                **common,
            )
        return Observation(Situation.STARTING, "The training Job is being resumed.", **common)

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
