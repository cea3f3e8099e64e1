"""``kubevision trainer``: what the training Job runs, a TrainingPlan file in, an exit code
and a termination message out."""

from __future__ import annotations

import argparse

from kubevision_api import contract
from kubevision_cli.command import Command


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``kubevision trainer``."""
    parser.add_argument(
        contract.PLAN_FLAG, required=True, metavar="PATH", help="TrainingPlan JSON file."
    )
    parser.add_argument(
        "--device", default="auto", choices=["auto", "cpu", "cuda"], help="Default: cuda if any."
    )
    parser.add_argument(
        contract.TERMINATION_LOG_FLAG,
        default=contract.TERMINATION_LOG,
        metavar="PATH",
        help="Where the last error goes, in one line (Kubernetes terminationMessagePath).",
    )


def run(args: argparse.Namespace) -> int:
    """Run the plan; returns the exit code of the run's ``contract.Outcome``. A plan whose
    world has more than one process first starts torchrun, whose workers run this same command
    line (``kubevision_trainer.launch``); the exit code is then the first failing worker's."""
    import kubevision_trainer.main
    from kubevision_trainer import launch

    code = launch.launch_plan_file(args.plan, args.argv, termination_log=args.termination_log)
    if code is not None:
        return code
    return kubevision_trainer.main.run_plan_file(
        args.plan, device=args.device, termination_log=args.termination_log
    )


COMMAND = Command(
    name=contract.TRAINER_SUBCOMMAND,
    help="Run a TrainingPlan (what the training Job runs).",
    description="Run the trainer on a TrainingPlan JSON file, as the training Job does.",
    add_arguments=add_arguments,
    run=run,
)
