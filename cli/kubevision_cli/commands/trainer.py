"""``kubevision trainer``: what the training Job runs, a TrainingPlan file in, an exit code
and a termination message out."""

from __future__ import annotations

import argparse

from kubevision_cli.command import Command


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``kubevision trainer``."""
    parser.add_argument("--plan", required=True, metavar="PATH", help="TrainingPlan JSON file.")
    parser.add_argument(
        "--device", default="auto", choices=["auto", "cpu", "cuda"], help="Default: cuda if any."
    )
    parser.add_argument(
        "--termination-log",
        default="/dev/termination-log",
        metavar="PATH",
        help="Where the last error goes, in one line (Kubernetes terminationMessagePath).",
    )


def run(args: argparse.Namespace) -> int:
    """Run the plan; returns the trainer's exit code (0 done, 2 bad input, 1 failed,
    143 preempted)."""
    import kubevision_trainer.main

    return kubevision_trainer.main.run_plan_file(
        args.plan, device=args.device, termination_log=args.termination_log
    )


COMMAND = Command(
    name="trainer",
    help="Run a TrainingPlan (what the training Job runs).",
    description="Run the trainer on a TrainingPlan JSON file, as the training Job does.",
    add_arguments=add_arguments,
    run=run,
)
