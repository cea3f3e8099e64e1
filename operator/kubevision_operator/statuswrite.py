"""Writing a ModelVersion's status: paced (``pacing``), checked against what the API server
kept (``pruning``), with the Events of each change, and, once the status says the training
finished, recorded where a lost status cannot erase it (``completion``)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime

from pydantic import ValidationError

from kubevision_api.status import ModelVersionStatus
from kubevision_operator import completion, observe, render, status
from kubevision_operator.cache import Cache
from kubevision_operator.kube import Kube, Obj
from kubevision_operator.metrics import OperatorMetrics
from kubevision_operator.pacing import Pacer
from kubevision_operator.pruning import PrunedWrites
from kubevision_operator.queue import Key

log = logging.getLogger(__name__)

#: Phase -> Event type; failures are Warnings.
EVENT_TYPES = {"Failed": "Warning"}
#: Situations whose phase events are Warnings whatever the phase (a failed attempt is back to
#: Pending while the Job retries).
WARNING_SITUATIONS = frozenset({observe.Situation.RETRYING})
#: Status patches of one ModelVersion that change nothing but its progress within an epoch
#: (the trainer reports it every 5 s) or its best checkpoint wait this many times
#: ``settings.status_write_interval_seconds`` (30 s by default); a step, an epoch, a
#: condition waits for the interval only. Without it a long epoch cost a patch per trainer
#: report, and one training's cost grew with its duration.
PROGRESS_WRITE_FACTOR = 6.0
#: The status fields a trainer's progress report changes within an epoch, and the best
#: checkpoint: it is saved just after its epoch's report, so it cost a second patch per epoch
#: (18 patches for the digits example's 6 epochs of 13 s, 13 without); it goes with the next
#: epoch's patch, or within 30 s.
PROGRESS_FIELDS = frozenset({"progress", "lastReport", "checkpoint"})


def _now() -> datetime:
    return datetime.now(UTC)


def _stamp() -> str:
    return _now().strftime("%Y-%m-%dT%H:%M:%SZ")


def merge_patch(old: Obj, new: Obj) -> Obj:
    """A JSON merge patch (RFC 7386) of a status from ``old`` to ``new``: top-level fields
    that ``new`` lacks become null, which removes them; lists are replaced whole."""
    return {**{key: None for key in old if key not in new}, **new}


class StatusWriter:
    """The ModelVersion status writes of one operator.

    Args:
        kube: the API calls.
        cache: the informer caches (each write's answer goes in at once).
        interval: ``settings.status_write_interval_seconds``.
        metrics: operator metrics.
        requeue: ``requeue(namespace, name, seconds)``: reconcile again later (a held write).
    """

    def __init__(
        self,
        kube: Kube,
        cache: Cache,
        interval: float,
        metrics: OperatorMetrics,
        requeue: Callable[[str, str, float], None],
    ) -> None:
        self.kube = kube
        self.cache = cache
        self.requeue = requeue
        self.pacer: Pacer[Key] = Pacer(interval)
        self.pruned = PrunedWrites(
            "ModelVersion",
            lambda kind, path: metrics.pruned_status_writes.labels(kind=kind, path=path).inc(),
        )

    def forget(self, key: Key) -> None:
        """The ModelVersion was deleted."""
        self.pacer.forget(key)
        self.pruned.forget(key)

    def write(
        self,
        obj: Obj,
        previous: ModelVersionStatus | None,
        new: ModelVersionStatus,
        observation: observe.Observation,
        *,
        urgent: bool,
    ) -> bool:
        """Patch the status from ``previous`` to ``new`` when it changed, and post the Events
        of the change: now when ``urgent`` or when the pacer lets it go, otherwise later (a
        reconcile is asked for when the pacer allows the next write; it writes what is true
        then). Returns whether the status holds ``new`` (as far as the API server keeps it:
        a status it pruned is not written again while nothing else changed)."""
        new_wire = new.wire()
        old_wire = previous.wire() if previous is not None else {}
        meta = obj["metadata"]
        key = (meta["namespace"], meta["name"])
        if new_wire == old_wire or self.pruned.unchanged(key, new_wire, old_wire):
            return True
        if not urgent:
            changed = {
                k for k in new_wire.keys() | old_wire.keys() if new_wire.get(k) != old_wire.get(k)
            }
            progress_only = changed <= PROGRESS_FIELDS
            factor = PROGRESS_WRITE_FACTOR if progress_only else 1.0
            if self._held(key, self.pacer.interval * factor):
                return False
        if not self._patch(obj, old_wire, new_wire):
            return False
        # A phase change posts an Event, but not a ModelVersion's first status that only says
        # it waits in the queue: that is its usual start at scale, which the status and the
        # queue-position gauge tell (one Event per waiting ModelVersion doubled the writes
        # of a burst of applies, docs/scale.md).
        first_in_queue = previous is None and observation.situation is observe.Situation.QUEUED
        if new.phase != (previous.phase if previous else None) and not first_in_queue:
            self._phase_event(obj, new.phase or "", observation)
        self._status_events(obj, previous, new)
        return True

    def restore(
        self, obj: Obj, previous: ModelVersionStatus | None, recorded: completion.Completion
    ) -> bool:
        """Write back a finished status from its completion record (the stored one lacks the
        outcome: lost or pruned), paced like any status, with one Event ``StatusRestored``;
        returns whether the status holds it."""
        old_wire = previous.wire() if previous is not None else {}
        new_wire = recorded.status.wire()
        meta = obj["metadata"]
        key = (meta["namespace"], meta["name"])
        if self.pruned.unchanged(key, new_wire, old_wire):
            return True
        if self._held(key, self.pacer.interval):
            return False
        if not self._patch(obj, old_wire, new_wire):
            return False
        log.info(
            "ModelVersion %s/%s: status restored from %s (%s); no Job created",
            *key,
            completion.ANNOTATION,
            recorded.outcome,
        )
        self.kube.post_event(
            render.render_event(
                obj,
                "Normal",
                "StatusRestored",
                f"{recorded.outcome}: the status lacked the outcome; restored from the "
                f"annotation {completion.ANNOTATION} (no new Job)",
                _stamp(),
            )
        )
        return True

    def record(
        self,
        obj: Obj,
        recorded: completion.Completion | None,
        finished: ModelVersionStatus,
        generation: int,
    ) -> None:
        """Record a finished status in the ModelVersion's completion annotation, unless
        ``recorded`` (what it holds: :func:`completion.read`) says it already (one write per
        outcome). A refused write (no RBAC ``patch`` on modelversions, an older chart) is
        logged: the status still says it."""
        if completion.is_recorded(recorded, finished, generation):
            return
        meta = obj["metadata"]
        written = self.kube.annotate_modelversion(
            meta["namespace"],
            meta["name"],
            {completion.ANNOTATION: completion.record(finished, generation)},
        )
        if written is not None:
            self.cache.modelversions.put(written)

    def _held(self, key: Key, interval: float) -> bool:
        """Whether the pacer holds this write back (``interval`` seconds since the last);
        a reconcile is then asked for when it may go."""
        wait = self.pacer.hold(key, interval)
        if wait is None:
            return False
        if wait > 0:
            self.requeue(*key, wait)
        return True

    def _patch(self, obj: Obj, old_wire: Obj, new_wire: Obj) -> bool:
        meta = obj["metadata"]
        key = (meta["namespace"], meta["name"])
        written = self.kube.patch_status("modelversions", *key, merge_patch(old_wire, new_wire))
        if written is None:
            return False
        self.pacer.wrote(key)
        self.cache.modelversions.put(written)
        stored = written.get("status") or {}
        try:
            as_read = ModelVersionStatus.model_validate(stored).wire()
        except ValidationError:
            as_read = stored
        self.pruned.check(key, new_wire, stored, as_read)
        return True

    def _status_events(
        self, obj: Obj, previous: ModelVersionStatus | None, new: ModelVersionStatus
    ) -> None:
        """The Events that the status written is worth (``status.status_events``)."""
        now = _stamp()
        for event in status.status_events(previous, new):
            self.kube.post_event(
                render.render_event(obj, event.type, event.reason, event.message, now)
            )

    def _phase_event(self, obj: Obj, phase: str, observation: observe.Observation) -> None:
        body = render.render_event(
            obj,
            "Warning"
            if observation.situation in WARNING_SITUATIONS
            else EVENT_TYPES.get(phase, "Normal"),
            observation.reason or observation.situation.value,
            f"{phase}: {observation.message}",
            _stamp(),
        )
        self.kube.post_event(body)
