"""Whether a training Job has finished, decided in one place for the renderer (a finished Job
is not patched) and the observer (a finished Job is an outcome). Pure: plain dicts in.

The Job controller decides a Job's outcome before it says so for good: ``SuccessCriteriaMet``
and ``FailureTarget`` come first, while the last Pods still terminate, and ``Complete`` and
``Failed`` follow once they are gone. The outcome is known from the first
of each pair on, so both count (docs/operator-status.md, Observation).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

#: Condition types that say the Job succeeded, in the order they are looked at.
SUCCESS_CONDITIONS: Final = ("Complete", "SuccessCriteriaMet")
#: Condition types that say the Job failed, in the order they are looked at.
FAILURE_CONDITIONS: Final = ("Failed", "FailureTarget")


def true_conditions(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The conditions of ``obj`` (a Job or a Pod as the API server returns it) whose status
    is True, by type."""
    found = {}
    for cond in obj.get("status", {}).get("conditions") or []:
        if cond.get("status") == "True":
            found[str(cond.get("type"))] = cond
    return found


@dataclass(frozen=True)
class JobEnd:
    """How a Job ended: ``succeeded``, and the condition that says so (its
    ``lastTransitionTime``, ``reason`` and ``message``)."""

    succeeded: bool
    condition: dict[str, Any]


def job_end(job: dict[str, Any]) -> JobEnd | None:
    """The outcome of ``job``, or None while it is undecided. Success wins when both are
    present (the Job controller never sets both; a success condition is final)."""
    true = true_conditions(job)
    for ctype in SUCCESS_CONDITIONS:
        if ctype in true:
            return JobEnd(True, true[ctype])
    for ctype in FAILURE_CONDITIONS:
        if ctype in true:
            return JobEnd(False, true[ctype])
    return None


def job_finished(job: dict[str, Any]) -> bool:
    """Whether ``job``'s outcome is decided (any of :data:`SUCCESS_CONDITIONS` or
    :data:`FAILURE_CONDITIONS` is True)."""
    return job_end(job) is not None
