"""A finished ModelVersion's outcome, kept where a lost status cannot erase it.

A status is the easiest part of an object to lose: a backup restored without it (Velero
restores no status by default), a CRD whose status schema prunes the conditions, a status
replaced by hand. "Finished" was decided from ``status.conditions`` alone, so once the Job was
gone too (``ttlSecondsAfterFinished``) a finished training was trained again (issue 16: 7 Jobs
in 42 s for one ModelVersion under a pruning CRD). The operator therefore records the
finished status in the annotation ``kubevision.dev/completion`` of the ModelVersion itself
(metadata, which a status write cannot touch and every backup keeps), written right after the
status that finished it, and a ModelVersion whose annotation says it finished, at its current
``metadata.generation``, is finished whatever its status says: it gets no Job, and a status
without the outcome is written back from the record (Event ``StatusRestored``).

Nothing else trusts the annotation: a record of another generation (the spec changed since)
or one that does not parse is ignored (logged), and the status written back is the recorded
one, which :func:`kubevision_api.status.ModelVersionStatus` validates like any status.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any, Final

from pydantic import ValidationError

from kubevision_api.status import ModelVersionStatus
from kubevision_operator import status as status_mod

log = logging.getLogger(__name__)

#: The annotation on a ModelVersion that holds its finished status (compact JSON).
ANNOTATION: Final = "kubevision.dev/completion"
#: The status fields the record leaves out: the cursor of the last trainer report (a restored
#: status must not hold back a later trainer's reports; there is none for a finished run).
_LEFT_OUT: Final = frozenset({"lastReport"})
#: The fields a record keeps when the whole status would make it larger than
#: ``MAX_RECORD_CHARS`` (annotations share 256 KiB per object with the user's own).
_ESSENTIAL: Final = (
    "phase",
    "observedGeneration",
    "conditions",
    "model",
    "progress",
    "metrics",
    "checkpoint",
    "export",
    "jobName",
    "startTime",
    "completionTime",
    "attempts",
    "lastFailure",
)
#: The largest record, in characters (a quarter of the 256 KiB an object's annotations share).
MAX_RECORD_CHARS: Final = 64 * 1024


@dataclass(frozen=True)
class Completion:
    """A finished status as recorded, for one ``metadata.generation``."""

    generation: int
    status: ModelVersionStatus

    @property
    def outcome(self) -> str:
        """``Succeeded`` or ``Failed``."""
        return self.status.phase or ""


def record(status: ModelVersionStatus, generation: int) -> str:
    """The annotation value for a finished ``status`` at ``generation``: compact JSON
    ``{"generation": n, "status": {...}}``, the status as written (camelCase) without
    ``lastReport``; only :data:`_ESSENTIAL` fields when the whole one exceeds
    :data:`MAX_RECORD_CHARS` (a View of thousands of concepts).

    Raises:
        ValueError: ``status`` is not finished.
    """
    if not status_mod.is_finished(status):
        raise ValueError("only a finished status is recorded")
    wire = {k: v for k, v in status.wire().items() if k not in _LEFT_OUT}
    text = _dump(generation, wire)
    if len(text) > MAX_RECORD_CHARS:
        text = _dump(generation, {k: wire[k] for k in _ESSENTIAL if k in wire})
    return text


def _dump(generation: int, wire: dict[str, Any]) -> str:
    return json.dumps(
        {"generation": generation, "status": wire}, separators=(",", ":"), sort_keys=True
    )


def read(obj: dict[str, Any]) -> Completion | None:
    """The ModelVersion's completion record, when it has one for its current
    ``metadata.generation``; None otherwise (none, another generation's, or one that does not
    parse as a finished status, which is logged)."""
    meta = obj.get("metadata") or {}
    text = (meta.get("annotations") or {}).get(ANNOTATION)
    if not text:
        return None
    where = f"ModelVersion {meta.get('namespace')}/{meta.get('name')}: annotation {ANNOTATION}"
    try:
        data = json.loads(text)
        generation = int(data["generation"])
        status = ModelVersionStatus.model_validate(data["status"])
    except (ValueError, KeyError, TypeError, ValidationError) as exc:
        log.warning("%s is not a completion record, ignored: %s", where, str(exc)[:300])
        return None
    if not status_mod.is_finished(status):
        log.warning("%s records no outcome, ignored", where)
        return None
    if generation != int(meta.get("generation") or 0):
        return None
    return Completion(generation, status)


def is_recorded(found: Completion | None, status: ModelVersionStatus, generation: int) -> bool:
    """Whether ``found`` (:func:`read` of the object) already records ``status``'s outcome at
    ``generation`` (then it is not written again)."""
    return found is not None and found.generation == generation and found.outcome == status.phase
