"""``kubevision evaluate``: a trained checkpoint scored on the images a View describes, with the
figures and files a training's final evaluation writes (docs/metrics.md, "The test split and
``kubevision evaluate``"). In this process, without a cluster, as ``kubevision train`` is."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kubevision_api.contract import StorageRole
from kubevision_api.errors import InputError
from kubevision_api.evaluation import TEST_FOLDER, EvaluatedSplit, Evaluation
from kubevision_api.plan import TrainingPlan
from kubevision_trainer import checkpoint, local, main, models, scoring, storage
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

    Raises:
        InputError: bad manifests, dataset or images; a checkpoint that is not one, or trained
            for another task, other concepts or another architecture; a split without image.
        OSError: storage failed.
    """
    settings = settings or TrainerSettings()
    plan = local.plan_from_manifests(paths, output=output, any_view=True)
    uri = local.absolute_uri(model_uri, Path.cwd())
    state = checkpoint.from_bytes(storage.read_bytes(uri, role=StorageRole.WEIGHTS), uri)
    check_meta(state, plan, uri)
    images = prepare.scoring_images(plan, settings, which)
    dev = main.device_for(device)
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
    folder = folder_of(plan.output_uri, which)
    written = artifacts.write(folder, evaluation)
    log.info("wrote %s", written.evaluation)
    return evaluation
