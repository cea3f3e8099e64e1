"""A ModelVersion's status, composed from one observation and the trainer's latest report.

Everything lives in :data:`TABLE`: one row per observation kind says what each condition
becomes, what happens to the steps, and which phase :func:`summarize` derives. Nothing
branches on ``phase``; it exists for the printer column. Pure: the caller passes ``now``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Final

from kubevision_api import modelversion
from kubevision_api.contract import StepName
from kubevision_api.meta import Condition, ConditionStatus
from kubevision_api.modelversion import (
    ModelVersionStatus,
    Phase,
    Progress,
    Step,
    StepState,
)
from kubevision_api.plan import TrainingPlan
from kubevision_api.progress import TrainerReport
from kubevision_operator.observe import Kind, Observation

#: Condition types, in the order they are written.
CONDITION_TYPES: Final = ("ViewResolved", "Admitted", "Running", "Succeeded", "Failed", "Suspended")
TRAINER_STEPS: Final = tuple(s for s in StepName if s is not StepName.SCHEDULING)
_UNFINISHED: Final = (StepState.PENDING, StepState.RUNNING)


class StepPolicy(StrEnum):
    """What a row does to the trainer's steps (LoadingDataset .. Exporting)."""

    #: As the trainer reported them.
    KEEP = "Keep"
    #: A Running step goes back to Pending: the trainer is not running now (suspended,
    #: queued again, between attempts); the next attempt reports it again.
    PAUSE = "Pause"
    #: Every unfinished step Succeeded: the Job completed, whatever reports were lost.
    SUCCEED = "Succeed"
    #: The first unfinished step (Scheduling included) Failed, the later ones Skipped.
    FAIL = "Fail"
    #: Every step Skipped, Scheduling included: the training never runs.
    SKIP = "Skip"


@dataclass(frozen=True)
class Cell:
    """One condition of a row. ``reason`` and ``message`` are templates over the
    observation: ``{reason}``, ``{message}``, ``{position}``."""

    status: ConditionStatus
    reason: str
    message: str


@dataclass(frozen=True)
class Row:
    """What one observation kind means.

    Attributes:
        conditions: one cell per :data:`CONDITION_TYPES`, in that order.
        scheduling: the Scheduling step's state; None: Succeeded when the trainer started,
            else Pending (then FAIL turns it Failed).
        steps: what happens to the trainer's steps.
        phase: what :func:`summarize` gives for these conditions (a test checks it).
    """

    conditions: tuple[Cell, Cell, Cell, Cell, Cell, Cell]
    scheduling: StepState | None
    steps: StepPolicy
    phase: Phase


_RESOLVED = Cell("True", "Resolved", "The View was found and resolved.")
_ADMITTED = Cell("True", "Admitted", "The training was admitted to run.")
_NOT_STARTED = Cell("False", "NotStarted", "The trainer has not started.")
_NOT_FINISHED = Cell("Unknown", "NotFinished", "The training has not finished.")
_NOT_SUSPENDED = Cell("False", "NotSuspended", "The training is not suspended.")


def _pending(
    admitted: Cell, running: Cell, scheduling: StepState, steps: StepPolicy, phase: Phase
) -> Row:
    return Row(
        (_RESOLVED, admitted, running, _NOT_FINISHED, _NOT_FINISHED, _NOT_SUSPENDED),
        scheduling,
        steps,
        phase,
    )


def _failed(reason: str) -> Row:
    return Row(
        (
            _RESOLVED,
            _ADMITTED,
            Cell("False", reason, "The trainer stopped."),
            Cell("False", reason, "The training failed."),
            Cell("True", reason, "{message}"),
            _NOT_SUSPENDED,
        ),
        None,
        StepPolicy.FAIL,
        Phase.FAILED,
    )


