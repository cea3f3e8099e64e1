"""``kubevision crds``: the CustomResourceDefinitions written (or checked) from the api's
pydantic models."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from kubevision_api import crdgen
from kubevision_cli.command import Command


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``kubevision crds``."""
    parser.add_argument(
        "--out", default="crds", metavar="DIR", help="Output folder (default: ./crds)."
    )
    parser.add_argument("--check", action="store_true", help="Compare only; exit 1 on drift.")


def run(args: argparse.Namespace) -> int:
    """Write the CRDs and print their paths (0), or with ``--check`` print the diff and
    return 1 when the files differ from the models."""
    out = Path(args.out)
    if args.check:
        diff = crdgen.drift(out)
        if diff:
            print(diff, end="")
            print(f"{out}: out of date; run `kubevision crds`", file=sys.stderr)
            return 1
        return 0
    for path in crdgen.write(out):
        print(path)
    return 0


COMMAND = Command(
    name="crds",
    help="Write the CustomResourceDefinitions derived from the API models.",
    description=(
        "Write crds/ from the pydantic models (the only source of the CRDs). With --check, "
        "write nothing: print a diff and exit 1 when the files differ from the models."
    ),
    add_arguments=add_arguments,
    run=run,
)
