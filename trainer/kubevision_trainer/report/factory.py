"""Which reporters a training Job plugs in, from its plan."""

from __future__ import annotations

from kubevision_api.plan import TrainingPlan
from kubevision_trainer.report.prometheus import PrometheusReporter
from kubevision_trainer.report.reporter import Reporter


def job_reporters(plan: TrainingPlan) -> list[Reporter]:
    """Prometheus (``/metrics`` on the plan's port, and a Pushgateway when configured)."""
    reporters: list[Reporter] = []
    if plan.metrics_port is not None or plan.pushgateway_url:
        reporters.append(
            PrometheusReporter(
                namespace=plan.namespace,
                view=plan.view,
                modelversion=plan.model_version,
                port=plan.metrics_port,
                pushgateway_url=plan.pushgateway_url,
            )
        )
    return reporters
