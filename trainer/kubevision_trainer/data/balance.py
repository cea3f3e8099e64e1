"""Class balancing of the training split by oversampling images of rare concepts."""

from __future__ import annotations

import heapq
import math
import random

from kubevision_trainer.data.sample import Sample


def balance(
    train: list[Sample], num_classes: int, max_expansion_ratio: float, seed: int
) -> list[Sample]:
    """Oversample images of under-represented concepts.

    A concept's count is the number of training images having it among their labels. Extra
    copies are added one at a time, each time for the concept with the lowest count (ties: the
    lowest class index) that is still below the most frequent concept's initial count, taking
    that concept's images in a seeded shuffled order, round-robin. The rarest concepts thus gain
    first, as water fills the lowest basin. A copy of a multi-label image raises every concept
    it has. Images without label are never copied.

    Args:
        train: the training samples.
        num_classes: number of concepts; labels lie in ``0 .. num_classes - 1``.
        max_expansion_ratio: the result holds at most ``floor(len(train) * ratio)`` samples.
        seed: seed of the copy order; the same inputs give the same output.

    Returns:
        A new list: ``train`` plus the copies (the same ``Sample`` objects repeated), sorted
        by path.

    Raises:
        ValueError: ``max_expansion_ratio`` below 1, or a label outside ``0 .. num_classes-1``.
    """
    if max_expansion_ratio < 1:
        raise ValueError(f"max_expansion_ratio must be at least 1, got {max_expansion_ratio}")
    counts = [0] * num_classes
    pools: list[list[Sample]] = [[] for _ in range(num_classes)]
    for sample in sorted(train, key=lambda s: s.path):
        for label in set(sample.labels):
            if not 0 <= label < num_classes:
                raise ValueError(f"{sample.path}: label {label} outside 0..{num_classes - 1}")
            counts[label] += 1
            pools[label].append(sample)
    budget = math.floor(len(train) * max_expansion_ratio) - len(train)
    target = max(counts, default=0)
    rng = random.Random(seed)
    for pool in pools:
        rng.shuffle(pool)

    heap = [(count, label) for label, count in enumerate(counts) if 0 < count < target]
    heapq.heapify(heap)
    turn = [0] * num_classes
    extra: list[Sample] = []
    while heap and len(extra) < budget:
        count, label = heapq.heappop(heap)
        if count != counts[label]:
            # A copy made for another concept raised this one too: re-queue at its true count.
            if counts[label] < target:
                heapq.heappush(heap, (counts[label], label))
            continue
        pool = pools[label]
        sample = pool[turn[label] % len(pool)]
        turn[label] += 1
        extra.append(sample)
        for other in set(sample.labels):
            counts[other] += 1
        if counts[label] < target:
            heapq.heappush(heap, (counts[label], label))
    return sorted([*train, *extra], key=lambda s: s.path)
