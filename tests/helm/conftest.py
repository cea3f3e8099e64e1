"""Fixtures of the chart tests: ``helm`` runs each test with Helm 3 and with Helm 4;
``dashboards_prometheus`` is a real Pushgateway and Prometheus for the dashboard queries."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.helm import helm_tool
from tests.integration import services


@pytest.fixture(params=sorted(helm_tool.VERSIONS), ids=lambda m: f"helm{m}")
def helm(request: pytest.FixtureRequest) -> helm_tool.Helm:
    """Helm 3.17, then Helm 4.1 (skipped locally, failed under CI, when not installed)."""
    return helm_tool.get(str(request.param))


@pytest.fixture(scope="session")
def dashboards_prometheus(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[services.Pushgateway, services.Prometheus]]:
    """A real Pushgateway, and a real Prometheus scraping it every second with honor_labels
    (as tests/integration's fixtures, started here for the dashboard tests alone)."""
    gateway_binary = services.find_binary("prometheus-pushgateway", services.PUSHGATEWAY_BINARY)
    prometheus_binary = services.find_binary("prometheus", services.PROMETHEUS_BINARY)
    if gateway_binary is None or prometheus_binary is None:
        helm_tool.missing("prometheus / prometheus-pushgateway: run scripts/install-system-deps")
    workdir = tmp_path_factory.mktemp("dashboards")
    gateway = services.start_pushgateway(gateway_binary, workdir / "pushgateway")
    try:
        target = gateway.url.removeprefix("http://")
        prometheus = services.start_prometheus(prometheus_binary, workdir / "prometheus", [target])
        try:
            yield gateway, prometheus
        finally:
            prometheus.process.stop()
    finally:
        gateway.process.stop()