#: The one table: observation kind -> conditions, steps, phase.
TABLE: Final[dict[Kind, Row]] = {
    Kind.VIEW_MISSING: Row(
        (
            Cell("False", "ViewNotFound", "{message}"),
            Cell("Unknown", "WaitingForView", "Admission waits for the View."),
            _NOT_STARTED,
            _NOT_FINISHED,
            _NOT_FINISHED,
            _NOT_SUSPENDED,
        ),
        StepState.PENDING,
        StepPolicy.KEEP,
        Phase.PENDING,
    ),
    Kind.INVALID_PLAN: Row(
        (
            _RESOLVED,
            Cell("False", "InvalidPlan", "{message}"),
            _NOT_STARTED,
            Cell("False", "InvalidPlan", "The training cannot run."),
            Cell("True", "InvalidPlan", "{message}"),
            _NOT_SUSPENDED,
        ),
        StepState.SKIPPED,
        StepPolicy.SKIP,
        Phase.FAILED,
    ),
    Kind.QUEUED: _pending(
        Cell("False", "ConcurrencyLimit", "{message}"),
        Cell("False", "Queued", "The training waits in the operator's queue."),
        StepState.PENDING,
        StepPolicy.PAUSE,
        Phase.QUEUED,
    ),
    Kind.AWAITING_ADMISSION: _pending(
        Cell("False", "WaitingForKueue", "{message}"),
        Cell("False", "Queued", "The training waits for Kueue."),
        StepState.PENDING,
        StepPolicy.PAUSE,
        Phase.QUEUED,
    ),
    Kind.SUSPENDED: Row(
        (
            _RESOLVED,
            Cell("False", "Suspended", "The training is suspended."),
            Cell("False", "Suspended", "The training is suspended."),
            _NOT_FINISHED,
            _NOT_FINISHED,
            Cell("True", "SuspendedByUser", "{message}"),
        ),
        StepState.PENDING,
        StepPolicy.PAUSE,
        Phase.SUSPENDED,
    ),
    Kind.STARTING: _pending(
        _ADMITTED,
        Cell("False", "Starting", "{message}"),
        StepState.PENDING,
        StepPolicy.KEEP,
        Phase.PENDING,
    ),
    Kind.UNSCHEDULABLE: _pending(
        _ADMITTED,
        Cell("False", "Unschedulable", "{message}"),
        StepState.PENDING,
        StepPolicy.KEEP,
        Phase.PENDING,
    ),
    Kind.POD_PENDING: _pending(
        _ADMITTED,
        Cell("False", "{reason}", "{message}"),
        StepState.RUNNING,
        StepPolicy.KEEP,
        Phase.PENDING,
    ),
    Kind.RUNNING: _pending(
        _ADMITTED,
        Cell("True", "TrainerRunning", "{message}"),
        StepState.SUCCEEDED,
        StepPolicy.KEEP,
        Phase.RUNNING,
    ),
    Kind.RETRYING: _pending(
        _ADMITTED,
        Cell("False", "Retrying", "{message}"),
        StepState.PENDING,
        StepPolicy.PAUSE,
        Phase.PENDING,
    ),
    Kind.SUCCEEDED: Row(
        (
            _RESOLVED,
            _ADMITTED,
            Cell("False", "Completed", "The trainer finished."),
            Cell("True", "Completed", "{message}"),
            Cell("False", "Completed", "The training did not fail."),
            _NOT_SUSPENDED,
        ),
        StepState.SUCCEEDED,
        StepPolicy.SUCCEED,
        Phase.SUCCEEDED,
    ),
    Kind.FAILED: _failed("{reason}"),
    Kind.OOM_KILLED: _failed("OOMKilled"),
    Kind.DEADLINE_EXCEEDED: _failed("DeadlineExceeded"),
    Kind.BACKOFF_LIMIT_EXCEEDED: _failed("BackoffLimitExceeded"),
}


# The cursor is part of the API's status (``status.lastReport``); the names stay here for the
# table's readers.
ReportCursor = modelversion.ReportCursor
OperatorStatus = ModelVersionStatus


def summarize(conditions: list[Condition]) -> Phase:
    """The phase of a set of conditions, for the printer column only: an outcome first, then
    the user's suspend, a running trainer, a training held back from admission (Queued), and
    Pending otherwise."""
    status = {c.type: c.status for c in conditions}
    if status.get("Succeeded") == "True":
        return Phase.SUCCEEDED
    if status.get("Failed") == "True":
        return Phase.FAILED
    if status.get("Suspended") == "True":
        return Phase.SUSPENDED
    if status.get("Running") == "True":
        return Phase.RUNNING
    if status.get("Admitted") == "False":
        return Phase.QUEUED
    return Phase.PENDING


def is_finished(status: ModelVersionStatus | None) -> bool:
    """Whether the training is over (Succeeded or Failed is True). A finished ModelVersion
    never gets a new Job, even when its Job is gone (ttlSecondsAfterFinished)."""
    if status is None:
        return False
    return any(c.type in ("Succeeded", "Failed") and c.status == "True" for c in status.conditions)


