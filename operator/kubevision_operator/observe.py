"""What is true now about one training, read from the objects the operator can see.

:func:`observe` turns the Job, its Pods, whether the View exists and the queue into one
:class:`Observation`. It is pure (plain dicts in, a frozen dataclass out, no clock), so every
case is a unit test; ``statustable.TABLE`` maps each :class:`Situation` to conditions and
steps.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Final

from kubevision_api import contract
from kubevision_api.modelversion import ModelVersionSpec, StepState
from kubevision_api.progress import TrainerReport
from kubevision_operator.jobstate import job_end, true_conditions

#: Longest message taken from a container's log tail (FallbackToLogsOnError).
MAX_MESSAGE: Final = 1024
_CAMEL = re.compile(r"^[A-Z][A-Za-z0-9]*$")


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

    @property
    def terminal(self) -> bool:
        """Whether the training is over."""
        return self.situation in TERMINAL


def parse_time(value: Any) -> datetime | None:
    """An RFC 3339 timestamp from the API server (``2024-05-01T10:00:00Z``), or None when
    absent.

    Raises:
        ValueError: a string that is not an ISO 8601 timestamp.
    """
    if isinstance(value, datetime):
        return value
    if not value or not isinstance(value, str):
        return None
    return datetime.fromisoformat(value)


def _newest(pods: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The Job's latest attempt: newest creationTimestamp, then name (a total order)."""
    if not pods:
        return None

    def key(pod: dict[str, Any]) -> tuple[str, str]:
        meta = pod.get("metadata", {})
        created = parse_time(meta.get("creationTimestamp"))
        return (created.isoformat() if created else "", str(meta.get("name", "")))

    return max(pods, key=key)


def _container_status(pod: dict[str, Any]) -> dict[str, Any]:
    for status in pod.get("status", {}).get("containerStatuses") or []:
        if status.get("name") == contract.CONTAINER:
            return dict(status)
    return {}


def _terminated(pod: dict[str, Any]) -> dict[str, Any] | None:
    state = _container_status(pod).get("state") or {}
    terminated = state.get("terminated")
    return dict(terminated) if terminated else None


def _scheduled_at(pod: dict[str, Any]) -> datetime | None:
    cond = true_conditions(pod).get("PodScheduled")
    return parse_time(cond.get("lastTransitionTime")) if cond else None


def _started_at(pod: dict[str, Any]) -> datetime | None:
    state = _container_status(pod).get("state") or {}
    for key in ("running", "terminated"):
        if state.get(key) and state[key].get("startedAt"):
            return parse_time(state[key]["startedAt"])
    return None


def _memory_limit(pod: dict[str, Any], spec: ModelVersionSpec) -> str:
    for container in pod.get("spec", {}).get("containers") or []:
        if container.get("name") == contract.CONTAINER:
            limit = (container.get("resources") or {}).get("limits", {}).get("memory")
            if limit:
                return str(limit)
    return spec.resources.memory


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    line = lines[-1] if lines else ""
    return line if len(line) <= MAX_MESSAGE else line[: MAX_MESSAGE - 3] + "..."


def _sentence(text: str) -> str:
    """``text`` as a sentence: a capital first word (unless it is a name such as a URI or a
    file, whose case matters) and a final full stop."""
    text = text.strip()
    if not text:
        return text
    first = text.split(maxsplit=1)[0]
    if first.isalpha() and first.islower():
        text = text[0].upper() + text[1:]
    return text if text.endswith((".", "!", "?")) else text + "."


@dataclass(frozen=True)
class _PodFailure:
    situation: Situation
    reason: str
    message: str
    exit_code: int | None


def _pod_failure(pod: dict[str, Any], spec: ModelVersionSpec) -> _PodFailure | None:
    """Why the trainer of a failed Pod stopped: OOMKilled (naming the memory limit), the
    trainer's termination message ("Reason: message"), a crash (its log's last line), or a
    disruption (DisruptionTarget, which the pod failure policy ignores)."""
    terminated = _terminated(pod)
    if terminated is None:
        disruption = true_conditions(pod).get("DisruptionTarget")
        if disruption is None:
            return None
        detail = disruption.get("message") or disruption.get("reason") or "disrupted"
        return _PodFailure(
            Situation.FAILED, "Disrupted", _sentence(f"Pod disrupted: {detail}"), None
        )
    code = terminated.get("exitCode")
    exit_code = int(code) if code is not None else None
    if terminated.get("reason") == "OOMKilled":
        limit = _memory_limit(pod, spec)
        return _PodFailure(
            Situation.OOM_KILLED,
            "OOMKilled",
            f"The trainer was killed for exceeding its memory limit of {limit} "
            "(spec.resources.memory).",
            exit_code,
        )
    text = str(terminated.get("message") or "").strip()
    parsed = contract.parse_termination(text)
    if parsed is not None and parsed[0] is not contract.Outcome.SUCCEEDED:
        outcome, message = parsed
        return _PodFailure(Situation.FAILED, outcome.reason, _sentence(message), exit_code)
    line = _last_line(text)
    detail = f"The trainer exited with code {exit_code}"
    return _PodFailure(
        Situation.FAILED,
        "TrainerCrashed",
        _sentence(f"{detail}: {line}" if line else detail),
        exit_code,
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
    finished = parse_time(cond.get("lastTransitionTime"))
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
    newest = _newest(failed_pods)
    failure = _pod_failure(newest, spec) if newest is not None else None
    if failure is not None:
        return Observation(
            failure.situation,
            failure.message,
            reason=failure.reason,
            finished_at=finished,
            exit_code=failure.exit_code,
            **common,
        )
    message = _sentence(str(cond.get("message") or "The training Job failed"))
    if job_reason == "BackoffLimitExceeded":
        return Observation(
            Situation.BACKOFF_LIMIT_EXCEEDED,
            message,
            reason="BackoffLimitExceeded",
            finished_at=finished,
            **common,
        )
    reason = job_reason if _CAMEL.match(job_reason) else "JobFailed"
    return Observation(Situation.FAILED, message, reason=reason, finished_at=finished, **common)


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
            return Observation(Situation.INVALID_PLAN, _sentence(plan_error), reason="InvalidPlan")
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

    common: dict[str, Any] = {"job_name": job.get("metadata", {}).get("name")}
    pod = _newest(pods)
    if pod is not None:
        common["pod_name"] = pod.get("metadata", {}).get("name")
        common["scheduled_at"] = _scheduled_at(pod)
        common["started_at"] = _started_at(pod)
    end = job_end(job)
    if end is not None and end.succeeded:
        finished = parse_time(job.get("status", {}).get("completionTime")) or parse_time(
            end.condition.get("lastTransitionTime")
        )
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
    if phase == "Failed":
        attempt = _pod_failure(pod, spec)
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
            _sentence(str(message)),
            reason=str(scheduled.get("reason") or "Unschedulable"),
            **common,
        )
    waiting = (_container_status(pod).get("state") or {}).get("waiting") or {}
    waiting_reason = str(waiting.get("reason") or "ContainerCreating")
    detail = waiting.get("message") or f"The trainer container is waiting ({waiting_reason})"
    return Observation(
        Situation.POD_PENDING,
        _sentence(str(detail)),
        reason=waiting_reason if _CAMEL.match(waiting_reason) else "ContainerCreating",
        **common,
    )
