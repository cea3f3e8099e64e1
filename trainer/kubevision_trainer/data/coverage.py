"""Whether the split can train the View's concepts, checked before any image is read.

A concept with no training image trains a head that never sees a positive, and one with no
validation image has no measure: such a run would end Succeeded with a useless model, so it
stops here with an InputError, unless the View allows it (``spec.dataset.allowEmptyConcepts``;
the status then lists those concepts). The usual cause is a concept whose name differs from
the data's (``Dark`` over a folder ``dark``), so the error names the nearest names found in
the data: same but for case first, then by edit distance (``difflib``'s ratio).

A training split of one image is refused whatever the View allows: a batch of one image
cannot be normalised by BatchNorm in training mode (torch raises "Expected more than 1 value
per channel"), and one image trains nothing anyway.
"""

from __future__ import annotations

import difflib
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from kubevision_api import errors
from kubevision_api.view import Task
from kubevision_trainer.data.sample import ReadResult, Sample

#: Fewest training images a run needs (see the module docstring).
MIN_TRAINING_IMAGES = 2
#: difflib ratio from which a name of the data counts as near a concept (difflib's default).
NEAR = 0.6
#: Near names named per concept.
MAX_NEAR = 3


@dataclass(frozen=True)
class Coverage:
    """Concepts without a positive in each split, in class-index order (allowed ones only:
    otherwise :func:`check` raises)."""

    without_train: list[str] = field(default_factory=list)
    without_val: list[str] = field(default_factory=list)


def check(
    result: ReadResult,
    concepts: Sequence[str],
    train: Sequence[Sample],
    val: Sequence[Sample],
    *,
    task: Task,
    allow_empty: bool,
) -> Coverage:
    """Check that the split trains and measures every concept.

    Args:
        result: the reader's result (``source`` and ``names_not_in_view`` are used).
        concepts: the View's concept names, class-index order.
        train: the training samples (detection: without background images).
        val: the validation samples.
        task: the View's task (for the wording: images or boxes).
        allow_empty: ``spec.dataset.allowEmptyConcepts``.

    Returns:
        The concepts without a training or a validation positive (empty lists unless
        ``allow_empty``).

    Raises:
        InputError: fewer than :data:`MIN_TRAINING_IMAGES` training images; or, unless
            ``allow_empty``, a concept without a training or a validation positive. One line
            naming the dataset, each such concept, and for a concept with no image at all the
            nearest names of the data.
    """
    if len(train) < MIN_TRAINING_IMAGES:
        what = "image" + ("" if len(train) == 1 else "s")
        if task is Task.DETECTION:
            what += " with boxes"
        raise errors.InputError(
            result.source,
            f"the training split has {len(train)} {what}; training needs at least "
            f"{MIN_TRAINING_IMAGES} (BatchNorm cannot normalise a batch of one image): add "
            "images or lower spec.datasetSplit.validationFraction or testFraction",
        )
    in_train, in_val = _positives(train), _positives(val)
    without_train = [name for i, name in enumerate(concepts) if not in_train[i]]
    without_val = [name for i, name in enumerate(concepts) if not in_val[i]]
    if allow_empty or not (without_train or without_val):
        return Coverage(without_train, without_val)

    problems = []
    absent = [n for n in concepts if n in without_train and n in without_val]
    if absent:
        listed = "; ".join(f"{name!r} ({_near(name, result.names_not_in_view)})" for name in absent)
        problems.append(f"{_concepts(absent)} no image in the dataset: {listed}")
    index = {name: i for i, name in enumerate(concepts)}
    only_val = [n for n in without_train if n not in absent]
    if only_val:
        listed = ", ".join(f"{n!r} (0 training, {in_val[index[n]]} validation)" for n in only_val)
        problems.append(f"{_concepts(only_val)} no training image: {listed}")
    only_train = [n for n in without_val if n not in absent]
    if only_train:
        listed = ", ".join(
            f"{n!r} ({in_train[index[n]]} training, 0 validation)" for n in only_train
        )
        problems.append(
            f"{_concepts(only_train)} no validation image: {listed}; add images or raise "
            "spec.datasetSplit.validationFraction"
        )
    raise errors.InputError(
        result.source,
        "; ".join(problems) + "; or set spec.dataset.allowEmptyConcepts to train without them",
    )


def nearest(name: str, candidates: Iterable[str]) -> tuple[list[str], list[str]]:
    """The names among ``candidates`` that equal ``name`` but for case, and the (other) names
    nearest to it by ``difflib.get_close_matches`` on case-folded names (ratio >= 0.6, at
    most 3), best first."""
    by_fold: dict[str, list[str]] = {}
    for candidate in sorted(set(candidates)):
        by_fold.setdefault(candidate.casefold(), []).append(candidate)
    folded = name.casefold()
    same = [c for c in by_fold.get(folded, []) if c != name]
    close = difflib.get_close_matches(folded, list(by_fold), n=MAX_NEAR + 1, cutoff=NEAR)
    near = [c for fold in close if fold != folded for c in by_fold[fold]]
    return same, near[:MAX_NEAR]


def _near(name: str, candidates: Iterable[str]) -> str:
    same, near = nearest(name, candidates)
    parts = []
    if same:
        parts.append(
            f"the data has {_names(same)}: concept names are case-sensitive, so rename the "
            "concept or the data"
        )
    if near:
        parts.append(f"nearest names in the data: {_names(near)}")
    return "; ".join(parts) or "no similar name in the data"


def _positives(samples: Sequence[Sample]) -> Counter[int]:
    counts: Counter[int] = Counter()
    for sample in samples:
        counts.update(set(sample.labels))
    return counts


def _names(names: Sequence[str]) -> str:
    return ", ".join(repr(n) for n in names)


def _concepts(names: Sequence[str]) -> str:
    return "a View concept has" if len(names) == 1 else f"{len(names)} View concepts have"
