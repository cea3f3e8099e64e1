"""The distributed batching (issue 11, design point 3): each rank's slice of every global batch,
for world sizes 1-4, against the single-process batches."""

from __future__ import annotations

import pytest

from kubevision_trainer.data.torchdata import (
    EpochBatchSampler,
    EpochSampler,
    ValidationBatchSampler,
    batches_per_epoch,
    shard,
)


def _ranks(n: int, batch: int, world: int, epoch: int = 2, start: int = 0) -> list[list[list[int]]]:
    """Every rank's batches of ``epoch`` from batch ``start``."""
    out = []
    for rank in range(world):
        sampler = EpochBatchSampler(EpochSampler(n, seed=7, shuffle=True), batch, rank, world)
        sampler.set_epoch(epoch, start)
        out.append(list(sampler))
    return out


@pytest.mark.parametrize("world", [1, 2, 3, 4])
@pytest.mark.parametrize("n", [48, 49, 50, 51, 53, 60])
def test_slices_of_a_global_batch_make_up_the_single_process_batch(n: int, world: int) -> None:
    batch = 12
    sampler = EpochBatchSampler(EpochSampler(n, seed=7, shuffle=True), batch, 0, world)
    sampler.set_epoch(2)
    expected = list(sampler.global_batches())
    # The epoch's images in the single-process order, whatever the world size.
    single = _one_process_batches(n, batch)
    assert [i for b in expected for i in b] == [i for b in single for i in b]
    ranks = _ranks(n, batch, world)
    assert all(len(r) == len(expected) == batches_per_epoch(n, batch, world) for r in ranks)
    for position, whole in enumerate(expected):
        slices = [r[position] for r in ranks]
        assert [i for s in slices for i in s] == whole  # contiguous, in rank order
        sizes = [len(s) for s in slices]
        assert max(sizes) - min(sizes) <= 1 and min(sizes) >= 2
    # The batches are the single-process ones unless the last holds 2 to 2 x world - 1
    # images: it then joins the one before (two images per rank at least).
    left = n % batch
    if world == 1 or not 2 <= left < 2 * world:
        assert expected == single
    else:
        assert expected == [*single[:-2], single[-2] + single[-1]]


def _one_process_batches(n: int, batch: int) -> list[list[int]]:
    sampler = EpochBatchSampler(EpochSampler(n, seed=7, shuffle=True), batch)
    sampler.set_epoch(2)
    return list(sampler)


@pytest.mark.parametrize(
    ("n", "batch", "world", "sizes"),
    [
        (49, 12, 1, [12, 12, 12, 13]),  # one image left: joins the batch before
        (50, 12, 1, [12, 12, 12, 12, 2]),
        (49, 12, 2, [12, 12, 12, 13]),
        (51, 12, 2, [12, 12, 12, 15]),  # three images cannot give 2 ranks two each
        (52, 12, 2, [12, 12, 12, 12, 4]),  # two for each of 2 ranks
        (53, 12, 3, [12, 12, 12, 17]),
        (54, 12, 3, [12, 12, 12, 12, 6]),
        (55, 12, 4, [12, 12, 12, 19]),
        (56, 12, 4, [12, 12, 12, 12, 8]),
        (3, 12, 2, [3]),  # nothing before it: the only batch
    ],
)
def test_a_last_batch_of_fewer_than_two_images_a_rank_joins_the_one_before(
    n: int, batch: int, world: int, sizes: list[int]
) -> None:
    ranks = _ranks(n, batch, world)
    got = [sum(len(r[i]) for r in ranks) for i in range(len(ranks[0]))]
    assert got == sizes
    assert batches_per_epoch(n, batch, world) == len(sizes)


@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_resume_at_batch_k_yields_the_batches_that_followed(world: int) -> None:
    n, batch = 51, 8
    whole = _ranks(n, batch, world)
    for k in range(len(whole[0])):
        resumed = _ranks(n, batch, world, start=k)
        assert [r for r in resumed] == [r[k:] for r in whole], k
        sampler = EpochBatchSampler(EpochSampler(n, 7, True), batch, 0, world)
        sampler.set_epoch(2, k)
        assert len(sampler) == len(whole[0]) - k
        assert sampler.epoch_batches == len(whole[0])


@pytest.mark.parametrize("world", [1, 2, 3, 4])
@pytest.mark.parametrize("n", [1, 5, 30, 31])
def test_validation_shards_are_whole_single_process_batches_in_order(n: int, world: int) -> None:
    batch = 6
    single = list(ValidationBatchSampler(n, batch))
    assert single == [list(range(i, min(n, i + batch))) for i in range(0, n, batch)]
    shards = [ValidationBatchSampler(n, batch, rank, world) for rank in range(world)]
    assert [b for s in shards for b in s] == single
    assert [p for s in shards for p in s.positions] == list(range(len(single)))
    sizes = [len(s) for s in shards]
    assert max(sizes) - min(sizes) <= 1


def test_shard_is_contiguous_and_balanced() -> None:
    items = list(range(10))
    assert [shard(items, r, 3) for r in range(3)] == [[0, 1, 2], [3, 4, 5], [6, 7, 8, 9]]
    with pytest.raises(ValueError, match="outside"):
        EpochBatchSampler(EpochSampler(4, 0, True), 2, rank=2, world_size=2)
