"""``kubevision evaluate``: a trained version's checkpoint scored on the images a View
describes, with the files a training's final evaluation writes (no cluster)."""

from __future__ import annotations

import argparse

from kubevision_cli.command import Command

#: --split's words: the EvaluatedSplit each scores (``all`` and ``dataset``: every image).
SPLITS = {"validation": "validation", "test": "test", "all": "dataset", "dataset": "dataset"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``kubevision evaluate``."""
    parser.add_argument(
        "-f",
        "--filename",
        action="append",
        required=True,
        metavar="PATH",
        help="Manifest file or folder (repeatable): one View (the images to score; it may "
        "describe another dataset than the one trained on) and one ModelVersion (its "
        "architecture, image resizer, batch size and datasetSplit).",
    )
    parser.add_argument(
        "--model",
        required=True,
        metavar="URI",
        help="The checkpoint to score, e.g. <output>/checkpoints/best.pt (a path or an fsspec "
        "URI); its task, concepts and architecture must be the View's and ModelVersion's.",
    )
    parser.add_argument(
        "--output",
        required=True,
        metavar="URI",
        help="Where evaluation.json and its figures go (the test split's under <output>/test/).",
    )
    parser.add_argument(
        "--split",
        default="validation",
        choices=list(SPLITS),
        help="Which of the View's images: the validation or test split that the ModelVersion's "
        "spec.datasetSplit draws (default: validation), or every image (all, dataset).",
    )
    parser.add_argument(
        "--device", default="auto", choices=["auto", "cpu", "cuda"], help="Default: cuda if any."
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="Write into an --output that holds a training run's output (its model.json), "
        "overwriting the run's evaluation.json (the test split's: test/evaluation.json); "
        "refused without it.",
    )


def run(args: argparse.Namespace) -> int:
    """Score and write; prints the first indicator and where the files went. Raises
    ``InputError`` for bad manifests, dataset, images or checkpoint, a ``--device`` this
    machine lacks, an ``--output`` that cannot be written or holds a training run's output
    (without ``--force``): checked before any scoring (the entry point prints it)."""
    from kubevision_api.evaluation import EvaluatedSplit
    from kubevision_trainer import local_evaluate

    which = EvaluatedSplit(SPLITS[args.split])
    evaluation = local_evaluate.evaluate(
        args.filename,
        model_uri=args.model,
        output=args.output,
        which=which,
        device=args.device,
        force=args.force,
    )
    summary = evaluation.summary
    value = "null" if summary.value is None else f"{summary.value:.4f}"
    print(
        f"{which.value}: {summary.images} images, {summary.indicator.value} {value}; "
        f"evaluation.json under {args.output}"
        + (" (test/)" if which is EvaluatedSplit.TEST else "")
    )
    return 0


COMMAND = Command(
    name="evaluate",
    help="Score a trained checkpoint on the images a View describes (no cluster).",
    description=(
        "Resolve the ModelVersion against the View given (whatever its viewRef names), check "
        "that the checkpoint was trained for the View's task and concepts and the "
        "ModelVersion's architecture, read and validate the images, score the chosen split "
        "with the checkpoint and write evaluation.json and its figures (confusion_matrix.png "
        "or pr_curves.png) to --output, as a training's final evaluation does "
        "(docs/metrics.md)."
    ),
    add_arguments=add_arguments,
    run=run,
)
