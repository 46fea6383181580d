"""Grouping replayed rows into padded batches: the cheapest split, counted in positions.

A prefix replay runs each group of rows as one batch: once over their prefixes (left-padded to the longest),
then at every optimization step over their suffixes (right-padded to the longest), and every batch of a step
costs a pass of fixed overhead (a forward and a backward through every block, whatever its size). Too few
groups pad short rows to long ones; too many pay the overhead again and again: with four fixed groups, a
single request's seven rows ran as four batches of one or two rows, and its value optimization took twice
as long as in one batch (BENCHMARKS.md, "One batch for a few rows").
"""

from __future__ import annotations

import torch

# What one more batch costs a step, in replayed positions: on SmolLM2, one CPU thread, a pass over a batch of
# a few short rows took about 0.18 s, and a position in a large batch about 6 ms (forward and backward).
PASS_OVERHEAD_POSITIONS = 32
# Steps a replay runs, to weigh its per-step suffix work against its one-off prefix pass (a value
# optimization stops after about ten on CounterFact requests).
STEPS = 10


def cheapest_buckets(widths: torch.Tensor, prefixes: torch.Tensor, steps: int = STEPS,
                     overhead: float = PASS_OVERHEAD_POSITIONS) -> list[torch.Tensor]:
    """Groups of row indices, rows in order of suffix width `widths` [n] (then prefix length `prefixes` [n]),
    that minimize Σ over groups of steps · (rows · longest suffix + overhead) + rows · longest prefix.

    Exact among splits of that order into consecutive groups: a dynamic program over the distinct
    (width, prefix) pairs, rows of one pair always together (O(m²) for m pairs)."""
    if widths.shape != prefixes.shape or widths.dim() != 1:
        raise ValueError(f"widths {tuple(widths.shape)} and prefixes {tuple(prefixes.shape)} must be one row each")
    if widths.numel() == 0:
        return []
    order = torch.argsort(prefixes, stable=True)
    order = order[torch.argsort(widths[order], stable=True)]
    pairs, counts = torch.unique_consecutive(torch.stack([widths[order], prefixes[order]], 1), dim=0,
                                             return_counts=True)
    width, prefix, count = pairs[:, 0].tolist(), pairs[:, 1].tolist(), counts.tolist()
    m = len(count)
    best = [0.0] + [float("inf")] * m  # best[j]: the cheapest split of the first j pairs
    start = [0] * (m + 1)  # where the last group of that split starts
    for j in range(1, m + 1):
        rows, longest_prefix = 0, 0
        for i in range(j - 1, -1, -1):  # the last group is pairs i..j-1; its longest suffix is pair j-1's
            rows += count[i]
            longest_prefix = max(longest_prefix, prefix[i])
            cost = best[i] + steps * (rows * width[j - 1] + overhead) + rows * longest_prefix
            if cost < best[j]:
                best[j], start[j] = cost, i
    sizes: list[int] = []
    j = m
    while j > 0:
        sizes.append(sum(count[start[j]:j]))
        j = start[j]
    return list(torch.split(order, sizes[::-1]))
