"""kopf wiring: thin handlers that hand every event to the ``Reconciler``. Handlers live in
an explicit registry built by ``build_registry`` (nothing registers at import). No handler
adds a finalizer, so ModelVersions and Views can be deleted while the operator is away."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import kopf
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from kubevision_api import contract
from kubevision_api.meta import GROUP, VERSION
from kubevision_api.progress import TrainerReport
from kubevision_operator import kube as kube_mod
from kubevision_operator import naming, statusserver, tls
from kubevision_operator import queue as queue_mod
from kubevision_operator.kube import Kube
from kubevision_operator.metrics import OperatorMetrics
from kubevision_operator.reconcile import Reconciler
from kubevision_operator.settings import OperatorSettings
from kubevision_operator.statusserver import Caller

log = logging.getLogger(__name__)

MANAGED = {naming.MANAGED_BY: naming.MANAGED_BY_VALUE}
#: Least seconds between two refreshes of one View's status. Its models library lists every
#: ModelVersion of the View, so ModelVersion events only mark it stale: one list per second,
#: not one per event (which made N ModelVersions cost N² reads).
VIEW_REFRESH_SECONDS = 1.0
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


class Runtime:
    """What the handlers share: settings, API calls, metrics, the reconciler (made at
    startup, once the CA is known) and the servers to stop at cleanup."""

    def __init__(self, settings: OperatorSettings, kube: Kube) -> None:
        self.settings = settings
        self.kube = kube
        self.metrics = OperatorMetrics()
        kube.on_request = self.metrics.api_request
        self.reconciler: Reconciler | None = None
        self.runners: list[web.AppRunner] = []
        self.tasks: list[asyncio.Task[None]] = []
        self.tmp = tempfile.TemporaryDirectory(prefix="kubevision-operator-")
        #: Views whose status is to be refreshed (by ``refresh_loop``).
        self.stale_views: set[tuple[str, str]] = set()
        self._stale_lock = threading.Lock()
        #: metadata.generation of each View when its ModelVersions were last reconciled.
        self.view_generations: dict[tuple[str, str], int] = {}
        #: ModelVersions with a reconcile due (``reconcile_soon``); touched on the loop only.
        self.due: set[tuple[str, str]] = set()
        self.executor = ThreadPoolExecutor(RECONCILE_THREADS, thread_name_prefix="reconcile")

    async def in_pool(self, call: Callable[..., None], *args: Any) -> None:
        """Run ``call(*args)`` on the reconcile threads."""
        await asyncio.get_running_loop().run_in_executor(self.executor, call, *args)

    async def reconcile_soon(self, namespace: str, name: str) -> None:
        """Reconcile the ModelVersion in ``COALESCE_SECONDS``, once for every request made
        until then (it reads everything afresh when it runs)."""
        key = (namespace, name)
        if key in self.due:
            return
        self.due.add(key)
        await asyncio.sleep(COALESCE_SECONDS)
        self.due.discard(key)
        await self.in_pool(self.need().reconcile_modelversion, namespace, name)

    def view_stale(self, namespace: str, name: str) -> None:
        """Have the View's status refreshed within ``VIEW_REFRESH_SECONDS``."""
        with self._stale_lock:
            self.stale_views.add((namespace, name))

    def take_stale_views(self) -> list[tuple[str, str]]:
        """The Views to refresh now (and forget them)."""
        with self._stale_lock:
            stale, self.stale_views = sorted(self.stale_views), set()
        return stale

    def need(self) -> Reconciler:
        """The reconciler; handlers run only after startup made it."""
        if self.reconciler is None:
            raise kopf.TemporaryError("the operator is still starting", delay=1)
        return self.reconciler


