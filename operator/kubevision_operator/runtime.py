"""What the kopf handlers share, and its lifecycle: the informer caches from the start;
:meth:`Runtime.start` makes the reconciler (once the status endpoint's CA is known), the
scheduler, the servers and the refresh loop; :meth:`Runtime.stop` takes them down. Made
before kopf runs, started by the startup handler.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import tempfile
import threading
from pathlib import Path

from kubevision_api import contract
from kubevision_api.progress import TrainerReport
from kubevision_operator import crdcheck, naming, servers, tls
from kubevision_operator.cache import Cache
from kubevision_operator.housekeeping import Housekeeping
from kubevision_operator.kube import Caller, Kube, KubeError
from kubevision_operator.metrics import OperatorMetrics
from kubevision_operator.queue import Queue, entry_of
from kubevision_operator.reconcile import Reconciler
from kubevision_operator.reports import Reports
from kubevision_operator.scheduling import Scheduler
from kubevision_operator.settings import OperatorSettings
from kubevision_operator.tokens import TokenCache

log = logging.getLogger(__name__)


def _exit_now() -> None:
    log.warning("kubevision operator: reconciles still running at the shutdown timeout; exiting")
    logging.shutdown()
    os._exit(0)


class StartupError(RuntimeError):
    """The operator cannot start (the CA Secret holds no CA, the installed CRDs are not its
    own); retrying will not help."""


class Runtime:
    """Settings, API calls, metrics and the informer caches from the start; the scheduler
    (and with it the reconciler) once :meth:`start` has run.

    Args:
        settings: operator settings.
        kube: the API calls; its request hook is pointed at the metrics.
    """

    def __init__(self, settings: OperatorSettings, kube: Kube) -> None:
        self.settings = settings
        self.kube = kube
        self.metrics = OperatorMetrics()
        kube.on_request = self.metrics.api_request
        #: What the watches delivered; the handlers fill it from kopf's first listing on.
        self.cache = Cache(pod_index_label=naming.JOB_NAME_LABEL)
        #: The concurrency queue; the ModelVersion cache's feed registers every one.
        self.queue = Queue(settings.concurrency_limit)
        self.metrics.follow_cache(
            lambda: self.cache.synced, {store.kind: store.__len__ for store in self.cache.stores()}
        )
        #: None until :meth:`start` has made it.
        self.scheduler: Scheduler | None = None
        #: Why :meth:`start` refused to start (a :class:`StartupError`), for the exit.
        self.startup_error: str | None = None
        self._servers: list[servers.Server] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._tmp = tempfile.TemporaryDirectory(prefix="kubevision-operator-")

    async def start(self) -> None:
        """Serve the status endpoint (when ``settings.status_url`` is set), health and
        metrics, and start the refresh loop. The queue fills from the caches' feed
        (``registry``), before any reconcile acts.

        First of all, the installed CRDs are checked (:meth:`_check_crds`).

        Raises:
            StartupError: the CA Secret holds no CA, or the CRDs differ and
                ``settings.crd_mismatch`` is Refuse.
            KubeError: an API call failed.
            OSError: a port cannot be bound.
        """
        schema_problem = await asyncio.to_thread(self._check_crds)
        ca = await self._status_ca() if self.settings.status_url else None
        reports = Reports(self.kube, self.cache, self.metrics)
        reconciler = Reconciler(
            self.kube,
            self.cache,
            self.queue,
            self.settings,
            self.metrics,
            reports,
            ca.cert_pem.decode() if ca is not None else None,
        )
        # The reconciler puts it in every status it writes as CRDsCurrent False.
        reconciler.schema_problem = schema_problem
        scheduler = Scheduler(reconciler, Housekeeping(reconciler))
        scheduler.bind(asyncio.get_running_loop())
        self.scheduler = scheduler
        if ca is not None:
            await self._serve_status_endpoint(ca, reports, reconciler)
        health = servers.health_app(self.metrics.exposition, reconciler.stalled)
        self._servers.append(await servers.serve(health, "0.0.0.0", self.settings.health_port))
        self._tasks.append(asyncio.create_task(scheduler.refresh_loop()))
        self._tasks.append(asyncio.create_task(scheduler.pushgateway_loop()))

    def caches_full(self) -> None:
        """kopf's initial listings are all in the caches: count every ModelVersion that has a
        Job as holding its place (its status may not say so yet: status writes are paced, and
        the operator may have stopped before the write), then mark the caches synced, which
        lets reconciles act. Called once, on the event loop, before any reconcile runs."""
        cache = self.cache
        for obj in cache.modelversions.items():
            meta = obj["metadata"]
            if cache.jobs.get(meta["namespace"], naming.job_name(meta["name"])) is not None:
                self.queue.update(entry_of(obj, admitted=True))
        cache.mark_synced()
        log.info(
            "caches synced: %s",
            ", ".join(f"{len(store)} {store.kind}s" for store in cache.stores()),
        )

    async def stop(self) -> None:
        """Stop the refresh loop, the servers and the reconcile threads. The process exits
        ``settings.shutdown_timeout_seconds`` after this began, whatever its threads still do:
        interpreter exit would wait for a reconcile thread stuck in a call."""
        watchdog = threading.Timer(self.settings.shutdown_timeout_seconds, _exit_now)
        watchdog.daemon = True
        watchdog.start()
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for server in self._servers:
            await server.stop()
        if self.scheduler is not None:
            self.scheduler.close()
        self._tmp.cleanup()

    def _check_crds(self) -> str | None:
        """Read the installed CRDs and compare them with this operator's (``crdcheck``): sets
        ``kubevision_operator_crd_current`` for each, and returns the message (logged as a
        warning) or None when they are current.

        Raises:
            StartupError: they differ and ``settings.crd_mismatch`` is Refuse, or the
                operator may not read them (403: RBAC of an earlier chart).
            KubeError: a CRD could not be read otherwise (kopf retries the start).
        """
        try:
            installed = {name: self.kube.get_crd(name) for name in crdcheck.CRD_NAMES}
        except KubeError as exc:
            if exc.status != 403:
                raise
            raise StartupError(
                f"{exc}: the operator reads its CRDs at start; the chart of this release "
                "grants get on customresourcedefinitions (docs/helm.md, RBAC)"
            ) from exc
        findings = crdcheck.check(installed)
        differ = {finding.crd for finding in findings}
        self.metrics.set_crds_current({name: name not in differ for name in crdcheck.CRD_NAMES})
        problem = crdcheck.message(findings)
        if problem is None:
            log.info("CRDs current: %s", ", ".join(crdcheck.CRD_NAMES))
            return None
        if self.settings.crd_mismatch == "Refuse":
            raise StartupError(problem)
        log.warning("%s\n(KUBEVISION_CRD_MISMATCH=Condition: running anyway)", problem)
        return problem

    async def _status_ca(self) -> tls.KeyPair:
        """The status endpoint's CA from its Secret, made and stored on first start
        (docs/decisions.md, Operator: the CA outlives a restart)."""
        settings = self.settings
        data = await asyncio.to_thread(
            self.kube.ensure_secret,
            settings.operator_namespace,
            settings.ca_secret_name,
            lambda: tls.secret_data(tls.new_ca(dt.datetime.now(dt.UTC))),
        )
        ca = tls.ca_from_secret_data(data)
        if ca is None:
            raise StartupError(f"Secret {settings.ca_secret_name} holds no CA")
        return ca

    async def _serve_status_endpoint(
        self, ca: tls.KeyPair, reports: Reports, reconciler: Reconciler
    ) -> None:
        """Issue a serving certificate for the host of ``settings.status_url`` and serve the
        report application. Its checks run on the event loop's default pool, not on the
        reconcile threads (docs/scale.md, item 8)."""
        settings = self.settings
        assert settings.status_url is not None
        host = settings.status_url.split("://", 1)[-1].split("/", 1)[0].rsplit(":", 1)[0]
        serving = tls.serving_certificate(ca, [host], dt.datetime.now(dt.UTC))
        cert, key = Path(self._tmp.name) / "tls.crt", Path(self._tmp.name) / "tls.key"
        cert.write_bytes(serving.cert_pem)
        key.write_bytes(serving.key_pem)
        key.chmod(0o600)

        tokens = TokenCache(
            lambda token: self.kube.token_review(token, contract.TOKEN_AUDIENCE),
            valid=lambda caller: reports.cached_pod(caller, caller.namespace) is not None,
        )

        async def authenticate(token: str) -> Caller | None:
            return await asyncio.to_thread(tokens.caller, token)

        async def authorize(caller: Caller, namespace: str, name: str) -> bool:
            return await asyncio.to_thread(reports.authorize, caller, namespace, name)

        def take(caller: Caller, report: TrainerReport) -> None:
            if reports.offer(caller, report):
                reconciler.reconcile_modelversion(report.namespace, report.model_version)

        async def accept(caller: Caller, report: TrainerReport) -> None:
            await asyncio.to_thread(take, caller, report)

        app = servers.report_app(authenticate, authorize, accept)
        context = servers.server_context(str(cert), str(key))
        self._servers.append(
            await servers.serve(app, settings.status_bind_host, settings.status_port, context)
        )
        log.info("status endpoint on %s:%d", settings.status_bind_host, settings.status_port)
