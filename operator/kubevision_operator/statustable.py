"""The one table of a ModelVersion's status: for each :class:`~observe.Situation`, what
each condition becomes, what happens to the steps, and which phase :func:`summarize` derives
(docs/operator-status.md, The table). Pure data and two pure functions; ``status.py``
composes a status from a row.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from kubevision_api.meta import Condition, ConditionStatus
from kubevision_api.status import Phase, StepState
from kubevision_operator.situation import Situation

#: Condition types, in the order they are written.
CONDITION_TYPES: Final = ("ViewResolved", "Admitted", "Running", "Succeeded", "Failed", "Suspended")


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
    """What one situation means.

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


#: The one table: situation -> conditions, steps, phase.
TABLE: Final[dict[Situation, Row]] = {
    Situation.VIEW_MISSING: Row(
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
    Situation.INVALID_PLAN: Row(
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
    Situation.QUEUED: _pending(
        Cell("False", "ConcurrencyLimit", "{message}"),
        Cell("False", "Queued", "The training waits in the operator's queue."),
        StepState.PENDING,
        StepPolicy.PAUSE,
        Phase.QUEUED,
    ),
    Situation.AWAITING_ADMISSION: _pending(
        Cell("False", "WaitingForKueue", "{message}"),
        Cell("False", "Queued", "The training waits for Kueue."),
        StepState.PENDING,
        StepPolicy.PAUSE,
        Phase.QUEUED,
    ),
    Situation.SUSPENDED: Row(
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
    Situation.STARTING: _pending(
        _ADMITTED,
        Cell("False", "Starting", "{message}"),
        StepState.PENDING,
        StepPolicy.KEEP,
        Phase.PENDING,
    ),
    Situation.UNSCHEDULABLE: _pending(
        _ADMITTED,
        Cell("False", "Unschedulable", "{message}"),
        StepState.PENDING,
        StepPolicy.KEEP,
        Phase.PENDING,
    ),
    Situation.POD_PENDING: _pending(
        _ADMITTED,
        Cell("False", "{reason}", "{message}"),
        StepState.RUNNING,
        StepPolicy.KEEP,
        Phase.PENDING,
    ),
    Situation.RUNNING: _pending(
        _ADMITTED,
        Cell("True", "TrainerRunning", "{message}"),
        StepState.SUCCEEDED,
        StepPolicy.KEEP,
        Phase.RUNNING,
    ),
    Situation.RETRYING: _pending(
        _ADMITTED,
        Cell("False", "Retrying", "{message}"),
        StepState.PENDING,
        StepPolicy.PAUSE,
        Phase.PENDING,
    ),
    Situation.SUCCEEDED: Row(
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
    Situation.FAILED: _failed("{reason}"),
    Situation.OOM_KILLED: _failed("OOMKilled"),
    Situation.DEADLINE_EXCEEDED: _failed("DeadlineExceeded"),
    Situation.BACKOFF_LIMIT_EXCEEDED: _failed("BackoffLimitExceeded"),
}


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


def markdown_table() -> str:
    """:data:`TABLE` as the Markdown table of docs/operator-status.md (a test keeps them
    equal)."""
    head = ["Observation", *CONDITION_TYPES, "Scheduling", "Trainer steps", "Phase"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for situation, row in TABLE.items():
        cells = [f"{c.status} `{c.reason}`" for c in row.conditions]
        scheduling = row.scheduling.value if row.scheduling else "Succeeded if started"
        lines.append(
            "| "
            + " | ".join([situation.value, *cells, scheduling, row.steps.value, row.phase.value])
            + " |"
        )
    return "\n".join(lines) + "\n"
