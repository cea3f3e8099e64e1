"""What a sub-command is: its name, its help, the arguments it adds and the one call it makes.

A sub-command module defines ``COMMAND``; ``kubevision_cli.main.COMMANDS`` lists them."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Command:
    """One ``kubevision`` sub-command.

    Attributes:
        name: the word after ``kubevision``.
        help: one line for ``kubevision --help``.
        description: the paragraph of ``kubevision <name> --help``.
        add_arguments: adds the sub-command's flags to its parser.
        run: makes the one call, importing its package lazily (``kubevision train`` must load
            no kopf, ``kubevision operator`` no torch); returns the exit code. Raises
            ``InputError`` for bad input (the entry point prints it and returns 2).
    """

    name: str
    help: str
    description: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
