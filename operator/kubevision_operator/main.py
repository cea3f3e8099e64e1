"""The operator's entry point: ``kubevision operator``."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import kopf
from kubernetes import client, config
from kubernetes.config import incluster_config

from kubevision_operator.handlers import Runtime, build_registry
from kubevision_operator.kube import Kube
from kubevision_operator.settings import OperatorSettings

log = logging.getLogger(__name__)

#: Where Kubernetes mounts the Pod's ServiceAccount token and the cluster CA.
SERVICEACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
#: Environment variable that moves that folder (a test node agent mounts volumes elsewhere).
SERVICEACCOUNT_DIR_ENV = "KUBEVISION_SERVICEACCOUNT_DIR"


def serviceaccount_dir() -> Path:
    """The folder of the in-cluster ``token`` and ``ca.crt``: ``$KUBEVISION_SERVICEACCOUNT_DIR``
    or the standard path."""
    return Path(os.environ.get(SERVICEACCOUNT_DIR_ENV) or SERVICEACCOUNT_DIR)


def load_config() -> None:
    """Configure the kubernetes client: in-cluster (the ServiceAccount token and CA in
    :func:`serviceaccount_dir`, ``KUBERNETES_SERVICE_HOST``/``PORT``), else the kubeconfig."""
    folder = serviceaccount_dir()
    token, cert = str(folder / "token"), str(folder / "ca.crt")
    # kopf logs in with these same credentials (handlers' login, kube.client_credentials).
    try:
        incluster_config.InClusterConfigLoader(  # type: ignore[no-untyped-call]
            token_filename=token, cert_filename=cert
        ).load_and_set()
        log.info("kubevision operator: in-cluster configuration from %s", folder)
    except config.ConfigException:
        config.load_kube_config()  # type: ignore[no-untyped-call]


def run(settings: OperatorSettings, *, peering: str | None = None) -> None:
    """Run the operator until it is stopped (SIGINT/SIGTERM), against the in-cluster
    configuration or the current kubeconfig.

    Args:
        settings: operator settings.
        peering: kopf peering object name for several replicas (one is active at a time);
            None runs standalone.
    """
    load_config()
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
