"""The kopf handlers: thin, each hands its event to the runtime's caches and scheduler.
Handlers live in an explicit registry built by :func:`build_registry` (nothing registers at
import). No handler adds a finalizer, so ModelVersions and Views can be deleted while the
operator is away (docs/decisions.md, Operator).

The index handlers are the caches' feed: kopf runs them for every object of its initial
listings before it runs any other handler, so the first watch handler that runs finds the
caches full and marks them synced (``cache``); from then on every event passes through them
first. The watch handlers forget deleted objects and hand the rest to the scheduler."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import kopf

from kubevision_api.meta import GROUP, VERSION
from kubevision_operator import kube as kube_mod
from kubevision_operator import naming
from kubevision_operator import queue as queue_mod
from kubevision_operator.runtime import Runtime, StartupError
from kubevision_operator.scheduling import Scheduler

log = logging.getLogger(__name__)

MANAGED = {naming.MANAGED_BY: naming.MANAGED_BY_VALUE}


def build_registry(runtime: Runtime) -> kopf.OperatorRegistry:
    """Every handler of the operator, in a registry of its own."""
    registry = kopf.OperatorRegistry()

    def started() -> Scheduler:
        """The scheduler; kopf retries a handler that runs before startup made it."""
        if runtime.scheduler is None:
            raise kopf.TemporaryError("the operator is still starting", delay=1)
        return runtime.scheduler

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        return kopf.ConnectionInfo(**kube_mod.client_credentials())

    @kopf.on.startup(registry=registry)
    async def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
        ours = runtime.settings
        settings.watching.server_timeout = ours.watch_server_timeout_seconds
        settings.watching.client_timeout = ours.watch_client_timeout_seconds
        # kopf's own requests (watch connects, its patches and events) are bounded too: a
        # connection a load balancer dropped must fail, not hang.
        settings.watching.connect_timeout = ours.api_connect_timeout_seconds
        settings.networking.connect_timeout = ours.api_connect_timeout_seconds
        settings.networking.request_timeout = ours.api_read_timeout_seconds
        # Status belongs to our schema: kopf keeps its own bookkeeping in annotations.
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=GROUP)
        settings.posting.level = logging.WARNING
        try:
            await runtime.start()
        except StartupError as exc:
            # kopf stops and kopf.run raises; main.run exits with this message.
            runtime.startup_error = str(exc)
            raise kopf.PermanentError(str(exc)) from exc

    @kopf.on.cleanup(registry=registry)
    async def cleanup(**_: Any) -> None:
        await runtime.stop()

    cache = runtime.cache

    def feed(kind: str, group: str, version: str, plural: str, **filters: Any) -> None:
        """The index handler that puts each object kopf sees of ``kind`` in its cache (it
        indexes nothing in kopf's own indices: it returns None)."""

        async def put(body: kopf.Body, **_: Any) -> None:
            obj = dict(body)
            cache.store(kind).put(obj)
            if kind == "ModelVersion":
                # Every ModelVersion is in the queue before any reconcile asks it for a
                # position (kopf runs no reconcile before its listings are indexed).
                runtime.queue.register(queue_mod.entry_of(obj))

        kopf.index(group, version, plural, registry=registry, id=f"{plural}_cache", **filters)(put)

    feed("ModelVersion", GROUP, VERSION, "modelversions")
    feed("View", GROUP, VERSION, "views")
    feed("Job", "batch", "v1", "jobs", labels=MANAGED)
    feed("Pod", "", "v1", "pods", labels=MANAGED)

    #: The objects of each kind that an event has shown (and no deletion since): kopf's
    #: listing shows an object as an event of type None, once, unless it lists again.
    known: dict[str, set[tuple[str, str, str]]] = {}

    def seen(kind: str, type: str | None, body: kopf.Body, scheduler: Scheduler) -> bool:
        """What every watch handler does first: count the event, mark the caches synced (kopf
        ran every index handler of its listings before this handler), forget a deleted
        object, and have a kind that kopf lists again resynced (an object a listing showed
        before is listed again: its watch's resourceVersion expired). False for a deletion."""
        runtime.metrics.watch_event(kind)
        if not cache.synced:
            runtime.caches_full()
        meta = body.get("metadata", {})
        key = (str(meta.get("namespace") or ""), str(meta["name"]), str(meta.get("uid")))
        shown = known.setdefault(kind, set())
        if type == "DELETED":
            shown.discard(key)
            cache.store(kind).delete(key[0], key[1], key[2])
            return False
        if type is None and key in shown:
            scheduler.relisted(kind)
        shown.add(key)
        return True

    @kopf.on.event(GROUP, VERSION, "modelversions", registry=registry)
    async def modelversion_event(
        type: str | None, body: kopf.Body, namespace: str | None, name: str, **_: Any
    ) -> None:
        assert namespace is not None  # namespaced resource
        scheduler = started()
        reconciler = scheduler.reconciler
        view = (body.get("spec") or {}).get("viewRef", {}).get("name")
        if not seen("ModelVersion", type, body, scheduler):
            runtime.kube.forget_writes("modelversions", namespace, name)
            await scheduler.in_pool(reconciler.forget, namespace, name, view)
        elif runtime.kube.own_status_write("modelversions", dict(body)):
            # The echo of the operator's own status patch: the world it observed is unchanged
            # (reconciling it made every ModelVersion cost one more reconcile per status write).
            pass
        else:
            await scheduler.reconcile(namespace, name)
        if view:
            scheduler.view_stale(namespace, view)

    def child_event(kind: str) -> Callable[..., Awaitable[None]]:
        """The handler of the operator's Jobs and Pods (``kind``): reconcile the ModelVersion
        named by the object's label, soon (one reconcile for a burst of events)."""

        async def handler(
            type: str | None, body: kopf.Body, namespace: str | None, **_: Any
        ) -> None:
            scheduler = started()
            seen(kind, type, body, scheduler)
            owner = body.get("metadata", {}).get("labels", {}).get(naming.MODELVERSION_LABEL)
            if owner and namespace:
                await scheduler.reconcile_soon(namespace, owner)

        return handler

    kopf.on.event("batch", "v1", "jobs", labels=MANAGED, registry=registry, id="job_event")(
        child_event("Job")
    )
    kopf.on.event("", "v1", "pods", labels=MANAGED, registry=registry, id="pod_event")(
        child_event("Pod")
    )

    @kopf.on.event(GROUP, VERSION, "views", registry=registry)
    async def view_event(
        type: str | None, body: kopf.Body, namespace: str | None, name: str, **_: Any
    ) -> None:
        assert namespace is not None  # namespaced resource
        scheduler = started()
        if seen("View", type, body, scheduler):
            scheduler.view_stale(namespace, name)
        # ModelVersions waiting for this View (created before it), or losing it, or seeing its
        # spec change.
        generation = (
            None if type == "DELETED" else int(body.get("metadata", {}).get("generation") or 0)
        )
        if scheduler.view_changed(namespace, name, generation):
            await scheduler.reconcile_view_modelversions(namespace, name)

    return registry
