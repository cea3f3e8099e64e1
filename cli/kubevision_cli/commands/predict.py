"""``kubevision predict``: a trained version's serving bundle applied to image files with
onnxruntime, without torch or the training code (``kubevision[serve]``; docs/serving.md)."""

from __future__ import annotations

import argparse
import json
import sys

from kubevision_cli.command import Command


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``kubevision predict``."""
    parser.add_argument(
        "--model",
        required=True,
        metavar="URI",
        help="The serving bundle: its export/ folder, or the training run's output URI (whose "
        "export/ is then used); a path or an fsspec URI.",
    )
    parser.add_argument(
        "images", nargs="+", metavar="IMAGE", help="Image files (paths or fsspec URIs)."
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=16,
        metavar="N",
        help="Images per run of the graph (default: 16).",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        metavar="N",
        help="onnxruntime's intra-op threads (default 0: one per physical core).",
    )


def run(args: argparse.Namespace) -> int:
    """Print one JSON object per image per line on stdout, in the order given. Raises
    ``InputError`` for a missing or invalid bundle (before any image is read) and for an image
    that cannot be read or decoded (the entry point prints it); returns 1 without the
    ``serve`` extra."""
    from kubevision_api.errors import InputError

    if args.batch_size < 1:
        raise InputError("--batch-size", f"must be at least 1, got {args.batch_size}")
    try:
        from kubevision_cli.serving import bundle, runner
    except ModuleNotFoundError as exc:
        print(
            f"error: kubevision predict needs {exc.name}: pip install 'kubevision[serve]'",
            file=sys.stderr,
        )
        return 1
    predictor = runner.Predictor(bundle.load(args.model), threads=args.threads)
    for result in predictor.predict(args.images, args.batch_size):
        print(json.dumps(result), flush=True)
    return 0


COMMAND = Command(
    name="predict",
    help="Apply a trained version's serving bundle (export/) to images (no torch).",
    description=(
        "Read the bundle's preprocessing.json, postprocessing.json and model.onnx, run each "
        "image through the bundle's pre-processing, the ONNX graph (onnxruntime, CPU) and its "
        "post-processing, and print one JSON object per image per line: classification, every "
        "concept by score with the top one; tagging, the concepts at or above their "
        "thresholds and every score; detection, the boxes in the image's pixels "
        "(docs/serving.md). Needs the serve extra, not torch."
    ),
    add_arguments=add_arguments,
    run=run,
)
