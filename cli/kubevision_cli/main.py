"""The ``kubevision`` entry point: one parser from ``COMMANDS``, logging, and errors turned
into exit codes. A new sub-command is a module under ``kubevision_cli.commands`` with a
``COMMAND`` and one line in ``COMMANDS``."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from kubevision_api import contract
from kubevision_api.errors import InputError
from kubevision_cli.command import Command
from kubevision_cli.commands import crds, evaluate, operator, predict, train, trainer

COMMANDS: tuple[Command, ...] = (
    train.COMMAND,
    evaluate.COMMAND,
    predict.COMMAND,
    trainer.COMMAND,
    operator.COMMAND,
    crds.COMMAND,
)


def parser() -> argparse.ArgumentParser:
    """The parser of ``kubevision`` and every sub-command in ``COMMANDS``."""
    root = argparse.ArgumentParser(
        prog="kubevision",
        description="Train computer-vision models locally or on Kubernetes.",
    )
    root.add_argument("-v", "--verbose", action="store_true", help="Debug logging.")
    sub = root.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        child = sub.add_parser(command.name, help=command.help, description=command.description)
        command.add_arguments(child)
        child.set_defaults(run=command.run)
    return root


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line (``sys.argv[1:]`` when ``argv`` is None); argparse exits with
    code 2 on unknown flags."""
    return parser().parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point. Returns the exit code: the sub-command's (0 success, 1 failure), or 2 for
    bad input, printed as one ``error: ...`` line on stderr."""
    args = parse(argv)
    # The command line as given: a launcher (kubevision_trainer.launch) runs its workers with it.
    args.argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        code: int = args.run(args)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return contract.Outcome.INVALID_INPUT.exit_code
    return code
