"""The chart's PrometheusRule, rendered with Helm 3.17 and Helm 4.1: only when enabled, where
and with the labels the values say, each alert with its severity, summary, description and a
runbook_url whose anchor is the alert's section of docs/helm.md, and every operator series
selected by the job its ServiceMonitor gives them. (tests/helm/test_helm_alerts.py runs the
rules themselves through promtool; test_helm_chart_render.py lints the chart with them.)"""

from __future__ import annotations

import re
from pathlib import Path

from tests.helm.alert_series import MONITORED
from tests.helm.alerts import ALERTS, RUNBOOK, rules_by_alert
from tests.helm.helm_tool import CHART, Helm, Obj, by_kind, one

DOCS = CHART.parents[1] / "docs" / "helm.md"
JOB_MATCHER = re.compile(r'\bjob="([^"]*)"')
#: The trainer's Pushgateway job (kubevision_trainer.report.prometheus.JOB), not the operator's.
TRAINER_JOB = "kubevision-trainer"


def with_rule(**rule: object) -> Obj:
    """MONITORED's values with ``rule`` merged into metrics.prometheusRule."""
    metrics = MONITORED["metrics"]
    return {"metrics": {**metrics, "prometheusRule": {**metrics["prometheusRule"], **rule}}}


def alerts_of(docs: list[Obj]) -> dict[str, Obj]:
    return rules_by_alert(one(docs, "PrometheusRule")["spec"]["groups"])


def operator_jobs(rules: dict[str, Obj]) -> set[str]:
    return {
        job
        for rule in rules.values()
        for job in JOB_MATCHER.findall(rule["expr"])
        if job != TRAINER_JOB
    }


def test_rendered_only_when_enabled(helm: Helm, tmp_path: Path) -> None:
    assert not by_kind(helm.template(None, tmp_path=tmp_path), "PrometheusRule")
    monitors_only = {"metrics": {"serviceMonitor": {"enabled": True}}}
    assert not by_kind(helm.template(monitors_only, tmp_path=tmp_path), "PrometheusRule")
    rule = one(helm.template(MONITORED, tmp_path=tmp_path), "PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["metadata"]["name"] == "kv-kubevision"
    assert rule["metadata"]["namespace"] == "kubevision"
    assert [g["name"] for g in rule["spec"]["groups"]] == [
        "kubevision.operator",
        "kubevision.trainings",
    ]
    assert set(rules_by_alert(rule["spec"]["groups"])) == ALERTS


def test_namespace_and_labels(helm: Helm, tmp_path: Path) -> None:
    values = with_rule(namespace="monitoring", labels={"release": "prom", "team": "vision"})
    rule = one(helm.template(values, tmp_path=tmp_path, namespace="ml"), "PrometheusRule")
    meta = rule["metadata"]
    assert meta["namespace"] == "monitoring"
    assert meta["labels"]["release"] == "prom" and meta["labels"]["team"] == "vision"
    # The chart's own labels stay beside the user's.
    assert meta["labels"]["app.kubernetes.io/part-of"] == "kubevision"
    assert meta["labels"]["app.kubernetes.io/managed-by"] == "Helm"


def test_each_alert_has_severity_annotations_and_its_runbook(helm: Helm, tmp_path: Path) -> None:
    values = with_rule(additionalLabels={"team": "vision"})
    rules = alerts_of(helm.template(values, tmp_path=tmp_path))
    headings = set(re.findall(r"^### (\w+)$", DOCS.read_text(), flags=re.MULTILINE))
    assert headings >= ALERTS, ALERTS - headings
    for name, rule in rules.items():
        assert rule["labels"] == {
            "severity": "critical" if name == "KubevisionOperatorDown" else "warning",
            "team": "vision",
        }, name
        annotations = rule["annotations"]
        assert set(annotations) == {"summary", "description", "runbook_url"}, name
        # GitHub's anchor of a "### Name" heading is the name in lower case.
        assert annotations["runbook_url"] == f"{RUNBOOK}#{name.lower()}", name
        assert annotations["summary"].endswith(".") and "\n" not in annotations["description"]
    severities = {"alerts": {"operatorDown": {"severity": "page", "for": "10m"}}}
    rules = alerts_of(helm.template(with_rule(**severities), tmp_path=tmp_path))
    assert rules["KubevisionOperatorDown"]["labels"] == {"severity": "page"}
    assert rules["KubevisionOperatorDown"]["for"] == "10m"
    assert rules["KubevisionTrainingStalled"]["labels"] == {"severity": "warning"}


def test_alerts_follow_what_is_installed(helm: Helm, tmp_path: Path) -> None:
    """No Pushgateway: no group to outlive its retention. No operator replica: none to be
    down (the other alerts stay: they need series, which then are absent)."""
    without_gateway = {"metrics": {**MONITORED["metrics"], "pushgatewayURL": ""}}
    rules = alerts_of(helm.template(without_gateway, tmp_path=tmp_path))
    assert set(rules) == ALERTS - {"KubevisionPushgatewayGroupStale"}
    scaled = {**MONITORED, "operator": {"replicas": 0}}
    rules = alerts_of(helm.template(scaled, tmp_path=tmp_path))
    assert set(rules) == ALERTS - {"KubevisionOperatorDown"}


def test_operator_series_are_selected_by_the_service_monitor_s_job(
    helm: Helm, tmp_path: Path
) -> None:
    """The ServiceMonitor sets no jobLabel, so the Prometheus Operator names the job after
    the Service: every operator selector of the alerts uses that name, or operatorJob."""
    for values in (MONITORED, {**MONITORED, "fullnameOverride": "vision"}):
        docs = helm.template(values, tmp_path=tmp_path)
        assert "jobLabel" not in one(docs, "ServiceMonitor")["spec"]
        assert operator_jobs(alerts_of(docs)) == {one(docs, "Service")["metadata"]["name"]}
    scraped_otherwise = {
        "metrics": {"prometheusRule": {"enabled": True, "operatorJob": "kubevision-operator"}}
    }
    docs = helm.template(scraped_otherwise, tmp_path=tmp_path)
    assert not by_kind(docs, "ServiceMonitor")
    assert operator_jobs(alerts_of(docs)) == {"kubevision-operator"}


def test_thresholds_come_from_the_operator_s_settings(helm: Helm, tmp_path: Path) -> None:
    """One source for each number: the stall limit, the watch timeout and the retention are
    the values that configure the operator (promtool shows they act; here, that they are
    read from there)."""
    values: Obj = {
        **MONITORED,
        "operator": {
            "reconcileStallSeconds": 45,
            "watch": {"serverTimeoutSeconds": 100, "clientTimeoutSeconds": 140},
        },
        "metrics": {**MONITORED["metrics"], "pushgatewayRetentionSeconds": 7200},
    }
    rules = alerts_of(helm.template(values, tmp_path=tmp_path))
    assert rules["KubevisionOperatorReconcileStalled"]["expr"].endswith("> 45")
    watch = rules["KubevisionOperatorWatchSilent"]["expr"]
    assert "[140s]" in watch and watch.endswith("<= 140)") and "300" not in watch
    assert "> 10800" in rules["KubevisionPushgatewayGroupStale"]["expr"]
