"""The operator's HTTP servers, and the one module of the operator that imports ``aiohttp``
(pyproject's import contracts):

- the HTTPS status endpoint (docs/operator.md, The status endpoint): trainers POST full
  progress snapshots, authenticated with their Pod's projected ServiceAccount token and
  accepted only for the ModelVersion that owns the Pod's Job. The checks are injected, so
  :func:`report_app` holds the HTTP rules alone;
- health and metrics (:func:`health_app`): ``/healthz`` and Prometheus' ``/metrics``.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Awaitable, Callable

from aiohttp import web
from pydantic import ValidationError

from kubevision_api import contract
from kubevision_api.progress import TrainerReport
from kubevision_operator.kube import Caller

log = logging.getLogger(__name__)

#: Snapshots are a few kB; anything much larger is not a trainer's.
MAX_BODY_BYTES = 1 << 20

Authenticate = Callable[[str], Awaitable[Caller | None]]
Authorize = Callable[[Caller, str, str], Awaitable[bool]]
Accept = Callable[[Caller, TrainerReport], Awaitable[None]]
#: The metrics exposition: (body, Content-Type).
Exposition = Callable[[], tuple[bytes, str]]


async def _healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok")


def report_app(authenticate: Authenticate, authorize: Authorize, accept: Accept) -> web.Application:
    """The status endpoint's application: POST ``contract.REPORT_PATH``, GET ``/healthz``.

    Args:
        authenticate: token -> Caller, or None when TokenReview refuses it (401).
        authorize: may this caller report on namespace/name? (403 if not).
        accept: takes a valid report (204).
    """

    async def report(request: web.Request) -> web.Response:
        namespace = request.match_info["namespace"]
        name = request.match_info["name"]
        header = request.headers.get("Authorization", "")
        if not header.startswith("Bearer ") or not header[7:].strip():
            return web.json_response({"error": "a Bearer token is required"}, status=401)
        caller = await authenticate(header[7:].strip())
        if caller is None:
            return web.json_response({"error": "the token was not accepted"}, status=401)
        if caller.namespace != namespace or not await authorize(caller, namespace, name):
            log.warning(
                "refused a report on %s/%s from pod %s/%s",
                namespace,
                name,
                caller.namespace,
                caller.pod_name,
            )
            return web.json_response(
                {"error": f"this Pod does not train ModelVersion {namespace}/{name}"}, status=403
            )
        try:
            raw = await request.read()
        except ConnectionResetError:
            # The trainer gave up (its timeout) before we read the body: nothing to answer.
            log.info("a report on %s/%s was dropped by its sender", namespace, name)
            return web.Response(status=400)
        try:
            body = TrainerReport.model_validate_json(raw)
        except ValidationError as exc:
            return web.json_response({"error": str(exc).splitlines()[0]}, status=400)
        if (body.namespace, body.model_version) != (namespace, name):
            return web.json_response({"error": "the body names another ModelVersion"}, status=400)
        await accept(caller, body)
        return web.Response(status=204)

    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app.router.add_post(contract.REPORT_PATH, report)
    app.router.add_get("/healthz", _healthz)
    return app


def health_app(
    exposition: Exposition, problem: Callable[[], str | None] = lambda: None
) -> web.Application:
    """``/healthz``, ``/readyz`` and ``/metrics`` (``exposition``, e.g.
    ``OperatorMetrics.exposition``). ``/healthz`` (the liveness probe) answers 200 "ok" while
    ``problem()`` is None, else 503 with its sentence (a reconcile stuck past its bound: the
    kubelet then restarts the operator). ``/readyz`` (the readiness and startup probes)
    answers "ok" while the process serves: a stuck reconcile must not take the status
    endpoint out of its Service, since trainers report there.
    """

    async def metrics(request: web.Request) -> web.Response:
        body, content_type = exposition()
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def healthz(request: web.Request) -> web.Response:
        found = problem()
        if found is not None:
            return web.Response(status=503, text=found)
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", _healthz)
    return app


def server_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    """TLS 1.2+ server context for the status endpoint."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_file, key_file)
    return context


class Server:
    """One application served on ``host:port`` until :meth:`stop`."""

    def __init__(self, runner: web.AppRunner) -> None:
        self._runner = runner

    async def stop(self) -> None:
        """Close the listening socket and the connections."""
        await self._runner.cleanup()


async def serve(
    app: web.Application, host: str, port: int, ssl_context: ssl.SSLContext | None = None
) -> Server:
    """Serve ``app`` on ``host:port`` (HTTPS with ``ssl_context``); returns once listening.

    Raises:
        OSError: the port cannot be bound.
    """
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port, ssl_context=ssl_context).start()
    except BaseException:
        await runner.cleanup()
        raise
    return Server(runner)
