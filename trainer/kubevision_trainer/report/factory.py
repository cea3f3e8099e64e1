"""Which reporters a training Job plugs in, from its plan."""

from __future__ import annotations

import hashlib
import os

from kubevision_api import contract
from kubevision_api.plan import TrainingPlan
from kubevision_trainer import distributed
from kubevision_trainer.report.prometheus import PrometheusReporter
from kubevision_trainer.report.reporter import Reporter
from kubevision_trainer.report.status import StatusReporter
from kubevision_trainer.settings import TrainerSettings


def run_id(plan: TrainingPlan) -> str:
    """What tells this training from another of the same name: the ModelVersion's uid, or in
    local mode (no uid) ``local-`` and 12 hex digits of the sha256 of its output URI."""
    if plan.uid:
        return plan.uid
    return "local-" + hashlib.sha256(plan.output_uri.encode()).hexdigest()[:12]


def job_reporters(plan: TrainingPlan, settings: TrainerSettings | None = None) -> list[Reporter]:
    """Prometheus (``/metrics`` on the plan's port, and a Pushgateway when configured) and the
    status reporter to the operator when the plan names a status endpoint (its token file may
    be moved by ``contract.ENV_STATUS_TOKEN_PATH``). None on a rank other than global rank 0
    of a distributed training: one voice reports (and serves ``/metrics``) for the run.
    ``settings`` (default: from the environment) caps the evaluation's per-concept series."""
    reporters: list[Reporter] = []
    if not distributed.World.from_env().is_main:
        return reporters
    if plan.status_endpoint is not None:
        endpoint = plan.status_endpoint
        token_path = os.environ.get(contract.ENV_STATUS_TOKEN_PATH)
        if token_path:
            endpoint = endpoint.model_copy(update={"token_path": token_path})
        reporters.append(
            StatusReporter(
                endpoint,
                namespace=plan.namespace,
                model_version=plan.model_version,
                uid=plan.uid,
                epochs=plan.spec.training.epochs,
            )
        )
    if plan.metrics_port is not None or plan.pushgateway_url:
        reporters.append(
            PrometheusReporter(
                namespace=plan.namespace,
                view=plan.view,
                modelversion=plan.model_version,
                run=run_id(plan),
                port=plan.metrics_port,
                pushgateway_url=plan.pushgateway_url,
                max_concepts=(settings or TrainerSettings()).prometheus_max_concepts,
            )
        )
    return reporters
