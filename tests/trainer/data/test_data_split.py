"""split: deterministic by (seed, path), stable when images are added, stratified guarantees."""

from __future__ import annotations

import hashlib

import pytest

from kubevision_trainer.data import split
from kubevision_trainer.data.sample import Sample


def samples(n: int, labels: tuple[int, ...] = (0,), prefix: str = "img") -> list[Sample]:
    return [Sample(path=f"{prefix}/{i:05d}.jpg", uri="", labels=labels) for i in range(n)]


def paths(items: list[Sample]) -> list[str]:
    return [s.path for s in items]


def test_draw_is_the_documented_hash() -> None:
    digest = hashlib.sha256(b"7:a/b.jpg").digest()
    assert split.draw(7, "a/b.jpg") == int.from_bytes(digest[:8], "big") / 2**64
    assert 0 <= split.draw(0, "x") < 1


def test_deterministic_and_sorted() -> None:
    data = samples(200)
    train, val = split.split(list(reversed(data)), 0.3, seed=5, stratified=False)
    assert (train, val) == split.split(data, 0.3, seed=5, stratified=False)
    assert paths(train) == sorted(paths(train)) and paths(val) == sorted(paths(val))
    assert sorted(paths(train) + paths(val)) == paths(data)
    assert paths(val) == [s.path for s in data if split.draw(5, s.path) < 0.3]
    assert split.split(data, 0.3, seed=6, stratified=False)[1] != val


def test_adding_images_never_moves_an_existing_one() -> None:
    old = samples(300)
    new = old + samples(300, prefix="new") + samples(50, labels=(1,), prefix="other")
    old_val = set(paths(split.split(old, 0.25, seed=1, stratified=False)[1]))
    new_val = set(paths(split.split(new, 0.25, seed=1, stratified=False)[1]))
    assert {p for p in new_val if p.startswith("img/")} == old_val


def test_fraction_is_roughly_honoured() -> None:
    train, val = split.split(samples(1000), 0.2, seed=0, stratified=False)
    assert len(train) + len(val) == 1000
    # Binomial(1000, 0.2): sd 12.6, so 150..250 is about 4 sd.
    assert 150 <= len(val) <= 250


def test_stratified_gives_each_concept_both_sides() -> None:
    # Seed chosen so that, unstratified, concept 1's three images all go to train and concept
    # 2's two images both go to validation.
    rare = [Sample(path=f"rare/{i}.jpg", uri="", labels=(1, 3)) for i in range(3)]
    twins = [Sample(path=f"twin/{i}.jpg", uri="", labels=(2,)) for i in range(2)]
    single = [Sample(path="single.jpg", uri="", labels=(4,))]
    data = samples(100) + rare + twins + single
    seed = next(
        s
        for s in range(10_000)
        if all(split.draw(s, x.path) >= 0.5 for x in rare)
        and all(split.draw(s, x.path) < 0.5 for x in twins)
    )
    plain_train, plain_val = split.split(data, 0.5, seed, stratified=False)
    assert set(paths(rare)) <= set(paths(plain_train))
    assert set(paths(twins)) <= set(paths(plain_val))

    train, val = split.split(data, 0.5, seed, stratified=True)
    lowest = min(rare, key=lambda s: split.draw(seed, s.path))
    highest = max(twins, key=lambda s: split.draw(seed, s.path))
    assert set(paths(val)) == set(paths(plain_val)) - {highest.path} | {lowest.path}
    assert set(paths(train)) == set(paths(plain_train)) - {lowest.path} | {highest.path}


def test_images_without_label_form_a_group() -> None:
    unlabelled = [Sample(path=f"neg/{i}.jpg", uri="") for i in range(2)]
    seed = next(s for s in range(10_000) if all(split.draw(s, x.path) >= 0.1 for x in unlabelled))
    train, val = split.split(samples(20) + unlabelled, 0.1, seed, stratified=True)
    assert len([s for s in val if not s.labels]) == 1
    assert len([s for s in train if not s.labels]) == 1


def test_refuses_bad_input() -> None:
    with pytest.raises(ValueError, match="validation_fraction"):
        split.split(samples(3), 1.5, 0, True)
    with pytest.raises(ValueError, match="twice"):
        split.split(samples(3) + samples(1), 0.2, 0, True)
