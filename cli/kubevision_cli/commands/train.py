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
    parser.add_argument(
        "--nproc",
        type=int,
        metavar="N",
        help=(
            "Train with N processes on this machine (torchrun: gloo on the CPU, one GPU each "
            "with NCCL) in place of spec.resources (one node); the global batch "
            "(spec.training.batchSize) must divide by N."
        ),
    )
    parser.add_argument("--no-report", action="store_true", help="Skip the report image.")
    parser.add_argument(
        "--pushgateway-url",
        metavar="URL",
        help="Push the run's metrics to this Pushgateway too (http://host:9091).",
    )


def run(args: argparse.Namespace) -> int:
    """Train; returns 0, or the exit code of the run's ``contract.Outcome`` after one
    ``error: <Reason>: <message>`` line (no traceback). Raises ``InputError`` for bad
    manifests, dataset or images (the entry point prints it). With ``--nproc N`` (N > 1) this
    process launches N workers that run this same command line, and returns the exit code of
    the first that failed (``kubevision_trainer.launch``)."""
    import kubevision_trainer.local
    from kubevision_api import contract
    from kubevision_api.errors import InputError
    from kubevision_trainer import launch, outcome

    plan = kubevision_trainer.local.plan_from_manifests(
        args.filename,
        output=args.output,
        epochs=args.epochs,
        pushgateway_url=args.pushgateway_url,
        nproc=args.nproc,
        device=args.device,
    )
    if args.nproc is not None and args.nproc > 1 and not launch.is_worker():
        # The plan's world is N processes on this one machine: standalone torchrun.
        start = launch.Launch(nodes=1, nproc_per_node=plan.spec.resources.processes())
        return launch.run(start, launch.cli_entry(args.argv), termination_log=None)
    try:
        kubevision_trainer.local.train(plan, device=args.device, report=not args.no_report)
    except outcome.HANDLED as exc:
        ending, message = outcome.classify(exc)
        # A worker tells its launcher; the launcher keeps the first failing worker's line.
        launch.record_worker_line(contract.termination_line(ending, message))
        if isinstance(exc, InputError):
            raise
        print(f"error: {ending.reason}: {message}", file=sys.stderr)
        return ending.exit_code
    return 0


COMMAND = Command(
    name="train",
    help="Train locally from View and ModelVersion manifests (no cluster).",
    description=(
        "Resolve the TrainingPlan from the manifests and run the trainer in this process "
        "(or in N processes with --nproc N), "
        "with file:// storage under ./runs/ and a progress bar. A folder stands for its "
        "*.yaml files."
    ),
    add_arguments=add_arguments,
    run=run,
)
