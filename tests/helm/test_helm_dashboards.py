"""The Grafana dashboards shipped by the chart: the panels the issue asks for, variables from
label_values queries, the design's aggregation rule, no vector() fallback, and no panel that
names a metric the code does not export."""

from __future__ import annotations

import re

import pytest
from prometheus_client import CollectorRegistry, Counter

from tests.helm import dashboards
from tests.helm.dashboards import AGGREGATION_PREFIX, TRAINER_PREFIXES

TRAINING_PANELS = [
    "Learning rate",
    "Batch loss",
    "Validation loss",
    "Validation accuracy",
    "Validation mAP",
    "Images per second",
    "Epoch",
    "Best metric",
    "Phase",
    "Evaluation",
    "Concepts omitted",
    "Per-concept evaluation",
]
#: The final evaluation's panels: selected by the split variable too.
EVALUATION_PANELS = ["Evaluation", "Concepts omitted", "Per-concept evaluation"]
OPERATOR_PANELS = [
    "Reconciles per second",
    "Reconcile errors per second",
    "Reconcile duration",
    "ModelVersions by phase",
    "Queue length",
    "Watch events per second",
    "Seconds since the last watch event",
]


#: The design's metrics (§6) that the dashboards draw. The batch and image counters are
#: drawn through the epoch and images/s gauges.
DRAWN = {
    "kubevision_train_learning_rate",
    "kubevision_train_batch_loss",
    "kubevision_train_images_per_second",
    "kubevision_train_epoch",
    "kubevision_val_loss",
    "kubevision_val_accuracy",
    "kubevision_val_map",
    "kubevision_best_metric",
    "kubevision_evaluation_value",
    "kubevision_evaluation_concept_value",
    "kubevision_evaluation_concepts_omitted",
    "kubevision_modelversion_phase",
    "kubevision_operator_reconciles_total",
    "kubevision_operator_reconcile_duration_seconds_bucket",
    "kubevision_operator_queue_length",
    "kubevision_operator_watch_events_total",
    "kubevision_operator_last_watch_event_timestamp_seconds",
}


def all_queries() -> list[dashboards.Query]:
    return [q for title in dashboards.DASHBOARDS for q in dashboards.queries(title)]


def test_panels() -> None:
    assert [p["title"] for p in dashboards.load("Training")["panels"]] == TRAINING_PANELS
    assert [p["title"] for p in dashboards.load("Operator")["panels"]] == OPERATOR_PANELS
    for title in dashboards.DASHBOARDS:
        data = dashboards.load(title)
        assert data["title"] == title and data["uid"].startswith("kubevision-")
        ids = [p["id"] for p in data["panels"]]
        assert len(ids) == len(set(ids))
        for panel in data["panels"]:
            assert panel["targets"], panel["title"]
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}


def test_training_variables_come_from_label_values() -> None:
    by_name = {v["name"]: v for v in dashboards.variables("Training")}
    assert list(by_name) == ["datasource", "namespace", "view", "modelversion", "split", "metric"]
    assert by_name["datasource"]["type"] == "datasource"
    for name in ("namespace", "view", "modelversion", "split", "metric"):
        var = by_name[name]
        assert var["type"] == "query"
        query = var["query"]["query"]
        assert re.fullmatch(rf"label_values\(kubevision_\w+(\{{.*\}})?, {name}\)", query), query
        assert var["definition"] == query
    # Each variable narrows by the ones before it.
    assert "$namespace" in by_name["view"]["query"]["query"]
    assert "$view" in by_name["modelversion"]["query"]["query"]
    assert "$modelversion" in by_name["split"]["query"]["query"]
    assert "$split" in by_name["metric"]["query"]["query"]
    # Splits like the ModelVersions (several, or all); one per-concept figure at a time, so
    # that a bar is one concept's value of one figure.
    assert by_name["split"]["multi"] and by_name["split"]["allValue"] == ".*"
    assert not by_name["metric"]["multi"] and not by_name["metric"]["includeAll"]


def test_no_vector_fallback() -> None:
    for query in all_queries():
        assert "vector(" not in query.expr.replace(" ", ""), query
        assert " or " not in query.expr, f"{query}: a fallback hides missing series"


def test_trainer_metrics_follow_the_aggregation_rule() -> None:
    """Every trainer metric is read through max by (namespace, view, modelversion, ...),
    selected by the three variables: scraped and pushed series draw one curve."""
    for query in dashboards.queries("Training"):
        for metric in query.metrics():
            if metric.startswith(TRAINER_PREFIXES):
                assert AGGREGATION_PREFIX.match(query.expr), query
        for var in ("$namespace", "$view", "$modelversion"):
            assert var in query.expr, query
    # The operator's phase gauge keeps its own label too.
    (phase,) = [q for q in dashboards.queries("Training") if q.panel == "Phase"]
    assert phase.expr.startswith("max by (namespace, view, modelversion, phase) (")
    assert not AGGREGATION_PREFIX.match("max by (namespace, view) (kubevision_val_loss)")


def test_evaluation_panels() -> None:
    """The evaluation's panels keep their series' own labels, select the split variable, and
    the per-concept panel draws one bar per concept of the chosen figure."""
    by_title = {p["title"]: p for p in dashboards.load("Training")["panels"]}
    grouped = {
        "Evaluation": "split, indicator",
        "Concepts omitted": "split",
        "Per-concept evaluation": "split, concept, metric",
    }
    for title in EVALUATION_PANELS:
        (target,) = by_title[title]["targets"]
        expr = target["expr"]
        assert expr.startswith(f"max by (namespace, view, modelversion, {grouped[title]}) ("), expr
        assert 'split=~"$split"' in expr and "{{split}}" in target["legendFormat"]
        # The figures are final: read at the query's instant, not as curves.
        assert target["instant"] and not target["range"]
    per_concept = by_title["Per-concept evaluation"]
    assert per_concept["type"] == "bargauge"
    (target,) = per_concept["targets"]
    assert 'metric=~"$metric"' in target["expr"]
    assert target["legendFormat"].endswith("{{concept}}")
    assert per_concept["fieldConfig"]["defaults"]["min"] == 0
    assert per_concept["fieldConfig"]["defaults"]["max"] == 1


def test_every_panel_metric_is_exported_by_the_code() -> None:
    exported = dashboards.exported_names(dashboards.trainer_registry()) | (
        dashboards.exported_names(dashboards.operator_registry())
    )
    for query in all_queries():
        metrics = query.metrics()
        assert metrics, f"{query}: names no kubevision metric"
        assert metrics <= exported, f"{query.panel}: {metrics - exported} not exported"
    # Every metric (docs/trainer.md, Prometheus metrics) that a panel should draw is drawn.
    shown = set().union(*(q.metrics() for q in all_queries()))
    assert shown >= DRAWN, DRAWN - shown
    assert exported >= DRAWN, DRAWN - exported


def test_exported_names_can_fail() -> None:
    """The check above is not vacuous: a dashboard metric missing from a registry is caught."""
    registry = CollectorRegistry()
    Counter("kubevision_operator_reconciles", "x", registry=registry)
    names = dashboards.exported_names(registry)
    assert names == {"kubevision_operator_reconciles_total"}
    assert "kubevision_operator_reconciles" not in names


@pytest.mark.parametrize("title", sorted(dashboards.DASHBOARDS))
def test_queries_have_balanced_brackets(title: str) -> None:
    for query in dashboards.queries(title):
        for open_, close in ("()", "{}", "[]"):
            assert query.expr.count(open_) == query.expr.count(close), query
