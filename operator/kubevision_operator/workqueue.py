"""One reconcile per object at a time, and no caller ever waits for another's.

:class:`KeyedRunner` runs work for a key (a ModelVersion's namespace and name) on the calling
thread when no other thread is running work for that key; otherwise it leaves the work with
the running thread, which runs it again before it lets the key go, and returns at once. This is
client-go's workqueue rule (a key is never processed by two workers at once; a key that changes
while processed is processed again) without a queue of its own: a thread that finishes one
ModelVersion and admits the next never blocks on the next one's lock, so one stuck call can
hold up one object, never the pool.

The runner also knows how long each running key has been running: the operator's ``/healthz``
fails, and a metric shows it, when the oldest one is older than a bound.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

Work = Callable[[], None]
K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True)
class Running(Generic[K]):
    """A key being worked on, and since when (the runner's clock, in seconds)."""

    key: K
    since: float


class KeyedRunner(Generic[K]):
    """Serialises work per key without blocking callers.

    Args:
        clock: monotonic seconds (injectable for tests).
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._guard = threading.Lock()
        #: key -> when the current run of its work started.
        self._running: dict[K, float] = {}
        #: key -> the newest work left by a caller that found the key running.
        self._pending: dict[K, Work] = {}

    def run(self, key: K, work: Work) -> bool:
        """Run ``work`` for ``key`` now, or leave it to the thread running ``key``.

        Returns:
            True when this thread ran it (with any work left meanwhile), False when it was
            left to another thread, which runs it (the newest left, once) before it returns.

        Raises:
            Exception: what the last failing run of the key on this thread raised, after every
                work left meanwhile has run.
        """
        with self._guard:
            if key in self._running:
                self._pending[key] = work
                return False
            self._running[key] = self._clock()
        failure: BaseException | None = None
        while True:
            try:
                work()
            except BaseException as exc:  # re-raised below, once the key is let go
                failure = exc
            with self._guard:
                next_work = self._pending.pop(key, None)
                if next_work is None:
                    del self._running[key]
                    break
                self._running[key] = self._clock()
            work = next_work
        if failure is not None:
            raise failure
        return True

    def running(self) -> list[Running[K]]:
        """The keys being worked on now, oldest first."""
        with self._guard:
            items = sorted(self._running.items(), key=lambda item: item[1])
        return [Running(key, since) for key, since in items]

    def oldest_age(self) -> float:
        """Seconds since the oldest running work started (0.0 when none runs)."""
        running = self.running()
        return self._clock() - running[0].since if running else 0.0