def initial_status(generation: int, now: datetime) -> OperatorStatus:
    """The first visit's status: every condition Unknown, before anything is observed."""
    conditions = [
        Condition(
            type=kind,
            status="Unknown",
            reason="Reconciling",
            message="The operator has not observed the training yet.",
            last_transition_time=now,
            observed_generation=generation,
        )
        for kind in CONDITION_TYPES
    ]
    return OperatorStatus(
        phase=summarize(conditions).value,
        observed_generation=generation,
        conditions=conditions,
        steps=[Step(name=name) for name in StepName],
    )


def _conditions(
    row: Row,
    observation: Observation,
    previous: list[Condition],
    generation: int,
    now: datetime,
) -> list[Condition]:
    before = {c.type: c for c in previous}
    values = {
        "reason": observation.reason or observation.kind.value,
        "message": observation.message,
        "position": observation.position,
    }
    out = []
    for kind, cell in zip(CONDITION_TYPES, row.conditions, strict=True):
        old = before.get(kind)
        changed = old is None or old.status != cell.status
        out.append(
            Condition(
                type=kind,
                status=cell.status,
                reason=cell.reason.format(**values),
                message=cell.message.format(**values),
                # Kept while the status stays: it says since when, not when last written.
                last_transition_time=now if changed or old is None else old.last_transition_time,
                observed_generation=generation,
            )
        )
    return out


def _accepts(
    report: TrainerReport | None,
    report_pod: str | None,
    cursor: ReportCursor | None,
    observation: Observation,
) -> bool:
    """Whether ``report`` is newer than what the status holds. Within one Pod the sequence
    decides; a report from another Pod is newer only when that Pod is the Job's latest
    attempt (a terminating old Pod's last words are stale)."""
    if report is None:
        return False
    if cursor is None:
        return True
    if report_pod and cursor.pod and report_pod != cursor.pod:
        return report_pod == observation.pod_name
    return report.sequence > cursor.sequence


def _scheduling(row: Row, observation: Observation, previous: Step | None) -> Step:
    state = row.scheduling
    if state is None:
        state = StepState.SUCCEEDED if observation.started_at else StepState.PENDING
    same = previous is not None and previous.state is state
    started = observation.scheduled_at or (previous.started_at if same and previous else None)
    if state is StepState.RUNNING:
        return Step(
            name=StepName.SCHEDULING,
            state=state,
            started_at=started,
            message=observation.message,
        )
    if state is StepState.SUCCEEDED:
        finished = observation.started_at or (previous.finished_at if same and previous else None)
        return Step(name=StepName.SCHEDULING, state=state, started_at=started, finished_at=finished)
    # Pending (no start time: the scheduler has not bound the Pod) or Skipped; only an
    # unschedulable Pod has something to say: the scheduler's message.
    message = observation.message if observation.kind is Kind.UNSCHEDULABLE else None
    return Step(name=StepName.SCHEDULING, state=state, message=message)


def _apply_policy(
    policy: StepPolicy, steps: list[Step], observation: Observation, now: datetime
) -> list[Step]:
    """``steps`` is Scheduling then the trainer's steps; PAUSE and SUCCEED touch only the
    trainer's, FAIL and SKIP all of them."""
    out: list[Step] = []
    failed = any(s.state is StepState.FAILED for s in steps)
    for index, original in enumerate(steps):
        step = original
        trainer = index > 0
        if policy is StepPolicy.PAUSE and trainer and step.state is StepState.RUNNING:
            step = Step(name=step.name, state=StepState.PENDING, message=observation.message)
        elif policy is StepPolicy.SUCCEED and trainer and step.state in _UNFINISHED:
            step = step.model_copy(
                update={
                    "state": StepState.SUCCEEDED,
                    "finished_at": step.finished_at or observation.finished_at,
                }
            )
        elif policy is StepPolicy.FAIL and step.state in _UNFINISHED:
            if failed:
                step = Step(name=step.name, state=StepState.SKIPPED)
            else:
                failed = True
                step = step.model_copy(
                    update={
                        "state": StepState.FAILED,
                        "finished_at": observation.finished_at or now,
                        "message": observation.message,
                    }
                )
        elif policy is StepPolicy.SKIP:
            step = Step(name=step.name, state=StepState.SKIPPED)
        out.append(step)
    return out


