"""Every panel query of both shipped dashboards, evaluated by a real Prometheus after the
trainer's and the operator's real metric registries were pushed to a real Pushgateway:
variables are filled from the dashboards' own variable queries, and each query returns
series that carry the ModelVersion's labels (Training) or the operator's (Operator).

The operator's registry is pushed rather than scraped: with honor_labels that is what the
chart's ServiceMonitor gives Prometheus (same names, same labels)."""

from __future__ import annotations

import json
import re
import time
import urllib.parse
import uuid

import pytest
from prometheus_client import push_to_gateway

from kubevision_api.status import BestMetric, EpochMetrics
from kubevision_operator.metrics import OperatorMetrics
from kubevision_trainer.report.prometheus import PrometheusReporter
from kubevision_trainer.report.reporter import BatchEvent
from tests.helm import dashboards
from tests.integration import services
from tests.trainer import evaluation_literals as literal

pytestmark = pytest.mark.integration

#: Namespaces unique to this run: other sessions may share the machine's ports.
RUN = uuid.uuid4().hex[:8]
OURS = {"namespace": f"team-a-{RUN}", "view": "digits", "modelversion": "digits-v1"}
OTHER = {"namespace": f"team-b-{RUN}", "view": "pets", "modelversion": "pets-v3"}
#: The evaluation variables' choices, and what each offers once the earlier ones are chosen.
CHOSEN = {**OURS, "split": "validation", "metric": "f1"}
OFFERED = {name: [value] for name, value in OURS.items()} | {
    "split": ["validation"],
    "metric": ["f1", "precision", "recall"],
}
#: Series per ModelVersion of a panel (one but for one bar per concept).
SERIES = {"Per-concept evaluation": 2}
LABEL_VALUES = re.compile(r"label_values\((?P<selector>.+), (?P<label>\w+)\)")


def train(gateway: services.Pushgateway, labels: dict[str, str]) -> None:
    reporter = PrometheusReporter(
        namespace=labels["namespace"],
        view=labels["view"],
        modelversion=labels["modelversion"],
        pushgateway_url=gateway.url,
    )
    for epoch in (1, 2):
        reporter.start_epoch(epoch, 2, 2)
        for index in range(2):
            reporter.batch(BatchEvent(epoch, index, 2, 0.1 / epoch, 1.0 / epoch, 8, 0.1))
        value = 0.5 + epoch / 10
        metrics = EpochMetrics(epoch=epoch, val_loss=1.0 / epoch, accuracy=value, map=value)
        reporter.epoch(metrics, BestMetric(epoch=epoch, value=value), "accuracy")
    evaluation = literal.classification(
        [("cat", 0.75, 0.5, 0.6, 6), ("dog", 0.5, 1.0, 2 / 3, 3)], accuracy=2 / 3
    )
    reporter.evaluation(literal.status([evaluation]), [evaluation])
    assert reporter.push_failures == 0
    reporter.close(ok=True)


def operate(gateway: services.Pushgateway) -> None:
    metrics = OperatorMetrics()
    for labels, phase in ((OURS, "Running"), (OTHER, "Succeeded")):
        metrics.set_phase(labels["namespace"], labels["view"], labels["modelversion"], phase)
    for kind in ("ModelVersion", "View"):
        metrics.reconciles.labels(kind=kind, result="ok").inc()
        metrics.reconcile_seconds.labels(kind=kind).observe(0.02)
        metrics.watch_event(kind)
    metrics.queue_length.set(0)
    push_to_gateway(gateway.url, job="kubevision-operator", registry=metrics.registry)


def label_values(prometheus: services.Prometheus, query: str) -> list[str]:
    """Grafana's label_values(selector, label): the label's values among the series."""
    match = LABEL_VALUES.fullmatch(query)
    assert match, query
    params = urllib.parse.urlencode({"match[]": match["selector"]})
    status, body = services.http_get(f"{prometheus.url}/api/v1/series?{params}")
    assert status == 200, body
    series = json.loads(body)["data"]
    return sorted({s[match["label"]] for s in series if match["label"] in s})


@pytest.fixture(scope="module")
def pushed(
    dashboards_prometheus: tuple[services.Pushgateway, services.Prometheus],
) -> services.Prometheus:
    gateway, prometheus = dashboards_prometheus
    train(gateway, OURS)
    train(gateway, OTHER)
    operate(gateway)
    # Counters need two scrapes inside the rate window; scrapes come every second.
    prometheus.wait_for(f'kubevision_train_epoch{{namespace="{OTHER["namespace"]}"}}')
    time.sleep(3)
    prometheus.wait_for("kubevision_operator_queue_length")
    return prometheus


def test_training_variables_and_panels(pushed: services.Prometheus) -> None:
    chosen: dict[str, str] = {}
    for var in dashboards.variables("Training"):
        if var["type"] != "query":
            continue
        name = var["name"]
        values = label_values(pushed, dashboards.fill(var["query"]["query"], chosen))
        # Each variable offers our ModelVersion; narrowed by the earlier ones, nothing else.
        if chosen:
            assert values == OFFERED[name], (name, values)
        else:
            assert set(OFFERED[name]) <= set(values), (name, values)
        chosen[name] = CHOSEN[name]
    assert chosen == CHOSEN
    for query in dashboards.queries("Training"):
        samples = pushed.query(dashboards.fill(query.expr, chosen))
        assert samples, f"{query.panel}: no series for {chosen}"
        for sample in samples:
            assert {k: sample.labels.get(k) for k in OURS} == OURS, (query.panel, sample)
    # "All" (Grafana's allValue .*) shows both ModelVersions, one series each per panel (one
    # per concept on the per-concept panel).
    everything = {
        "namespace": f"{OURS['namespace']}|{OTHER['namespace']}",
        "view": ".*",
        "modelversion": ".*",
        "split": ".*",
        "metric": "f1",
    }
    for query in dashboards.queries("Training"):
        samples = pushed.query(dashboards.fill(query.expr, everything))
        found = sorted(s.labels["modelversion"] for s in samples)
        each = SERIES.get(query.panel, 1)
        assert found == ["digits-v1"] * each + ["pets-v3"] * each, (query.panel, found)


def test_operator_panels(pushed: services.Prometheus) -> None:
    for query in dashboards.queries("Operator"):
        samples = pushed.query(dashboards.fill(query.expr, {}))
        assert samples, f"{query.panel}: no series"
        if "by (phase)" in query.expr:
            assert {s.labels["phase"] for s in samples} >= {"Running", "Succeeded"}
            running = [s.value for s in samples if s.labels["phase"] == "Running"]
            assert running == [1.0]
        if query.panel == "Reconcile errors per second":
            assert {s.labels["kind"] for s in samples} == {"ModelVersion", "View"}
            assert all(s.value == 0.0 for s in samples)
