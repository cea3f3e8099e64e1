"""``kubevision operator``: the kopf operator, configured by flags over ``KUBEVISION_*``
variables over defaults (no torch)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from kubevision_cli.command import Command

if TYPE_CHECKING:
    from kubevision_operator.settings import OperatorSettings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``kubevision operator``; each stands for one ``OperatorSettings`` field."""
    parser.add_argument(
        "--namespace", action="append", metavar="NS", help="Watch NS (repeatable; default all)."
    )
    parser.add_argument("--concurrency-limit", type=int, metavar="N", help="0: unlimited.")
    parser.add_argument("--status-url", metavar="URL", help="Advertised status endpoint URL.")
    parser.add_argument(
        "--status-port", type=int, metavar="PORT", help="Port of the HTTPS status endpoint."
    )
    parser.add_argument(
        "--health-port", type=int, metavar="PORT", help="Port of /healthz and /metrics."
    )
    parser.add_argument("--trainer-image", metavar="IMAGE", help="Image of the training Jobs.")
    parser.add_argument(
        "--output-base-uri", metavar="URI", help="Base of default output URIs (s3://...)."
    )
    parser.add_argument(
        "--pushgateway-url", metavar="URL", help="Pushgateway the trainers push to."
    )
    parser.add_argument(
        "--peering", metavar="NAME", help="kopf peering for several replicas (default: standalone)."
    )


def settings(args: argparse.Namespace) -> OperatorSettings:
    """The operator's settings: a flag wins over its ``KUBEVISION_*`` variable, which wins
    over the default (pydantic-settings gives init arguments the highest precedence).

    Raises:
        pydantic.ValidationError: a flag or variable out of its bounds.
    """
    from kubevision_operator.settings import OperatorSettings

    flags = {
        "namespaces": args.namespace,
        "concurrency_limit": args.concurrency_limit,
        "status_url": args.status_url,
        "status_port": args.status_port,
        "health_port": args.health_port,
        "trainer_image": args.trainer_image,
        "output_base_uri": args.output_base_uri,
        "pushgateway_url": args.pushgateway_url,
    }
    return OperatorSettings(**{k: v for k, v in flags.items() if v is not None})


def run(args: argparse.Namespace) -> int:
    """Run the operator until SIGINT/SIGTERM; returns 0."""
    import kubevision_operator.main

    kubevision_operator.main.run(settings(args), peering=args.peering)
    return 0


COMMAND = Command(
    name="operator",
    help="Run the operator against the current kubeconfig (or in-cluster).",
    description=(
        "Reconcile Views and ModelVersions into training Jobs. Every setting also reads "
        "from a KUBEVISION_<NAME> environment variable (e.g. KUBEVISION_CONCURRENCY_LIMIT);"
        " a flag wins over the environment."
    ),
    add_arguments=add_arguments,
    run=run,
)
