"""The ``kubevision`` command. It only wires: parse, build settings, make one call. Each
sub-command imports its package lazily, so ``kubevision train`` loads no kopf and
``kubevision operator`` no torch."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import Any

from kubevision_api.errors import InputError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kubevision", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="Debug logging.")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser(
        "train",
        help="Train locally from View and ModelVersion manifests (no cluster).",
        description=(
            "Resolve the TrainingPlan from the manifests and run the trainer in this process, "
            "with file:// storage under ./runs/ and a progress bar. A folder stands for its "
            "*.yaml files."
        ),
    )
    train.add_argument(
        "-f",
        "--filename",
        action="append",
        required=True,
        metavar="PATH",
        help="Manifest file or folder (repeatable); one View and one ModelVersion in all.",
    )
    train.add_argument("--output", metavar="URI", help="Output URI (default ./runs/<ns>/<name>/).")
    train.add_argument(
        "--device", default="auto", choices=["auto", "cpu", "cuda"], help="Default: cuda if any."
    )
    train.add_argument("--epochs", type=int, metavar="N", help="Override spec.training.epochs.")
    train.add_argument("--no-report", action="store_true", help="Skip the report image.")

    trainer = sub.add_parser(
        "trainer",
        help="Run a TrainingPlan (what the training Job runs).",
        description="Run the trainer on a TrainingPlan JSON file, as the training Job does.",
    )
    trainer.add_argument("--plan", required=True, metavar="PATH", help="TrainingPlan JSON file.")
    trainer.add_argument(
        "--device", default="auto", choices=["auto", "cpu", "cuda"], help="Default: cuda if any."
    )
    trainer.add_argument(
        "--termination-log",
        default="/dev/termination-log",
        metavar="PATH",
        help="Where the last error goes, in one line (Kubernetes terminationMessagePath).",
    )
    crds = sub.add_parser(
        "crds",
        help="Write the CustomResourceDefinitions derived from the API models.",
        description=(
            "Write crds/ from the pydantic models (the only source of the CRDs). With --check, "
            "write nothing: print a diff and exit 1 when the files differ from the models."
        ),
    )
    crds.add_argument(
        "--out", default="crds", metavar="DIR", help="Output folder (default: ./crds)."
    )
    crds.add_argument("--check", action="store_true", help="Compare only; exit 1 on drift.")
    operator = sub.add_parser(
        "operator",
        help="Run the operator against the current kubeconfig (or in-cluster).",
        description=(
            "Reconcile Views and ModelVersions into training Jobs. Every setting also reads "
            "from a KUBEVISION_<NAME> environment variable (e.g. KUBEVISION_CONCURRENCY_LIMIT);"
            " a flag wins over the environment."
        ),
    )
    operator.add_argument(
        "--namespace", action="append", metavar="NS", help="Watch NS (repeatable; default all)."
    )
    operator.add_argument("--concurrency-limit", type=int, metavar="N", help="0: unlimited.")
    operator.add_argument("--status-url", metavar="URL", help="Advertised status endpoint URL.")
    operator.add_argument("--status-port", type=int, metavar="PORT")
    operator.add_argument("--health-port", type=int, metavar="PORT")
    operator.add_argument("--trainer-image", metavar="IMAGE")
    operator.add_argument("--output-base-uri", metavar="URI")
    operator.add_argument("--pushgateway-url", metavar="URL")
    operator.add_argument(
        "--peering", metavar="NAME", help="kopf peering for several replicas (default: standalone)."
    )
    return parser


def operator_settings(args: argparse.Namespace) -> Any:
    """The operator's settings: a flag wins over its ``KUBEVISION_*`` variable, which wins
    over the default (pydantic-settings gives init arguments the highest precedence)."""
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


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    return _parser().parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point. Returns the exit code: 0 success, 2 bad input, 1 other failure."""
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        if args.command == "train":
            import kubevision_trainer.local

            kubevision_trainer.local.run(
                args.filename,
                output=args.output,
                device=args.device,
                epochs=args.epochs,
                report=not args.no_report,
            )
            return 0
        if args.command == "crds":
            from pathlib import Path

            import kubevision_api.crdgen

            out = Path(args.out)
            if args.check:
                diff = kubevision_api.crdgen.drift(out)
                if diff:
                    print(diff, end="")
                    print(f"{out}: out of date; run `kubevision crds`", file=sys.stderr)
                    return 1
                return 0
            for path in kubevision_api.crdgen.write(out):
                print(path)
            return 0
        if args.command == "trainer":
            import kubevision_trainer.main

            code: int = kubevision_trainer.main.run_plan_file(
                args.plan, device=args.device, termination_log=args.termination_log
            )
            return code
        if args.command == "operator":
            import kubevision_operator.main

            kubevision_operator.main.run(operator_settings(args), peering=args.peering)
            return 0
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    raise AssertionError(f"unhandled command {args.command!r}")


if __name__ == "__main__":
    sys.exit(main())
