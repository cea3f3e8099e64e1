"""The shipped Grafana dashboards, read from the chart: panels, their PromQL, variables, and
the metric names the code exports (from the registries themselves, so a renamed metric in
the trainer or the operator shows here)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry

from tests.helm.helm_tool import CHART

DASHBOARDS = {"Training": "training.json", "Operator": "operator.json"}
METRIC = re.compile(r"\b(kubevision_[a-z0-9_]+)\b")
TRAINER_PREFIXES = (
    "kubevision_train_",
    "kubevision_val_",
    "kubevision_best_",
    "kubevision_evaluation_",
)
#: The aggregation rule: ``max by (namespace, view, modelversion) (``, with the metric's own
#: labels after the three where it has some (the evaluation's split, concept, ...).
AGGREGATION_PREFIX = re.compile(r"max by \(namespace, view, modelversion(, [a-z_]+)*\) \(")


@dataclass(frozen=True)
class Query:
    dashboard: str
    panel: str
    expr: str

    def metrics(self) -> set[str]:
        return set(METRIC.findall(self.expr))


def load(title: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((CHART / "dashboards" / DASHBOARDS[title]).read_text())
    return data


def queries(title: str) -> list[Query]:
    return [
        Query(title, panel["title"], target["expr"])
        for panel in load(title)["panels"]
        for target in panel["targets"]
    ]


def variables(title: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = load(title)["templating"]["list"]
    return found


def exported_names(registry: CollectorRegistry) -> set[str]:
    """Names of the series a registry exposes: counters as ``_total``, histograms as
    ``_bucket``/``_sum``/``_count`` (``_created`` left out: no panel needs it)."""
    names = set()
    for family in registry.collect():
        if family.type == "counter":
            names.add(f"{family.name}_total")
        elif family.type == "histogram":
            names |= {f"{family.name}_{s}" for s in ("bucket", "sum", "count")}
        else:
            names.add(family.name)
    return names


def trainer_registry() -> CollectorRegistry:
    from kubevision_trainer.report.prometheus import PrometheusReporter

    return PrometheusReporter(namespace="n", view="v", modelversion="m").registry


def operator_registry() -> CollectorRegistry:
    from kubevision_operator.metrics import OperatorMetrics

    return OperatorMetrics().registry


def fill(expr: str, values: dict[str, str], rate_interval: str = "1m") -> str:
    """The query as Grafana sends it: ``$var`` and ``${var}`` replaced."""
    out = expr.replace("$__rate_interval", rate_interval)
    for name, value in values.items():
        out = out.replace("${" + name + "}", value).replace("$" + name, value)
    return out
