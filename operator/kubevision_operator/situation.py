"""The words of a training's state: :class:`Situation` (where it stands now, one value per
row of ``statustable.TABLE``) and :class:`Observation` (what ``observe.observe`` found).
Pure data; ``observe`` re-exports both."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Final

from kubevision_operator import podstate


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
    #: A multi-Pod training restarts its gang: once the status says so, the operator deletes
    #: the Job (unless it is being deleted already) and creates the next attempt's.
    restart: bool = False

    @property
    def terminal(self) -> bool:
        """Whether the training is over."""
        return self.situation in TERMINAL
