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
    train, val, test = split.split(list(reversed(data)), 0.3, seed=5, stratified=False)
    assert test == []
    assert (train, val, test) == split.split(data, 0.3, seed=5, stratified=False)
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
    train, val, _ = split.split(samples(1000), 0.2, seed=0, stratified=False)
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
    plain_train, plain_val, _ = split.split(data, 0.5, seed, stratified=False)
    assert set(paths(rare)) <= set(paths(plain_train))
    assert set(paths(twins)) <= set(paths(plain_val))

    train, val, _ = split.split(data, 0.5, seed, stratified=True)
    lowest = min(rare, key=lambda s: split.draw(seed, s.path))
    highest = max(twins, key=lambda s: split.draw(seed, s.path))
    assert set(paths(val)) == set(paths(plain_val)) - {highest.path} | {lowest.path}
    assert set(paths(train)) == set(paths(plain_train)) - {lowest.path} | {highest.path}


def test_images_without_label_form_a_group() -> None:
    unlabelled = [Sample(path=f"neg/{i}.jpg", uri="") for i in range(2)]
    seed = next(s for s in range(10_000) if all(split.draw(s, x.path) >= 0.1 for x in unlabelled))
    train, val, _ = split.split(samples(20) + unlabelled, 0.1, seed, stratified=True)
    assert len([s for s in val if not s.labels]) == 1
    assert len([s for s in train if not s.labels]) == 1


def test_refuses_bad_input() -> None:
    with pytest.raises(ValueError, match="validation_fraction"):
        split.split(samples(3), 1.5, 0, True)
    with pytest.raises(ValueError, match="twice"):
        split.split(samples(3) + samples(1), 0.2, 0, True)
    with pytest.raises(ValueError, match="test_fraction"):
        split.split(samples(3), 0.5, 0, True, test_fraction=0.6)
    with pytest.raises(ValueError, match="test_fraction"):
        split.split(samples(3), 0.5, 0, True, test_fraction=-0.1)


# --- the test split ------------------------------------------------------------------------


def test_test_side_is_the_draws_between_the_fractions() -> None:
    data = samples(400)
    train, val, test = split.split(data, 0.2, seed=3, stratified=False, test_fraction=0.15)
    draws = {s.path: split.draw(3, s.path) for s in data}
    assert paths(val) == [p for p, u in draws.items() if u < 0.2]
    assert paths(test) == [p for p, u in draws.items() if 0.2 <= u < 0.35]
    assert paths(train) == [p for p, u in draws.items() if u >= 0.35]
    # Binomial(400, 0.15): sd 7.1; 30..90 is over 4 sd.
    assert 30 <= len(test) <= 90


@pytest.mark.parametrize("stratified", [False, True])
def test_adding_a_test_fraction_moves_no_validation_image(stratified: bool) -> None:
    data = samples(300) + samples(40, labels=(1,), prefix="b") + samples(3, labels=(2,), prefix="c")
    train_before, val_before, test_before = split.split(data, 0.2, seed=9, stratified=stratified)
    train, val, test = split.split(data, 0.2, seed=9, stratified=stratified, test_fraction=0.3)
    assert test_before == [] and test
    assert val == val_before
    # The test split was taken from training, and training lost nothing else.
    assert set(paths(train)) == set(paths(train_before)) - set(paths(test))


def test_adding_images_moves_no_test_image() -> None:
    old = samples(300)
    new = old + samples(300, prefix="new") + samples(50, labels=(1,), prefix="other")
    sides_old = split.split(old, 0.25, seed=1, stratified=True, test_fraction=0.25)
    sides_new = split.split(new, 0.25, seed=1, stratified=True, test_fraction=0.25)
    for before, after in zip(sides_old, sides_new, strict=True):
        assert [p for p in paths(after) if p.startswith("img/")] == paths(before)


def test_stratification_never_touches_test_images() -> None:
    # Concept 1: three images, all of which draw the test side but one, which draws training.
    # Stratification sees a group of one (the test images are not in it) and moves nothing;
    # concept 2's two images both draw validation, and one is sent back to training.
    seed = next(
        s
        for s in range(100_000)
        if sum(0.3 <= split.draw(s, f"one/{i}.jpg") < 0.6 for i in range(3)) == 2
        and sum(split.draw(s, f"one/{i}.jpg") >= 0.6 for i in range(3)) == 1
        and all(split.draw(s, f"two/{i}.jpg") < 0.3 for i in range(2))
    )
    one = [Sample(path=f"one/{i}.jpg", uri="", labels=(1,)) for i in range(3)]
    two = [Sample(path=f"two/{i}.jpg", uri="", labels=(2,)) for i in range(2)]
    data = samples(50) + one + two
    plain = split.split(data, 0.3, seed, stratified=False, test_fraction=0.3)
    train, val, test = split.split(data, 0.3, seed, stratified=True, test_fraction=0.3)
    assert test == plain.test
    assert len([s for s in test if s.labels == (1,)]) == 2
    assert [s.path for s in train if s.labels == (1,)] == [
        s.path for s in plain.train if s.labels == (1,)
    ]
    assert not [s for s in val if s.labels == (1,)]
    highest = max(two, key=lambda s: split.draw(seed, s.path))
    assert set(paths(train)) == set(paths(plain.train)) | {highest.path}
    assert set(paths(val)) == set(paths(plain.val)) - {highest.path}