def _current_step(steps: list[Step], observation: Observation) -> StepName | None:
    for step in steps:
        if step.state is StepState.RUNNING:
            return step.name
    # An unschedulable Pod is stuck in Scheduling: the column should say where.
    return StepName.SCHEDULING if observation.kind is Kind.UNSCHEDULABLE else None


def compose_status(
    previous: ModelVersionStatus | None,
    observation: Observation,
    report: TrainerReport | None,
    generation: int,
    now: datetime,
    *,
    plan: TrainingPlan | None = None,
    report_pod: str | None = None,
) -> OperatorStatus:
    """The status that ``observation`` and ``report`` make true.

    Args:
        previous: the status as stored (None or blank on the first visit). Only
            lastTransitionTime, the merged report, times that the observation cannot see
            again, the admission snapshot and a finished outcome are carried over.
        observation: what :func:`observe.observe` found now.
        report: the trainer's latest report; merged only when newer than ``previous``'s.
        generation: the ModelVersion's metadata.generation.
        now: the time of this composition (condition transitions, failures).
        plan: the resolved plan: its model id and concepts are the admission snapshot.
        report_pod: the Pod whose token sent ``report`` (the status endpoint's TokenReview).

    A finished training (Succeeded or Failed True) stays finished: an observation that is
    not an outcome (its Job was deleted after ttlSecondsAfterFinished) changes nothing but
    the generation.
    """
    prev = previous or ModelVersionStatus()
    cursor = previous.last_report if isinstance(previous, OperatorStatus) else None
    if is_finished(prev) and not observation.terminal:
        kept = OperatorStatus.model_validate(
            {**prev.model_dump(), "last_report": cursor, "observed_generation": generation}
        )
        for cond in kept.conditions:
            cond.observed_generation = generation
        return kept

    row = TABLE[observation.kind]
    conditions = _conditions(row, observation, prev.conditions, generation, now)
    before = {s.name: s for s in prev.steps}
    trainer_steps = {name: before.get(name) or Step(name=name) for name in TRAINER_STEPS}
    progress, metrics, dataset, checkpoint = (
        prev.progress,
        prev.metrics,
        prev.dataset,
        prev.checkpoint,
    )
    if report is not None and _accepts(report, report_pod, cursor, observation):
        # A report is a whole snapshot: its steps replace ours; fields it does not know yet
        # (a new attempt before its first epoch) keep what the earlier attempts found.
        reported = {s.name: s for s in report.steps}
        trainer_steps = {name: reported.get(name) or Step(name=name) for name in TRAINER_STEPS}
        progress = report.progress
        metrics = report.metrics or metrics
        dataset = report.dataset or dataset
        checkpoint = report.checkpoint or checkpoint
        cursor = ReportCursor(pod=report_pod, sequence=report.sequence)
    if progress is None and plan is not None:
        epochs = plan.spec.training.epochs
        progress = Progress(epochs=epochs, display=f"0/{epochs}")
    scheduling = _scheduling(row, observation, before.get(StepName.SCHEDULING))
    steps = _apply_policy(row.steps, [scheduling, *trainer_steps.values()], observation, now)
    start = [t for t in (prev.start_time, observation.started_at) if t is not None]
    return OperatorStatus(
        phase=summarize(conditions).value,
        observed_generation=generation,
        conditions=conditions,
        model=prev.model or (plan.model if plan else None),
        concepts=prev.concepts or (list(plan.concepts) if plan else []),
        steps=steps,
        current_step=_current_step(steps, observation),
        progress=progress,
        metrics=metrics,
        dataset=dataset,
        checkpoint=checkpoint,
        job_name=observation.job_name or prev.job_name,
        start_time=min(start) if start else None,
        completion_time=observation.finished_at if observation.terminal else None,
        last_report=cursor,
    )


def markdown_table() -> str:
    """:data:`TABLE` as the Markdown table of docs/operator-status.md (a test keeps them
    equal)."""
    head = ["Observation", *CONDITION_TYPES, "Scheduling", "Trainer steps", "Phase"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for kind, row in TABLE.items():
        cells = [f"{c.status} `{c.reason}`" for c in row.conditions]
        scheduling = row.scheduling.value if row.scheduling else "Succeeded if started"
        lines.append(
            "| "
            + " | ".join([kind.value, *cells, scheduling, row.steps.value, row.phase.value])
            + " |"
        )
    return "\n".join(lines) + "\n"
