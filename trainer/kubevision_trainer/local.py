"""Local mode (``kubevision train``): the same TrainingPlan and trainer as a Job, in this
process, with ``file://`` storage under ``./runs/`` and a progress bar; the run writes its
report image and evaluation as a Job does (``final``)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from kubevision_api import manifests
from kubevision_api.errors import InputError
from kubevision_api.modelversion import ModelVersion, Resources
from kubevision_api.plan import PlanDefaults, TrainingPlan, resolve
from kubevision_api.view import View
from kubevision_trainer import launch, main
from kubevision_trainer.report import factory
from kubevision_trainer.report.progress import ProgressBarReporter

log = logging.getLogger(__name__)


def absolute_uri(uri: str, base: Path) -> str:
    """A scheme-less URI is a path relative to the manifest's folder."""
    if "://" in uri:
        return uri
    return "file://" + str((base / uri).resolve())


def plan_from_manifests(
    paths: Sequence[str | Path],
    *,
    output: str | None = None,
    epochs: int | None = None,
    pushgateway_url: str | None = None,
    nproc: int | None = None,
    device: str = "auto",
    any_view: bool = False,
) -> TrainingPlan:
    """Load one View and one ModelVersion from manifest files or folders and resolve them
    into a plan, as the operator would, with local defaults. ``nproc`` > 1 makes the plan's
    world ``nproc`` processes on one node (:func:`with_processes`). With ``any_view``, the
    ModelVersion is resolved against the View given, whatever its ``viewRef`` names
    (``kubevision evaluate``: a trained version scored on another View's dataset).

    Raises:
        InputError: not exactly one View and one ModelVersion, a bad manifest, a plan
            error (e.g. an architecture that does not fit the task), or an ``nproc`` the
            plan cannot run with.
    """
    loaded = manifests.load(paths)
    views = [item for item in loaded if isinstance(item.obj, View)]
    versions = [item for item in loaded if isinstance(item.obj, ModelVersion)]
    names = ", ".join(str(p) for p in paths)
    if len(views) != 1 or len(versions) != 1:
        raise InputError(
            names,
            f"expected one View and one ModelVersion, found {len(views)} and {len(versions)}",
        )
    view_item, mv_item = views[0], versions[0]
    view, mv = view_item.obj, mv_item.obj
    assert isinstance(view, View) and isinstance(mv, ModelVersion)
    dataset = view.spec.dataset.model_copy(
        update={"uri": absolute_uri(view.spec.dataset.uri, view_item.source.parent)}
    )
    view = view.model_copy(update={"spec": view.spec.model_copy(update={"dataset": dataset})})
    spec_update: dict[str, Any] = {}
    if mv.spec.pretrained_weights is not None:
        weights = mv.spec.pretrained_weights
        spec_update["pretrained_weights"] = weights.model_copy(
            update={"uri": absolute_uri(weights.uri, mv_item.source.parent)}
        )
    if epochs is not None:
        # Validated as the manifest's own value would be (model_copy would not check it).
        try:
            spec_update["training"] = mv.spec.training.model_validate(
                {**mv.spec.training.model_dump(), "epochs": epochs}
            )
        except ValueError as exc:
            raise InputError(
                "--epochs", f"{epochs}: must be at least 1 (spec.training.epochs)"
            ) from exc
    if nproc is not None and nproc < 1:
        raise InputError("--nproc", f"{nproc}: must be at least 1 (processes on this machine)")
    if nproc is not None and nproc > 1:
        training = spec_update.get("training", mv.spec.training)
        spec_update["resources"] = with_processes(
            mv.spec.resources, nproc, training.batch_size, device
        )
    if output is not None:
        spec_update["output"] = mv.spec.output.model_copy(
            update={"uri": absolute_uri(output, Path.cwd())}
        )
    if any_view:
        spec_update["view_ref"] = mv.spec.view_ref.model_copy(update={"name": view.metadata.name})
    if spec_update:
        mv = mv.model_copy(update={"spec": mv.spec.model_copy(update=spec_update)})
    # Local runs have no operator: no status endpoint, no metrics port; they may push.
    defaults = PlanDefaults(
        output_base_uri="file://" + str(Path.cwd() / "runs"),
        metrics_port=None,
        pushgateway_url=pushgateway_url,
    )
    return resolve(view, mv, defaults)


