"""balance: rare concepts gain, the expansion bound holds, unlabelled images are never copied."""

from __future__ import annotations

from collections import Counter

import pytest

from kubevision_trainer.data import balance
from kubevision_trainer.data.sample import Sample


def dataset(counts: dict[int, int], unlabelled: int = 0) -> list[Sample]:
    out = [
        Sample(path=f"c{label}/{i}.jpg", uri="", labels=(label,))
        for label, n in counts.items()
        for i in range(n)
    ]
    return out + [Sample(path=f"neg/{i}.jpg", uri="") for i in range(unlabelled)]


def per_concept(items: list[Sample]) -> Counter[int]:
    return Counter(label for s in items for label in s.labels)


def test_rare_concepts_gain_up_to_the_most_frequent() -> None:
    train = dataset({0: 50, 1: 10, 2: 30})
    out = balance.balance(train, 3, max_expansion_ratio=10, seed=0)
    assert per_concept(out) == {0: 50, 1: 50, 2: 50}
    assert len(out) == 150
    assert Counter(s.path for s in out if s.labels == (1,)) == {
        f"c1/{i}.jpg": 5 for i in range(10)
    }  # round-robin: each rare image copied equally


@pytest.mark.parametrize(
    ("ratio", "rare", "middle"),
    [(1.0, 3, 10), (1.1, 13, 12), (1.25, 22, 21), (1.5, 37, 36), (3.0, 100, 100)],
)
def test_expansion_is_bounded_and_fills_the_rarest_first(
    ratio: float, rare: int, middle: int
) -> None:
    train = dataset({0: 100, 1: 3, 2: 10}, unlabelled=7)
    out = balance.balance(train, 3, max_expansion_ratio=ratio, seed=4)
    assert len(out) == min(int(len(train) * ratio), len(train) + 97 + 90)
    # Water-filling: concept 1 first climbs to 10, then 1 and 2 take turns (ties: lower index).
    # The most frequent concept is never copied, nor are the 7 unlabelled images.
    assert per_concept(out) == {0: 100, 1: rare, 2: middle}
    assert sum(1 for s in out if not s.labels) == 7


def test_deterministic_by_seed() -> None:
    train = dataset({0: 40, 1: 7})
    first = balance.balance(train, 2, 1.2, seed=1)
    assert first == balance.balance(list(reversed(train)), 2, 1.2, seed=1)
    assert first != balance.balance(train, 2, 1.2, seed=2)
    assert [s.path for s in first] == sorted(s.path for s in first)


def test_multi_label_copies_raise_every_concept() -> None:
    train = [Sample(path=f"a{i}", uri="", labels=(0, 1)) for i in range(2)]
    train += [Sample(path=f"b{i}", uri="", labels=(0,)) for i in range(6)]
    out = balance.balance(train, 2, max_expansion_ratio=5, seed=0)
    assert per_concept(out) == {0: 14, 1: 8}  # 6 copies of the two (0, 1) images


def test_balanced_input_is_unchanged() -> None:
    train = dataset({0: 5, 1: 5}, unlabelled=3)
    assert balance.balance(train, 2, 2.0, seed=0) == sorted(train, key=lambda s: s.path)


def test_refuses_bad_input() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        balance.balance(dataset({0: 1}), 1, 0.5, 0)
    with pytest.raises(ValueError, match="label 2"):
        balance.balance(dataset({2: 1}), 2, 2.0, 0)
