"""The operator's entry point: ``kubevision operator``."""

from __future__ import annotations

import logging

import kopf
from kubernetes import client, config

from kubevision_operator.handlers import Runtime, build_registry
from kubevision_operator.kube import Kube
from kubevision_operator.settings import OperatorSettings

log = logging.getLogger(__name__)


def run(settings: OperatorSettings, *, peering: str | None = None) -> None:
    """Run the operator until it is stopped (SIGINT/SIGTERM), against the in-cluster
    configuration or the current kubeconfig.

    Args:
        settings: operator settings.
        peering: kopf peering object name for several replicas (one is active at a time);
            None runs standalone.
    """
    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    except config.ConfigException:
        config.load_kube_config()  # type: ignore[no-untyped-call]
    runtime = Runtime(settings, Kube(client.ApiClient()))
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