async def _start_status_server(runtime: Runtime, reconciler: Reconciler, ca: tls.KeyPair) -> None:
    settings = runtime.settings
    assert settings.status_url is not None
    host = settings.status_url.split("://", 1)[-1].split("/", 1)[0].rsplit(":", 1)[0]
    serving = tls.serving_certificate(ca, [host], dt.datetime.now(dt.UTC))
    cert, key = Path(runtime.tmp.name) / "tls.crt", Path(runtime.tmp.name) / "tls.key"
    cert.write_bytes(serving.cert_pem)
    key.write_bytes(serving.key_pem)
    key.chmod(0o600)

    async def authenticate(token: str) -> Caller | None:
        return await asyncio.to_thread(runtime.kube.token_review, token, contract.TOKEN_AUDIENCE)

    async def authorize(caller: Caller, namespace: str, name: str) -> bool:
        allowed = await asyncio.to_thread(reconciler.authorize, caller, namespace, name)
        if not allowed:
            runtime.metrics.reports.labels(result="refused").inc()
        return allowed

    async def accept(caller: Caller, report: TrainerReport) -> None:
        await asyncio.to_thread(reconciler.accept_report, caller, report)

    runner = web.AppRunner(statusserver.make_app(authenticate, authorize, accept))
    await runner.setup()
    context = statusserver.server_context(str(cert), str(key))
    await web.TCPSite(
        runner, settings.status_bind_host, settings.status_port, ssl_context=context
    ).start()
    runtime.runners.append(runner)
    log.info("status endpoint on %s:%d", settings.status_bind_host, settings.status_port)


async def refresh_loop(runtime: Runtime, reconciler: Reconciler) -> None:
    """Refresh stale View statuses every ``VIEW_REFRESH_SECONDS``, and every
    ``QUEUE_REFRESH_SECONDS`` the status of waiting ModelVersions whose queue position moved.
    Failures are logged and retried on the next round."""
    last_queue = time.monotonic()
    while True:
        await asyncio.sleep(VIEW_REFRESH_SECONDS)
        for namespace, name in runtime.take_stale_views():
            try:
                await runtime.in_pool(reconciler.reconcile_view, namespace, name)
            except kube_mod.KubeError as exc:
                log.warning("View %s/%s: %s", namespace, name, exc)
                runtime.view_stale(namespace, name)
        if time.monotonic() - last_queue < QUEUE_REFRESH_SECONDS:
            continue
        last_queue = time.monotonic()
        for namespace, name in reconciler.queue.moved():
            # reconcile_modelversion logs its own failures; the next round retries.
            with contextlib.suppress(kube_mod.KubeError, ValueError):
                await runtime.in_pool(reconciler.reconcile_modelversion, namespace, name)


async def _start_health_server(runtime: Runtime) -> None:
    async def metrics(request: web.Request) -> web.Response:
        body = generate_latest(runtime.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "0.0.0.0", runtime.settings.health_port).start()
    runtime.runners.append(runner)


