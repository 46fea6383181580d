"""The split of replayed rows into padded batches: cheapest by the cost it claims to minimize."""

import itertools
import random

import pytest
import torch

from suture.editor.kv.buckets import cheapest_buckets


def _cost(widths, prefixes, groups, steps, overhead) -> float:
    return sum(steps * (len(g) * max(widths[i] for i in g) + overhead) + len(g) * max(prefixes[i] for i in g)
               for g in groups)


def _consecutive_splits(order: list[int]):
    for cuts in itertools.product([False, True], repeat=len(order) - 1):
        groups, group = [], [order[0]]
        for cut, row in zip(cuts, order[1:]):
            if cut:
                groups.append(group)
                group = []
            group.append(row)
        yield [*groups, group]


def _buckets(widths, prefixes, **kw):
    return [g.tolist() for g in cheapest_buckets(torch.tensor(widths), torch.tensor(prefixes), **kw)]


def test_a_few_rows_of_similar_length_run_as_one_batch():
    # A single request's seven rows: six context templates and the KL prompt.
    groups = _buckets([3, 4, 4, 5, 6, 6, 7], [9, 12, 3, 14, 0, 20, 11])
    assert len(groups) == 1 and sorted(groups[0]) == list(range(7))


def test_many_short_rows_are_not_padded_to_a_few_long_ones():
    groups = _buckets([1] * 50 + [20] * 2, [4] * 52, steps=1, overhead=32)
    assert [len(g) for g in groups] == [50, 2] and sorted(groups[1]) == [50, 51]


def test_a_short_prefix_is_not_padded_to_a_long_prompt():
    # The KL prompt beside a long prompt's rows: its prefix would be padded to 680 tokens.
    groups = _buckets([3, 4, 4], [0, 680, 675])
    assert sorted(map(sorted, groups)) == [[0], [1, 2]]


@pytest.mark.parametrize("seed", range(20))
def test_the_split_is_the_cheapest_consecutive_split(seed):
    rng = random.Random(seed)
    n = rng.randint(1, 8)
    widths = [rng.randint(1, 12) for _ in range(n)]
    prefixes = [rng.choice([0, 3, 20, 300]) for _ in range(n)]
    steps, overhead = rng.choice([1, 10]), rng.choice([0.5, 8, 32])
    groups = _buckets(widths, prefixes, steps=steps, overhead=overhead)
    assert sorted(i for g in groups for i in g) == list(range(n))
    order = sorted(range(n), key=lambda i: (widths[i], prefixes[i]))
    best = min(_cost(widths, prefixes, split, steps, overhead) for split in _consecutive_splits(order))
    assert _cost(widths, prefixes, groups, steps, overhead) == pytest.approx(best)


def test_mismatched_shapes_are_refused_and_nothing_gives_nothing():
    with pytest.raises(ValueError, match="one row each"):
        cheapest_buckets(torch.tensor([3, 1]), torch.tensor([3]))
    assert cheapest_buckets(torch.tensor([], dtype=torch.long), torch.tensor([], dtype=torch.long)) == []
