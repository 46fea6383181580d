"""Grouping rows of different lengths into padded batches: the cheapest split, counted in positions.

A replay runs each group as one batch padded to its longest row, and every batch costs a pass of fixed
overhead (one forward and backward through every block, whatever its size) on top of its positions. Too
few groups pad short rows to long ones; too many pay the overhead again and again: with four fixed
groups, a single request's seven rows ran as four batches of one or two rows, and its value optimization
took twice as long as in one batch (BENCHMARKS.md, "One batch for a few rows").
"""

from __future__ import annotations

import torch

# What one more batch costs, in replayed positions: on SmolLM2, one CPU thread, a pass over a batch of a
# few short rows took about 0.18 s, and a position in a large batch about 6 ms (forward and backward).
PASS_OVERHEAD_POSITIONS = 32


def cheapest_split(widths: torch.Tensor, overhead: float = PASS_OVERHEAD_POSITIONS) -> list[int]:
    """Sizes of the consecutive groups of `widths` [n] (sorted ascending, each a row's length) that minimize
    Σ over groups (rows × the group's longest width + `overhead`). Exact: an optimal split never separates
    rows of equal width, so a dynamic program runs over the distinct widths (O(m²) for m of them)."""
    if widths.numel() == 0:
        return []
    values, counts = torch.unique_consecutive(widths, return_counts=True)
    values, counts = values.tolist(), counts.tolist()
    if any(b < a for a, b in zip(values, values[1:])):
        raise ValueError("widths must be sorted ascending")
    cumulative = [0]
    for count in counts:
        cumulative.append(cumulative[-1] + count)
    m = len(values)
    best = [0.0] + [float("inf")] * m  # best[j]: cheapest cost of the first j distinct widths
    start = [0] * (m + 1)  # where the last group of that cheapest split starts
    for j in range(1, m + 1):
        for i in range(j):
            cost = best[i] + (cumulative[j] - cumulative[i]) * values[j - 1] + overhead
            if cost < best[j]:
                best[j], start[j] = cost, i
    sizes: list[int] = []
    j = m
    while j > 0:
        sizes.append(cumulative[j] - cumulative[start[j]])
        j = start[j]
    return sizes[::-1]
