"""``kubevision evaluate``: a trained checkpoint scored on the images a View describes, with the
figures and files a training's final evaluation writes (docs/metrics.md, "The test split and
``kubevision evaluate``"). In this process, without a cluster, as ``kubevision train`` is."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from kubevision_api.contract import StorageRole
from kubevision_api.errors import InputError
from kubevision_api.evaluation import TEST_FOLDER, EvaluatedSplit, Evaluation
from kubevision_api.plan import TrainingPlan
from kubevision_trainer import (
    checkpoint,
    local,
    main,
    modelcard,
    models,
    preflight,
    scoring,
    storage,
)
from kubevision_trainer.data import prepare
from kubevision_trainer.distributed import World
from kubevision_trainer.evaluation import artifacts
from kubevision_trainer.settings import TrainerSettings

log = logging.getLogger(__name__)


def check_meta(state: dict[str, Any], plan: TrainingPlan, source: str) -> None:
    """Refuse a checkpoint trained for another task, other concepts or another
    architecture than ``plan``'s (the View's task and concepts, the ModelVersion's
    architecture): its outputs would mean other things.

    Raises:
        InputError: naming ``source`` and the checkpoint's field (``meta.task``,
            ``meta.concepts``, ``meta.architecture``).
    """
    meta = state.get("meta")
    if not isinstance(meta, dict):
        raise InputError(source, "not a kubevision checkpoint (no meta)", field="meta")
    for key, want, what in (
        ("task", plan.task.value, f"the task of View {plan.view!r}"),
        ("concepts", plan.concepts, f"the concepts of View {plan.view!r}"),
        (
            "architecture",
            plan.spec.architecture,
            f"spec.architecture of ModelVersion {plan.model_version!r}",
        ),
    ):
        if meta.get(key) != want:
            raise InputError(
                source,
                f"was trained with {key} {meta.get(key)!r}, not {want!r} ({what})",
                field=f"meta.{key}",
            )


def check_device(device: str) -> torch.device:
    """The torch device ``device`` names, refused when this machine has no such CUDA device.

    Raises:
        InputError: naming ``--device``.
    """
    dev = main.device_for(device)
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = dev.index or 0
        if index >= count:
            raise InputError(
                "--device",
                f"{device}: this machine has {count} CUDA device(s); use cpu or auto",
            )
    return dev


def check_model(uri: str) -> None:
    """Refuse a ``--model`` that names a folder (a run's output, its checkpoints/) rather than
    a checkpoint file.

    Raises:
        InputError: naming ``--model`` and a checkpoint to give instead.
        StorageError: the store refused or failed the look-up.
    """
    fs, path = storage.filesystem(uri, role=StorageRole.WEIGHTS)
    try:
        folder = fs.isdir(path)
    except storage.STORE_ERRORS as exc:
        raise storage.StorageError(uri, StorageRole.WEIGHTS, exc) from exc
    if folder:
        inside = "best.pt" if uri.rstrip("/").endswith("/checkpoints") else checkpoint.BEST
        raise InputError(
            "--model",
            f"{uri} is a folder, not a checkpoint; give a checkpoint file such as "
            f"{storage.join(uri, inside)}",
        )


def check_output(folder: str, output_uri: str, *, force: bool) -> None:
    """Before any scoring: refuse an ``--output`` that holds a training run's output (its
    ``model.json``; the run's ``evaluation.json`` would be overwritten) unless ``force``, and
    one where nothing can be written (an existing file, a read-only place), by writing and
    deleting an object in ``folder``, where the evaluation's files will go.

    Raises:
        InputError: naming ``--output`` and the URI.
    """
    try:
        run = storage.exists(
            storage.join(output_uri, modelcard.MODEL_CARD), role=StorageRole.OUTPUT
        )
    except storage.StorageError:
        run = False  # the probe below says why the output is unusable
    if run and not force:
        raise InputError(
            "--output",
            f"{output_uri} holds a training run's output (model.json); choose another "
            "--output (or give --force to overwrite its evaluation)",
        )
    probe = storage.join(folder, preflight.PROBE.format(token=uuid.uuid4().hex[:12]))
    try:
        storage.require_bucket(output_uri, role=StorageRole.OUTPUT)
        storage.write_atomic(probe, b"kubevision evaluate\n")
        storage.remove(probe, role=StorageRole.OUTPUT)
    except storage.STORE_ERRORS as exc:
        cause = exc.__cause__ or exc
        raise InputError("--output", f"{output_uri} cannot be written: {cause}") from exc


def folder_of(output_uri: str, which: EvaluatedSplit) -> str:
    """Where the files of an evaluation of ``which`` go: the test split's under
    ``<output>/test/``, the others at the output's root (as a training writes them)."""
    if which is EvaluatedSplit.TEST:
        return storage.join(output_uri, TEST_FOLDER) + "/"
    return output_uri


def evaluate(
    paths: Sequence[str | Path],
    *,
    model_uri: str,
    output: str,
    which: EvaluatedSplit = EvaluatedSplit.VALIDATION,
    device: str = "auto",
    settings: TrainerSettings | None = None,
    force: bool = False,
) -> Evaluation:
    """Score the checkpoint at ``model_uri`` (a ``best.pt`` or ``last.pt``) on the images of the
    View in ``paths``, split as the ModelVersion there says, and write ``evaluation.json`` and
    its figures under ``output`` (the test split's under ``<output>/test/``). Returns the
    evaluation.

    The View may describe another dataset than the one trained on (another annotation file,
    another bucket): the ModelVersion is resolved against it whatever its ``viewRef`` names.
    The images are scored in batches of ``spec.training.batchSize``, in full precision, on one
    process: on the CPU, the validation split of the training's own data gives the training's
    own ``evaluation.json``.

    Args:
        paths: manifest files or folders: one View and one ModelVersion.
        model_uri: fsspec URI of the checkpoint (a relative path is one on this machine).
        output: URI of the output folder.
        which: the validation or test split of the View's images, or every image (DATASET).
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N``.
        settings: cache folder and I/O threads (default: from the environment).
        force: write into an output folder that holds a training run's ``model.json``.

    Raises:
        InputError: bad manifests, dataset or images; a ``--device`` this machine lacks; a
            ``--model`` that is a folder, not a checkpoint, or trained for another task, other
            concepts or another architecture; an ``--output`` that cannot be written, or holds
            a training run's output without ``force``; a split without image.
        OSError: storage failed.
    """
    settings = settings or TrainerSettings()
    plan = local.plan_from_manifests(paths, output=output, any_view=True)
    dev = check_device(device)
    uri = local.absolute_uri(model_uri, Path.cwd())
    check_model(uri)
    state = checkpoint.from_bytes(storage.read_bytes(uri, role=StorageRole.WEIGHTS), uri)
    check_meta(state, plan, uri)
    folder = folder_of(plan.output_uri, which)
    check_output(folder, plan.output_uri, force=force)
    images = prepare.scoring_images(plan, settings, which)
    model = models.build(
        plan.spec.architecture, plan.task, len(plan.concepts), plan.spec.image_resizer
    )
    try:
        model.load_state_dict(state["model"])
    except (KeyError, RuntimeError) as exc:
        raise InputError(uri, f"its weights do not load: {exc}", field="model") from exc
    model.to(dev).eval()
    epoch = state.get("epoch")
    scored = scoring.score(
        model,
        main.evaluation_loader(plan, images, dev, World()),
        task=plan.task,
        concepts=plan.concepts,
        split=which,
        seed=plan.spec.training.seed,
        model_version=f"{plan.namespace}/{plan.model_version}",
        best_epoch=epoch if isinstance(epoch, int) else None,
    )
    evaluation = scored.evaluation
    assert evaluation is not None  # one process: rank 0
    written = artifacts.write(folder, evaluation)
    log.info("wrote %s", written.evaluation)
    return evaluation
