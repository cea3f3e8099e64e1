"""The LoadingDataset step of a run, whole: read the annotations, split, load every image
(validated and cached), balance the training side, and describe the result in the run's
manifest (``dataset.json``) and the status's ``dataset`` part."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from typing import Any

from kubevision_api.errors import InputError
from kubevision_api.evaluation import EvaluatedSplit
from kubevision_api.plan import TrainingPlan
from kubevision_api.status import DatasetStatus, SkippedImages
from kubevision_api.view import Task
from kubevision_trainer import storage
from kubevision_trainer.data import balance, boxes, coverage, loading, readers, split
from kubevision_trainer.data.loading import CachedImage
from kubevision_trainer.settings import TrainerSettings

#: The manifest's name under the output URI.
MANIFEST = "dataset.json"


@dataclass
class Prepared:
    """The dataset of a run, read, split and validated.

    Attributes:
        train: the training images, balanced when the plan asks for it (an image may repeat).
        val: the validation images.
        status: the status's ``dataset`` part (counts, skipped images, concepts without val
            positives).
        manifest: ``dataset.json``'s content (every image, its split, sha256, concepts, boxes).
        digest: sha256 of the manifest's images (``last.pt`` records it; a resume with other
            images is refused).
        test: the held-out test images (``spec.datasetSplit.testFraction``), empty without a
            test split; carried as the validation images are (background images kept).
    """

    train: list[CachedImage]
    val: list[CachedImage]
    status: DatasetStatus
    manifest: dict[str, Any]
    digest: str
    test: list[CachedImage] = field(default_factory=list)


def prepare(plan: TrainingPlan, settings: TrainerSettings) -> Prepared:
    """Read the annotations, split (train, val and the test split when the plan has one),
    balance, and load every image (validated and cached in
    ``settings.cache_dir`` with ``settings.io_threads`` concurrent reads).

    Raises:
        InputError: bad annotations or images, or an empty train, val or (asked for) test
            split.
    """
    result = readers.read_dataset(plan.dataset, plan.task, plan.concepts)
    options = plan.spec.dataset_split
    train, val, test = split.split(
        result.samples,
        options.validation_fraction,
        options.seed,
        options.stratified,
        options.test_fraction,
    )
    train = split.leave_out_background(train, plan.task, result.skipped)
    empty = [
        name
        for name, side, wanted in (
            ("training", train, True),
            ("validation", val, True),
            ("test", test, options.test_fraction > 0),
        )
        if wanted and not side
    ]
    if empty:
        raise InputError(
            result.source,
            f"the {empty[0]} split is empty ({len(result.samples)} images); add images or "
            "change spec.datasetSplit.validationFraction"
            + (" or testFraction" if options.test_fraction > 0 else ""),
        )
    # Test images are checked by no coverage rule: a concept without test image is listed by
    # the test evaluation (conceptsWithoutGroundTruth), as the product's rule for validation.
    # Before reading any image, then again once boxes under 1 px at the resizer's size are gone.
    check = functools.partial(
        coverage.check,
        result,
        plan.concepts,
        task=plan.task,
        allow_empty=plan.dataset.allow_empty_concepts,
    )
    check(train, val)
    loaded = loading.load_images(
        train + val + test,
        settings.cache_dir,
        threads=settings.io_threads,
        options=loading.LoadOptions.of(plan),
    )
    result.boxes.drop(boxes.UNDER_ONE_PIXEL, sum(item.small_boxes for item in loaded))
    train_items = loaded[: len(train)]
    val_items = loaded[len(train) : len(train) + len(val)]
    test_items = loaded[len(train) + len(val) :]
    train_items = split.leave_out_background(train_items, plan.task, result.skipped)
    covered = check([item.sample for item in train_items], [item.sample for item in val_items])
    balanced = train_items
    if options.balancing.enabled:
        by_path = {item.sample.path: item for item in train_items}
        order = balance.balance(
            [item.sample for item in train_items],
            len(plan.concepts),
            options.balancing.max_expansion_ratio,
            options.seed,
        )
        balanced = [by_path[s.path] for s in order]
    images = [
        {
            "path": item.sample.path,
            "split": side,
            "sha256": item.sha256,
            "concepts": [plan.concepts[i] for i in item.sample.labels],
            "boxes": len(item.sample.boxes),
        }
        for side, items in (("train", train_items), ("val", val_items), ("test", test_items))
        for item in items
    ]
    manifest: dict[str, Any] = {
        "source": result.source,
        "format": plan.dataset.format.value,
        "task": plan.task.value,
        "concepts": plan.concepts,
        "images": images,
        "skipped": dict(sorted(result.skipped.items())),
        "ignoredAnnotations": dict(sorted(result.ignored_annotations.items())),
    }
    detection = plan.task is Task.DETECTION
    background_val = sum(1 for item in val_items if not item.sample.boxes) if detection else 0
    if detection:
        manifest.update(backgroundVal=background_val, boxes=result.boxes.manifest())
    digest = storage.sha256(json.dumps(images, sort_keys=True).encode())
    status = DatasetStatus(
        train=len(train_items),
        val=len(val_items),
        test=len(test_items),
        train_balanced=len(balanced) if options.balancing.enabled else None,
        skipped=[SkippedImages(reason=r, count=c) for r, c in sorted(result.skipped.items())],
        ignored_annotations=sum(result.ignored_annotations.values()),
        concepts_without_val_positives=covered.without_val,
        concepts_without_train_positives=covered.without_train,
        background_val=background_val,
        boxes=result.boxes.status() if detection else None,
    )
    return Prepared(balanced, val_items, status, manifest, digest, test_items)


def scoring_images(
    plan: TrainingPlan, settings: TrainerSettings, which: EvaluatedSplit
) -> list[CachedImage]:
    """The images ``kubevision evaluate`` scores, read, validated and cached as
    :func:`prepare` does, sorted by path: the plan's validation or test split (the same
    images, in the same order, as a training of this plan scores), or every image of the
    dataset (``EvaluatedSplit.DATASET``). No coverage or training-side rule applies: a
    concept without ground truth is listed by the evaluation.

    Raises:
        InputError: bad annotations or images, or no image to score (an empty split, a test
            split the plan does not have).
    """
    result = readers.read_dataset(plan.dataset, plan.task, plan.concepts)
    options = plan.spec.dataset_split
    if which is EvaluatedSplit.TEST and options.test_fraction == 0:
        raise InputError(
            f"ModelVersion {plan.namespace}/{plan.model_version}",
            "has no test split (spec.datasetSplit.testFraction is 0): score the validation "
            "split or every image (--split all)",
            field="spec.datasetSplit.testFraction",
        )
    if which is EvaluatedSplit.DATASET:
        samples = sorted(result.samples, key=lambda s: s.path)
    else:
        sides = split.split(
            result.samples,
            options.validation_fraction,
            options.seed,
            options.stratified,
            options.test_fraction,
        )
        samples = sides.val if which is EvaluatedSplit.VALIDATION else sides.test
    if not samples:
        raise InputError(
            result.source,
            f"no image to score in the {which.value} split ({len(result.samples)} images)",
        )
    return loading.load_images(
        samples,
        settings.cache_dir,
        threads=settings.io_threads,
        options=loading.LoadOptions.of(plan),
    )


def write_manifest(output_uri: str, prepared: Prepared) -> None:
    """Write ``dataset.json`` under ``output_uri``, atomically."""
    storage.write_atomic(
        storage.join(output_uri, MANIFEST), json.dumps(prepared.manifest, indent=1).encode()
    )
