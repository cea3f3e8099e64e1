"""``kubevision train``: local mode, the plan resolved from manifests and trained in this
process (no cluster, no kopf)."""

from __future__ import annotations

import argparse
import sys

from kubevision_cli.command import Command


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``kubevision train``."""
    parser.add_argument(
        "-f",
        "--filename",
        action="append",
        required=True,
        metavar="PATH",
        help="Manifest file or folder (repeatable); one View and one ModelVersion in all.",
    )
    parser.add_argument("--output", metavar="URI", help="Output URI (default ./runs/<ns>/<name>/).")
    parser.add_argument(
        "--device", default="auto", choices=["auto", "cpu", "cuda"], help="Default: cuda if any."
    )
    parser.add_argument("--epochs", type=int, metavar="N", help="Override spec.training.epochs.")
    parser.add_argument("--no-report", action="store_true", help="Skip the report image.")
    parser.add_argument(
        "--pushgateway-url",
        metavar="URL",
        help="Push the run's metrics to this Pushgateway too (http://host:9091).",
    )


def run(args: argparse.Namespace) -> int:
    """Train; returns 0, or the exit code of the run's ``contract.Outcome`` after one
    ``error: <Reason>: <message>`` line (no traceback). Raises ``InputError`` for bad
    manifests, dataset or images (the entry point prints it)."""
    import kubevision_trainer.local
    from kubevision_api.errors import InputError
    from kubevision_trainer import outcome

    try:
        kubevision_trainer.local.run(
            args.filename,
            output=args.output,
            device=args.device,
            epochs=args.epochs,
            report=not args.no_report,
            pushgateway_url=args.pushgateway_url,
        )
    except InputError:
        raise
    except outcome.HANDLED as exc:
        ending, message = outcome.classify(exc)
        print(f"error: {ending.reason}: {message}", file=sys.stderr)
        return ending.exit_code
    return 0


COMMAND = Command(
    name="train",
    help="Train locally from View and ModelVersion manifests (no cluster).",
    description=(
        "Resolve the TrainingPlan from the manifests and run the trainer in this process, "
        "with file:// storage under ./runs/ and a progress bar. A folder stands for its "
        "*.yaml files."
    ),
    add_arguments=add_arguments,
    run=run,
)
