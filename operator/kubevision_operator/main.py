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

    Raises:
        SystemExit: (code 1, the reason on stderr) the operator refused to start
            (``runtime.StartupError``: e.g. CRDs of another release, ``crdcheck``).
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
    try:
        kopf.run(
            registry=registry,
            standalone=peering is None,
            peering_name=peering,
            namespaces=namespaces or [],
            clusterwide=namespaces is None,
        )
    except Exception:
        if runtime.startup_error is None:
            raise
        # kopf ends with its own error and traceback, which say less: the reason goes last,
        # where a Pod's termination message (FallbackToLogsOnError: the log's tail) finds it.
        logging.shutdown()
        raise SystemExit(f"kubevision operator: cannot start: {runtime.startup_error}") from None
