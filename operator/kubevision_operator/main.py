"""The operator's entry point: ``kubevision operator``."""

from __future__ import annotations

import logging

import kopf

from kubevision_operator import kube
from kubevision_operator.registry import build_registry
from kubevision_operator.runtime import Runtime
from kubevision_operator.settings import OperatorSettings

log = logging.getLogger(__name__)


def run(settings: OperatorSettings, *, peering: str | None = None) -> None:
    """Run the operator until it is stopped (SIGINT/SIGTERM), against the in-cluster
    configuration or the current kubeconfig (:func:`kube.load_config`).

    Args:
        settings: operator settings.
        peering: kopf peering object name for several replicas (one is active at a time);
            None runs standalone.
    """
    kube.load_config()
    policy = kube.RequestPolicy(
        connect_timeout=settings.api_connect_timeout_seconds,
        read_timeout=settings.api_read_timeout_seconds,
        attempts=settings.api_attempts,
    )
    runtime = Runtime(settings, kube.Kube(policy=policy))
    registry = build_registry(runtime)
    namespaces = settings.namespaces or None
    log.info("kubevision operator: watching %s", ", ".join(settings.namespaces) or "all namespaces")
    kopf.run(
        registry=registry,
        standalone=peering is None,
        peering_name=peering,
        namespaces=namespaces or [],
        clusterwide=namespaces is None,
    )