def build_registry(runtime: Runtime) -> kopf.OperatorRegistry:
    """Every handler of the operator, in a registry of its own."""
    registry = kopf.OperatorRegistry()
    settings = runtime.settings

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        return kopf.ConnectionInfo(**kube_mod.client_credentials())

    @kopf.on.startup(registry=registry)
    async def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
        ours = runtime.settings
        settings.watching.server_timeout = ours.watch_server_timeout_seconds
        settings.watching.client_timeout = ours.watch_client_timeout_seconds
        # Status belongs to our schema: kopf keeps its own bookkeeping in annotations.
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=GROUP)
        settings.posting.level = logging.WARNING
        ca_pem: str | None = None
        ca: tls.KeyPair | None = None
        if ours.status_url:
            data = await asyncio.to_thread(
                runtime.kube.ensure_secret,
                ours.operator_namespace,
                ours.ca_secret_name,
                lambda: tls.secret_data(tls.new_ca(dt.datetime.now(dt.UTC))),
            )
            ca = tls.ca_from_secret_data(data)
            if ca is None:
                raise kopf.PermanentError(f"Secret {ours.ca_secret_name} holds no CA")
            ca_pem = ca.cert_pem.decode()
        reconciler = Reconciler(runtime.kube, ours, runtime.metrics, ca_pem)
        await asyncio.to_thread(reconciler.seed)
        runtime.reconciler = reconciler
        if ca is not None:
            await _start_status_server(runtime, reconciler, ca)
        await _start_health_server(runtime)
        runtime.tasks.append(asyncio.create_task(refresh_loop(runtime, reconciler)))

    @kopf.on.cleanup(registry=registry)
    async def cleanup(**_: Any) -> None:
        for task in runtime.tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for runner in runtime.runners:
            await runner.cleanup()
        runtime.executor.shutdown(wait=False, cancel_futures=True)
        runtime.tmp.cleanup()

    @kopf.on.event(GROUP, VERSION, "modelversions", registry=registry)
    async def modelversion_event(
        type: str, body: kopf.Body, namespace: str | None, name: str, **_: Any
    ) -> None:
        runtime.metrics.watch_event("ModelVersion")
        assert namespace is not None  # namespaced resource
        reconciler = runtime.need()
        view = (body.get("spec") or {}).get("viewRef", {}).get("name")
        obj = dict(body)
        if type == "DELETED":
            runtime.kube.forget_writes("modelversions", namespace, name)
            await runtime.in_pool(reconciler.forget, namespace, name, view)
        elif runtime.kube.own_status_write("modelversions", obj):
            # The echo of the operator's own status patch: the world it observed is unchanged
            # (reconciling it made every ModelVersion cost one more reconcile per status write).
            pass
        else:
            # Here, on the event loop, events are still in the watch's (creation) order; the
            # reconciles below run on threads in any order.
            reconciler.queue.register(queue_mod.entry_of(obj))
            await runtime.in_pool(reconciler.reconcile_modelversion, namespace, name, obj)
        if view:
            runtime.view_stale(namespace, view)

    @kopf.on.event("batch", "v1", "jobs", labels=MANAGED, registry=registry)
    async def job_event(body: kopf.Body, namespace: str | None, **_: Any) -> None:
        runtime.metrics.watch_event("Job")
        owner = body.get("metadata", {}).get("labels", {}).get(naming.MODELVERSION_LABEL)
        if owner and namespace:
            await runtime.reconcile_soon(namespace, owner)

    @kopf.on.event("", "v1", "pods", labels=MANAGED, registry=registry)
    async def pod_event(body: kopf.Body, namespace: str | None, **_: Any) -> None:
        runtime.metrics.watch_event("Pod")
        owner = body.get("metadata", {}).get("labels", {}).get(naming.MODELVERSION_LABEL)
        if owner and namespace:
            await runtime.reconcile_soon(namespace, owner)

    @kopf.on.event(GROUP, VERSION, "views", registry=registry)
    def view_event(type: str, body: kopf.Body, namespace: str | None, name: str, **_: Any) -> None:
        runtime.metrics.watch_event("View")
        assert namespace is not None  # namespaced resource
        reconciler = runtime.need()
        key = (namespace, name)
        if type == "DELETED":
            runtime.kube.view_gone(namespace, name)
        else:
            runtime.kube.view_seen(dict(body))
            runtime.view_stale(namespace, name)
        # ModelVersions waiting for this View (created before it), or losing it, or seeing its
        # spec change; not for a change of its status alone (which the operator writes, after
        # ModelVersion events: reconciling every ModelVersion then made N² reconciles).
        generation = int(body.get("metadata", {}).get("generation") or 0)
        if type == "DELETED":
            runtime.view_generations.pop(key, None)
        elif runtime.view_generations.get(key) == generation:
            return
        else:
            runtime.view_generations[key] = generation
        for mv in reconciler.modelversions_of_view(namespace, name):
            reconciler.reconcile_modelversion(namespace, mv)

    del settings
    return registry
