"""Train/validation/test split keyed on (seed, image path), so that adding images never moves
an existing one (docs/trainer.md, "Classes and the split")."""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from typing import NamedTuple, TypeVar

from kubevision_api.view import Task
from kubevision_trainer.data.loading import CachedImage
from kubevision_trainer.data.sample import Sample

_Item = TypeVar("_Item", Sample, CachedImage)


def draw(seed: int, path: str) -> float:
    """The image's uniform draw in [0, 1): the first 8 bytes of
    ``sha256(f"{seed}:{path}")``, big-endian, divided by 2**64."""
    digest = hashlib.sha256(f"{seed}:{path}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def primary_concept(sample: Sample) -> int:
    """The concept a sample is stratified by: its smallest label (the label itself for
    classification), or -1 for an image without label."""
    return min(sample.labels) if sample.labels else -1


class Sides(NamedTuple):
    """The three sides of a split, each sorted by path."""

    train: list[Sample]
    val: list[Sample]
    #: Held-out images, empty without a test fraction.
    test: list[Sample]


def split(
    samples: list[Sample],
    validation_fraction: float,
    seed: int,
    stratified: bool,
    test_fraction: float = 0.0,
) -> Sides:
    """Split samples into training, validation and test sets.

    With ``u = draw(seed, path)``, an image goes to validation when ``u < validation_fraction``,
    to test when ``validation_fraction <= u < validation_fraction + test_fraction``, else to
    training. Its side depends on nothing else, so adding or removing other images never moves
    it, and adding a test fraction never moves a validation image (test images come out of
    training).

    With ``stratified``, the training and validation images are grouped by
    :func:`primary_concept` (-1 being a group too) and an image moves only in two cases: a
    group of 2 or more images that drew no validation image sends its lowest-draw image to
    validation; one that drew no training image sends its highest-draw image to training. Such
    a move can be undone when images are added to the group, the one exception to the rule
    above. Test images never move and never count in a group: the test split stays exactly
    the images that drew it (a concept may have no test image; the evaluation lists it).

    Args:
        samples: the dataset's samples; paths must be unique.
        validation_fraction: share of images expected in validation, in [0, 1].
        seed: split seed.
        stratified: apply the per-concept guarantee above.
        test_fraction: share of images expected in test, in [0, 1 - validation_fraction].

    Returns:
        ``Sides(train, val, test)``, each sorted by path.

    Raises:
        ValueError: a fraction outside its range, or a path listed twice.
    """
    if not 0.0 <= validation_fraction <= 1.0:
        raise ValueError(f"validation_fraction must be in [0, 1], got {validation_fraction}")
    if not 0.0 <= test_fraction <= 1.0 - validation_fraction:
        raise ValueError(
            f"test_fraction must be in [0, 1 - validation_fraction], got {test_fraction} "
            f"with validation_fraction {validation_fraction}"
        )
    draws: dict[str, float] = {}
    for sample in samples:
        if sample.path in draws:
            raise ValueError(f"image path {sample.path!r} appears twice")
        draws[sample.path] = draw(seed, sample.path)
    test_end = validation_fraction + test_fraction
    in_test = {path: validation_fraction <= u < test_end for path, u in draws.items()}
    in_val = {path: u < validation_fraction for path, u in draws.items()}

    if stratified:
        groups: dict[int, list[Sample]] = defaultdict(list)
        for sample in samples:
            if not in_test[sample.path]:
                groups[primary_concept(sample)].append(sample)
        for members in groups.values():
            if len(members) < 2:
                continue
            # Ties in the draw (same 64 bits) are broken by path, to stay deterministic.
            ordered = sorted(members, key=lambda s: (draws[s.path], s.path))
            if not any(in_val[s.path] for s in members):
                in_val[ordered[0].path] = True
            elif all(in_val[s.path] for s in members):
                in_val[ordered[-1].path] = False

    ordered_samples = sorted(samples, key=lambda s: s.path)
    return Sides(
        train=[s for s in ordered_samples if not in_val[s.path] and not in_test[s.path]],
        val=[s for s in ordered_samples if in_val[s.path]],
        test=[s for s in ordered_samples if in_test[s.path]],
    )


def leave_out_background(train: list[_Item], task: Task, skipped: Counter[str]) -> list[_Item]:
    """The training samples (or loaded images) that train: detection images without boxes
    are left out and counted in ``skipped`` as ``NoBoxes``.

    They stay out of training (the product's rule), but not out of the split: on the
    validation side they are kept, so that false positives on them count. Other tasks have no
    background images; their samples are returned as they are.
    """
    if task is not Task.DETECTION:
        return train
    kept = [item for item in train if (item if isinstance(item, Sample) else item.sample).boxes]
    if len(kept) < len(train):
        skipped["NoBoxes"] += len(train) - len(kept)
    return kept
