"""kopf wiring: thin handlers that hand every event to the ``Reconciler``. Handlers live in
an explicit registry built by ``build_registry`` (nothing registers at import). No handler
adds a finalizer, so ModelVersions and Views can be deleted while the operator is away."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import tempfile
from pathlib import Path
from typing import Any

import kopf
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from kubevision_api.meta import GROUP, VERSION
from kubevision_api.progress import TrainerReport
from kubevision_operator import naming, statusserver, tls
from kubevision_operator.kube import Kube
from kubevision_operator.metrics import OperatorMetrics
from kubevision_operator.reconcile import Reconciler
from kubevision_operator.settings import OperatorSettings
from kubevision_operator.statusserver import Caller

log = logging.getLogger(__name__)

MANAGED = {naming.MANAGED_BY: naming.MANAGED_BY_VALUE}
AUDIENCE = "kubevision.dev"


class Runtime:
    """What the handlers share: settings, API calls, metrics, the reconciler (made at
    startup, once the CA is known) and the servers to stop at cleanup."""

    def __init__(self, settings: OperatorSettings, kube: Kube) -> None:
        self.settings = settings
        self.kube = kube
        self.metrics = OperatorMetrics()
        self.reconciler: Reconciler | None = None
        self.runners: list[web.AppRunner] = []
        self.tmp = tempfile.TemporaryDirectory(prefix="kubevision-operator-")

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
        return await asyncio.to_thread(runtime.kube.token_review, token, AUDIENCE)

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
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        return kopf.login_via_client(**kwargs)

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

    @kopf.on.cleanup(registry=registry)
    async def cleanup(**_: Any) -> None:
        for runner in runtime.runners:
            await runner.cleanup()
        runtime.tmp.cleanup()

    @kopf.on.event(GROUP, VERSION, "modelversions", registry=registry)
    def modelversion_event(
        type: str, body: kopf.Body, namespace: str | None, name: str, **_: Any
    ) -> None:
        runtime.metrics.watch_event("ModelVersion")
        assert namespace is not None  # namespaced resource
        reconciler = runtime.need()
        view = (body.get("spec") or {}).get("viewRef", {}).get("name")
        if type == "DELETED":
            reconciler.forget(namespace, name, view)
        else:
            reconciler.reconcile_modelversion(namespace, name, dict(body))
        if view:
            reconciler.reconcile_view(namespace, view)

    @kopf.on.event("batch", "v1", "jobs", labels=MANAGED, registry=registry)
    def job_event(body: kopf.Body, namespace: str | None, **_: Any) -> None:
        runtime.metrics.watch_event("Job")
        owner = body.get("metadata", {}).get("labels", {}).get(naming.MODELVERSION_LABEL)
        if owner and namespace:
            runtime.need().reconcile_modelversion(namespace, owner)

    @kopf.on.event("", "v1", "pods", labels=MANAGED, registry=registry)
    def pod_event(body: kopf.Body, namespace: str | None, **_: Any) -> None:
        runtime.metrics.watch_event("Pod")
        owner = body.get("metadata", {}).get("labels", {}).get(naming.MODELVERSION_LABEL)
        if owner and namespace:
            runtime.need().reconcile_modelversion(namespace, owner)

    @kopf.on.event(GROUP, VERSION, "views", registry=registry)
    def view_event(type: str, body: kopf.Body, namespace: str | None, name: str, **_: Any) -> None:
        runtime.metrics.watch_event("View")
        assert namespace is not None  # namespaced resource
        reconciler = runtime.need()
        if type != "DELETED":
            reconciler.reconcile_view(namespace, name, dict(body))
        # ModelVersions waiting for this View (created before it), or losing it.
        for mv in reconciler.modelversions_of_view(namespace, name):
            reconciler.reconcile_modelversion(namespace, mv)

    del settings
    return registry
