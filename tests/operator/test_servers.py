"""The operator's HTTP servers. The status endpoint's rules: 401 without an accepted token, 403
for another ModelVersion, 400 for a bad body, 204 and the report handed over otherwise; a
trainer's status reporter talks to it over real TLS with the CA from ``tls``. Health and
metrics: ``/healthz`` and the operator's metrics in Prometheus' text format."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from kubevision_api.contract import StepName
from kubevision_api.plan import StatusEndpoint
from kubevision_api.progress import TrainerReport
from kubevision_api.status import Progress, Step, StepState
from kubevision_operator import servers, tls
from kubevision_operator.kube import Caller
from kubevision_operator.metrics import OperatorMetrics
from kubevision_trainer.report.status import StatusReporter
from tests.trainer.trainer_helpers import free_port

GOOD = Caller("team-a", "default", "kv-digits-abcde", "pod-uid")


def _app(accepted: list[tuple[Caller, TrainerReport]]) -> web.Application:
    async def authenticate(token: str) -> Caller | None:
        return GOOD if token == "good" else None

    async def authorize(caller: Caller, namespace: str, name: str) -> bool:
        return name == "digits"

    async def accept(caller: Caller, report: TrainerReport) -> None:
        accepted.append((caller, report))

    return servers.report_app(authenticate, authorize, accept)


def _report(name: str = "digits") -> str:
    report = TrainerReport(
        namespace="team-a",
        model_version=name,
        steps=[Step(name=StepName.TRAINING)],
        progress=Progress(epochs=3, display="0/3"),
        sequence=1,
    )
    return report.model_dump_json(by_alias=True)


def test_http_rules() -> None:
    accepted: list[tuple[Caller, TrainerReport]] = []

    async def scenario() -> list[int]:
        async with TestClient(TestServer(_app(accepted))) as client:
            path = "/v1alpha1/namespaces/team-a/modelversions/{}/report"
            codes = []
            for name, token, body in (
                ("digits", None, _report()),  # no token
                ("digits", "bad", _report()),  # refused by TokenReview
                ("other", "good", _report("other")),  # not this Pod's ModelVersion
                ("digits", "good", "{not json"),
                ("digits", "good", _report("other")),  # body names another one
                ("digits", "good", _report()),
            ):
                headers = {"Authorization": f"Bearer {token}"} if token else {}
                response = await client.post(path.format(name), data=body, headers=headers)
                codes.append(response.status)
            wrong_ns = await client.post(
                "/v1alpha1/namespaces/team-b/modelversions/digits/report",
                data=_report(),
                headers={"Authorization": "Bearer good"},
            )
            codes.append(wrong_ns.status)
            return codes

    assert asyncio.run(scenario()) == [401, 401, 403, 400, 400, 204, 403]
    assert len(accepted) == 1
    assert accepted[0][0] == GOOD
    assert accepted[0][1].progress.display == "0/3"


def test_trainer_reporter_trusts_the_operator_ca(tmp_path: Path) -> None:
    now = dt.datetime.now(dt.UTC)
    ca = tls.new_ca(now)
    serving = tls.serving_certificate(ca, ["kubevision-operator.kubevision.svc", "127.0.0.1"], now)
    (tmp_path / "tls.crt").write_bytes(serving.cert_pem)
    (tmp_path / "tls.key").write_bytes(serving.key_pem)
    (tmp_path / "token").write_text("good")
    accepted: list[tuple[Caller, TrainerReport]] = []
    port = free_port()

    async def scenario() -> None:
        context = servers.server_context(str(tmp_path / "tls.crt"), str(tmp_path / "tls.key"))
        server = await servers.serve(_app(accepted), "127.0.0.1", port, context)
        try:
            endpoint = StatusEndpoint(
                url=f"https://127.0.0.1:{port}",
                ca_pem=ca.cert_pem.decode(),
                token_path=str(tmp_path / "token"),
            )
            reporter = StatusReporter(
                endpoint, namespace="team-a", model_version="digits", uid=None, epochs=3
            )
            await asyncio.to_thread(reporter.step, StepName.TRAINING, StepState.RUNNING)
            await asyncio.to_thread(reporter.close, True)
            assert reporter.failures == 0
        finally:
            await server.stop()

    asyncio.run(scenario())
    assert len(accepted) == 1
    assert accepted[0][1].steps[1].state.value == "Running"


def test_ca_round_trips_through_secret_data() -> None:
    ca = tls.new_ca(dt.datetime.now(dt.UTC))
    assert tls.ca_from_secret_data(tls.secret_data(ca)) == ca
    assert tls.ca_from_secret_data({}) is None


def test_health_and_metrics() -> None:
    metrics = OperatorMetrics()
    metrics.watch_event("Job")
    metrics.reports.labels(result="accepted").inc()

    async def scenario() -> tuple[int, str, int, str, str]:
        async with TestClient(TestServer(servers.health_app(metrics.exposition))) as client:
            health = await client.get("/healthz")
            scrape = await client.get("/metrics")
            return (
                health.status,
                await health.text(),
                scrape.status,
                scrape.headers["Content-Type"],
                await scrape.text(),
            )

    health, ok, status, content_type, text = asyncio.run(scenario())
    assert (health, ok, status) == (200, "ok", 200)
    assert content_type.startswith("text/plain; version=")
    assert 'kubevision_operator_watch_events_total{kind="Job"} 1.0' in text
    assert 'kubevision_operator_status_reports_total{result="accepted"} 1.0' in text


def test_a_port_in_use_is_an_error() -> None:
    """serve() returns only once listening: a port already bound fails at once."""

    port = free_port()
    app = servers.health_app(OperatorMetrics().exposition)

    async def scenario() -> None:
        first = await servers.serve(app, "127.0.0.1", port)
        try:
            await servers.serve(servers.health_app(OperatorMetrics().exposition), "127.0.0.1", port)
        finally:
            await first.stop()

    with pytest.raises(OSError):
        asyncio.run(scenario())


def test_healthz_fails_on_a_problem_and_readyz_does_not() -> None:
    """Liveness names the problem (a stuck reconcile); readiness keeps the status endpoint in
    its Service, where trainers report."""
    stuck = "the reconcile of ModelVersion ns/a has been running for 95 s (limit 90 s)"
    problem: list[str | None] = [stuck]

    async def scenario() -> list[tuple[int, str]]:
        app = servers.health_app(OperatorMetrics().exposition, lambda: problem[0])
        async with TestClient(TestServer(app)) as client:
            out = []
            for path in ("/healthz", "/readyz"):
                answer = await client.get(path)
                out.append((answer.status, await answer.text()))
            problem[0] = None
            answer = await client.get("/healthz")
            out.append((answer.status, await answer.text()))
            return out

    assert asyncio.run(scenario()) == [(503, stuck), (200, "ok"), (200, "ok")]