def with_processes(resources: Resources, nproc: int, batch_size: int, device: str) -> Resources:
    """``resources`` for ``nproc`` processes on this one machine: ``gpus: nproc`` when the
    device is CUDA (one process per GPU, NCCL), else ``gpus: 0`` and ``processesPerNode:
    nproc`` (gloo); ``nodes: 1``. The world size is then ``nproc``.

    Raises:
        InputError: the global batch (``spec.training.batchSize``) does not divide by
            ``nproc``, or ``nproc`` is more GPUs than a Pod may have (8) or this machine has.
    """
    if batch_size % nproc:
        raise InputError(
            "--nproc",
            f"{nproc}: spec.training.batchSize {batch_size} does not divide by the world size "
            f"{nproc} (the global batch is split evenly over the processes): use an N that "
            f"divides {batch_size}, or another batch size (a new recipe: a new --output)",
        )
    cuda = main.device_for(device).type == "cuda"
    if cuda and nproc > torch.cuda.device_count():
        raise InputError(
            "--nproc", f"{nproc}: this machine has {torch.cuda.device_count()} CUDA devices"
        )
    update = {"nodes": 1, "gpus": nproc if cuda else 0, "processesPerNode": None if cuda else nproc}
    try:
        return Resources.model_validate({**resources.model_dump(by_alias=True), **update})
    except ValueError as exc:
        raise InputError("--nproc", f"{nproc}: {exc}") from exc


def run(
    paths: Sequence[str | Path],
    *,
    output: str | None = None,
    device: str = "auto",
    epochs: int | None = None,
    report: bool = True,
    pushgateway_url: str | None = None,
) -> str:
    """Train from manifests on this machine; returns the output URI. With
    ``pushgateway_url``, the metrics go to that Pushgateway too, as a Job's do.

    Raises:
        InputError: bad manifests, dataset or images (one line naming file, record, field).
    """
    plan = plan_from_manifests(paths, output=output, epochs=epochs, pushgateway_url=pushgateway_url)
    return train(plan, device=device, report=report)


def train(plan: TrainingPlan, *, device: str = "auto", report: bool = True) -> str:
    """Train ``plan`` in this process, as one of a launch's workers or alone; returns the
    output URI. The progress bar, the Pushgateway and the console lines are rank 0's alone
    (``launch.global_rank``); ``report`` False writes no ``report.png``.

    Raises:
        InputError: bad dataset or images (one line naming file, record, field).
    """
    # The progress bar shows each epoch; the engine's own line (for Jobs' logs) would repeat
    # it, once per rank.
    logging.getLogger("kubevision_trainer.engine").setLevel(logging.WARNING)
    if launch.global_rank() != 0:
        main.run(plan, device=device, reporters=[], report_image=report)
        return plan.output_uri
    bar = ProgressBarReporter()
    bar.console.log(f"training {plan.namespace}/{plan.model_version} into {plan.output_uri}")
    card = main.run(
        plan, device=device, reporters=[bar, *factory.job_reporters(plan)], report_image=report
    )
    bar.console.log(done_line(card, plan.output_uri))
    return plan.output_uri


def done_line(card: dict[str, Any], output_uri: str) -> str:
    """The console's last line: the best epoch, the first indicator of the final evaluation
    (docs/metrics.md) before the other figures, the test split's first indicator and images
    when the run has one, and where the outputs are."""
    metrics = card["metrics"]
    summary = card.get("evaluation", {}).get("summary", {})
    first = summary.get("indicator")
    figures = [f"{first} {summary['value']:.4f}"] if summary.get("value") is not None else []
    keys = (("accuracy", "accuracy"), ("mAP", "mAP"), ("ap50", "AP50"))
    figures += [
        f"{name} {metrics[key]:.4f}"
        for key, name in keys
        if metrics.get(key) is not None and name != first
    ]
    test = card.get("evaluation", {}).get("test")
    if test is not None and test.get("value") is not None:
        figures_test = f"; test {test['indicator']} {test['value']:.4f} on {test['images']} images"
    else:
        figures_test = ""
    return (
        f"done: best epoch {metrics['bestEpoch']}: {', '.join(figures) or 'no metric'}"
        f"{figures_test}; outputs in {output_uri}"
    )
