"""When reconciles run: the reconcile threads, the coalescing of Job and Pod events, the
Views whose status is due for a refresh, the loop that refreshes them and the queue
positions, and the resync of a cache that kopf listed again (docs/scale.md). The kopf
handlers hand their events here; the reconciles themselves are the ``Reconciler``'s and the
``Housekeeping``'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from kubevision_operator import kube as kube_mod
from kubevision_operator.housekeeping import Housekeeping
from kubevision_operator.pacing import Pacer
from kubevision_operator.reconcile import Reconciler

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Seconds between two looks at the Views marked stale. ModelVersion events only mark their
#: View stale (reconciling it on every event made N ModelVersions cost N² reads).
VIEW_REFRESH_SECONDS = 1.0
#: Least seconds between two status patches of one View whose library's figures alone
#: changed (its first patch and a phase change go at once). Its models library holds every
#: ModelVersion's best metric, which changes with every epoch of every training: one
#: training alone made 8 View patches in a minute at 5 s.
VIEW_WRITE_INTERVAL_SECONDS = 30.0
#: Least seconds between two rewrites of the queue positions that waiting ModelVersions show
#: ("Queued at position N"). Every admission moves every waiting ModelVersion by one, so
#: following each at once would cost one status patch per waiting ModelVersion per admission.
QUEUE_REFRESH_SECONDS = 30.0
#: Seconds a Job or Pod event waits for others of the same ModelVersion: a Pod's phase change
#: and the Job's status update that follows it make one reconcile, not two.
COALESCE_SECONDS = 0.1
#: Threads that reconcile for the watch handlers and the refresh loop. Their own pool: a burst
#: of watch events (hundreds of new ModelVersions) must not hold up the status endpoint, whose
#: calls use the event loop's default pool (trainers give up on a report after 5 s).
RECONCILE_THREADS = 8
#: Seconds before a reconcile that failed on an API call runs again (level-based: repeating
#: it is safe; the API calls retried themselves first).
RETRY_SECONDS = 5.0
#: Seconds after kopf begins to list a kind again before the operator lists it itself to
#: find what was deleted meanwhile (kopf's list is in by then; a deletion is known either way).
RESYNC_DELAY_SECONDS = 10.0


class Scheduler:
    """Runs the ``reconciler``'s reconciles on threads of their own, at the right moments.

    The coroutines run on the operator's event loop; :meth:`view_stale` may be called from
    any thread.
    """

    def __init__(self, reconciler: Reconciler, housekeeping: Housekeeping) -> None:
        self.reconciler = reconciler
        self.housekeeping = housekeeping
        self._view_pacer: Pacer[tuple[str, str]] = Pacer(VIEW_WRITE_INTERVAL_SECONDS)
        #: The resync due of each kind (:meth:`relisted`).
        self._resyncs: dict[str, asyncio.Task[None]] = {}
        #: Views whose status is to be refreshed (by :meth:`refresh_loop`).
        self._stale_views: set[tuple[str, str]] = set()
        self._stale_lock = threading.Lock()
        #: metadata.generation of each View when its ModelVersions were last reconciled.
        self._view_generations: dict[tuple[str, str], int] = {}
        #: ModelVersions with a reconcile due (:meth:`reconcile_soon`); touched on the loop only.
        self._due: set[tuple[str, str]] = set()
        self.executor = ThreadPoolExecutor(RECONCILE_THREADS, thread_name_prefix="reconcile")
        #: Set by :meth:`close`: reconciles asked for later (a requeue's timer) are dropped.
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None
        reconciler.requeue = self.requeue_after

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """The event loop that :meth:`requeue_after` schedules on (the operator's)."""
        self._loop = loop

    def requeue_after(self, namespace: str, name: str, seconds: float) -> None:
        """Reconcile the ModelVersion again in ``seconds``; callable from any thread."""
        loop = self._loop
        if loop is None or loop.is_closed() or self._closed:
            return

        def schedule() -> None:
            loop.call_later(seconds, lambda: loop.create_task(self.reconcile_soon(namespace, name)))

        loop.call_soon_threadsafe(schedule)

    async def in_pool(self, call: Callable[..., T], *args: Any) -> T:
        """Run ``call(*args)`` on the reconcile threads; returns what it returns."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, call, *args)

    async def reconcile(self, namespace: str, name: str) -> None:
        """Reconcile the ModelVersion on the reconcile threads; one that failed on an API call
        (logged by the reconciler) runs again in ``RETRY_SECONDS``. Nothing after
        :meth:`close`."""
        if self._closed:
            return
        try:
            await self.in_pool(self.reconciler.reconcile_modelversion, namespace, name)
        except kube_mod.KubeError:
            self.requeue_after(namespace, name, RETRY_SECONDS)

    async def reconcile_view_modelversions(self, namespace: str, view: str) -> None:
        """Reconcile every ModelVersion that names ``view`` (its spec changed, or it appeared
        or went away)."""
        for name in self.housekeeping.modelversions_of_view(namespace, view):
            await self.reconcile(namespace, name)

    async def reconcile_soon(self, namespace: str, name: str) -> None:
        """Reconcile the ModelVersion in ``COALESCE_SECONDS``, once for every request made
        until then (it reads everything afresh when it runs)."""
        key = (namespace, name)
        if key in self._due:
            return
        self._due.add(key)
        await asyncio.sleep(COALESCE_SECONDS)
        self._due.discard(key)
        await self.reconcile(namespace, name)

    def view_stale(self, namespace: str, name: str) -> None:
        """Have the View's status refreshed within ``VIEW_REFRESH_SECONDS``."""
        with self._stale_lock:
            self._stale_views.add((namespace, name))

    def take_stale_views(self) -> list[tuple[str, str]]:
        """The Views to refresh now (and forget them)."""
        with self._stale_lock:
            stale, self._stale_views = sorted(self._stale_views), set()
        return stale

    def view_changed(self, namespace: str, name: str, generation: int | None) -> bool:
        """Whether a View event asks for its ModelVersions to be reconciled: the View
        appeared, was deleted (``generation`` None) or its spec changed (a new
        ``metadata.generation``); not a change of its status alone, which the operator writes
        after ModelVersion events (reconciling every ModelVersion then made N² reconciles)."""
        key = (namespace, name)
        if generation is None:
            self._view_generations.pop(key, None)
            return True
        if self._view_generations.get(key) == generation:
            return False
        self._view_generations[key] = generation
        return True

    async def refresh_loop(self) -> None:
        """Refresh stale View statuses every ``VIEW_REFRESH_SECONDS``, and every
        ``QUEUE_REFRESH_SECONDS`` the status of waiting ModelVersions whose queue position
        moved. Failures are logged and retried on the next round."""
        reconciler = self.reconciler
        last_queue = time.monotonic()
        while True:
            await asyncio.sleep(VIEW_REFRESH_SECONDS)
            for namespace, name in self.take_stale_views():
                held = self._view_pacer.hold((namespace, name)) is not None
                try:
                    written = await self.in_pool(
                        functools.partial(
                            self.housekeeping.reconcile_view, namespace, name, phases_only=held
                        )
                    )
                    if written:
                        self._view_pacer.wrote((namespace, name))
                    elif held:
                        self.view_stale(namespace, name)  # its figures' turn comes
                except kube_mod.KubeError as exc:
                    log.warning("View %s/%s: %s", namespace, name, exc)
                    self.view_stale(namespace, name)
            if time.monotonic() - last_queue < QUEUE_REFRESH_SECONDS:
                continue
            last_queue = time.monotonic()
            for namespace, name in reconciler.queue.moved():
                # reconcile_modelversion logs its own failures; reconcile() retries them.
                with contextlib.suppress(ValueError):
                    await self.reconcile(namespace, name)

    def relisted(self, kind: str) -> None:
        """kopf lists ``kind`` again (its watch's resourceVersion expired): in
        ``RESYNC_DELAY_SECONDS``, list it once and forget what was deleted meanwhile (one
        resync for every relisted object of the kind). A failed list is logged and retried.
        Called on the event loop."""
        if kind not in self._resyncs:
            self._resyncs[kind] = asyncio.get_running_loop().create_task(self._resync(kind))

    async def _resync(self, kind: str) -> None:
        try:
            await asyncio.sleep(RESYNC_DELAY_SECONDS)
            while True:
                try:
                    await self.in_pool(self.housekeeping.resync, kind)
                    return
                except kube_mod.KubeError as exc:
                    log.warning("resync of the %s cache: %s", kind, exc)
                    await asyncio.sleep(RETRY_SECONDS)
        finally:
            self._resyncs.pop(kind, None)

    async def pushgateway_loop(self) -> None:
        """Sweep the trainers' Pushgateway groups every ``pushgateway_sweep_seconds`` (no-op
        without a Pushgateway); failures are logged and the next round tries again."""
        settings = self.reconciler.settings
        if not settings.pushgateway_url:
            return
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(settings.pushgateway_sweep_seconds)
            try:
                await loop.run_in_executor(self.executor, self.housekeeping.sweep_pushgateway)
            except (kube_mod.KubeError, OSError, ValueError) as exc:
                log.warning("Pushgateway sweep: %s", exc)

    def close(self) -> None:
        """Stop the reconcile threads; reconciles not started yet and resyncs due are
        dropped."""
        self._closed = True
        for task in list(self._resyncs.values()):
            task.cancel()
        self.executor.shutdown(wait=False, cancel_futures=True)
