"""How often one object's status may be written (docs/scale.md, Writes only what changed).

A trainer reports at every step, epoch and checkpoint, and a Pod's life is a burst of
watch events: written as they come, one training cost hundreds of status patches. The
:class:`Pacer` lets the first write of an object go at once and holds every later one until
``interval`` seconds after the previous write; the reconcile that is held asks to run again
then, and that run writes the status that is true by then: every report and observation
that came meanwhile in one patch, the newest winning (the reconcile composes from the
newest report, by its cursor). This is client-go's rate-limited work queue, keyed by object,
with the token bucket's burst of one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class Pacer(Generic[K]):
    """At most one write per key per ``interval`` seconds.

    Args:
        interval: least seconds between two writes of one key (0: no pacing).
        clock: monotonic seconds (injectable for tests).
    """

    def __init__(self, interval: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self._clock = clock
        #: key -> when it was last written.
        self._written: dict[K, float] = {}
        #: key -> when a held write is due (a reconcile was asked for then).
        self._due: dict[K, float] = {}
        self._lock = threading.Lock()

    def hold(self, key: K, interval: float | None = None) -> float | None:
        """Whether a write of ``key`` must wait: None when it may go now; otherwise the
        seconds until it may, or 0.0 when a held write is due already (its reconcile has been
        asked for: the caller need not ask again). ``interval`` replaces the pacer's for this
        write (a write of less worth may wait longer)."""
        now = self._clock()
        interval = self.interval if interval is None else interval
        with self._lock:
            last = self._written.get(key)
            if last is None or now - last >= interval:
                return None
            due = last + interval
            asked = self._due.get(key)
            if asked is not None and now < asked <= due:
                return 0.0
            self._due[key] = due
            return due - now

    def wrote(self, key: K) -> None:
        """A write of ``key`` went now."""
        with self._lock:
            self._written[key] = self._clock()
            self._due.pop(key, None)

    def forget(self, key: K) -> None:
        """The object is gone."""
        with self._lock:
            self._written.pop(key, None)
            self._due.pop(key, None)
