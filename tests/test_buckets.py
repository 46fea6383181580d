"""The split of replayed rows into padded batches: cheapest by the cost it claims to minimize."""

import itertools
import random

import pytest
import torch

from suture.editor.kv.buckets import cheapest_split


def _cost(widths: list[int], sizes: list[int], overhead: float) -> float:
    total, start = 0.0, 0
    for size in sizes:
        total += size * widths[start + size - 1] + overhead
        start += size
    return total


def _every_split(n: int):
    for cuts in itertools.product([False, True], repeat=n - 1):
        sizes, size = [], 1
        for cut in cuts:
            if cut:
                sizes.append(size)
                size = 0
            size += 1
        yield [*sizes, size]


def test_a_few_rows_of_similar_length_run_as_one_batch():
    assert cheapest_split(torch.tensor([3, 4, 4, 5, 6, 6, 7])) == [7]  # a single request's seven rows


def test_many_short_rows_are_not_padded_to_a_few_long_ones():
    assert cheapest_split(torch.tensor([1] * 50 + [20] * 2), overhead=32) == [50, 2]


def test_rows_of_equal_width_stay_together_and_nothing_is_lost():
    widths = torch.tensor([2, 2, 2, 9, 9, 9, 9, 30])
    sizes = cheapest_split(widths, overhead=1)
    assert sum(sizes) == len(widths) and sizes == [3, 4, 1]
    assert cheapest_split(torch.tensor([], dtype=torch.long)) == []


@pytest.mark.parametrize("seed", range(20))
def test_the_split_is_the_cheapest_of_all_splits(seed):
    rng = random.Random(seed)
    widths = sorted(rng.randint(1, 12) for _ in range(rng.randint(1, 9)))
    overhead = rng.choice([0.5, 3, 8, 32])
    sizes = cheapest_split(torch.tensor(widths), overhead=overhead)
    assert sum(sizes) == len(widths)
    best = min(_cost(widths, split, overhead) for split in _every_split(len(widths)))
    assert _cost(widths, sizes, overhead) == pytest.approx(best)


def test_unsorted_widths_are_refused():
    with pytest.raises(ValueError, match="sorted"):
        cheapest_split(torch.tensor([3, 1, 2]))
