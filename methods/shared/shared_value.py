"""The direction that edits' values share, kept out of each new value (lifelong editing).

Each MEMIT value δ (the residual written at the top layer's subject position) has a component along a
direction common to most edits: on SmolLM2 the mean of 64 CounterFact values' unit vectors has length 0.31
where independent directions would give 0.125 (BENCHMARKS.md, "A direction every value shares"). Written
once, that component is as small as the rest of the edit; written by N edits, through keys that also share
a component, it adds up in step at ordinary positions, and the drift it causes grows like N² instead of N.

The running mean of the earlier edits' unit values (kept in the ledger) estimates the direction; a new value
is optimized in the orthogonal complement (steps projected by I - s sᵀ), so the sum over edits cannot grow
along it. One call of many requests writes their values together, where the shared component adds up in
the same way: its value chunks after the first are optimized orthogonal to the mean of the chunks before.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from suture.editor import EditContext

ARTIFACT = "unit_values"  # ledger artifact: [n, d] unit values of one call's requests
# Fewer earlier values than this estimate mostly their own directions, not the shared one.
MIN_EARLIER = 8


def shared_value_direction(ctx: EditContext, this_call: list[torch.Tensor] = ()) -> torch.Tensor | None:
    """s [d], unit: the mean direction of earlier edits' values, and of `this_call`'s (unit values [k, d]
    of the chunks a many-request call has already optimized), or None before MIN_EARLIER of them."""
    earlier = [v for v in ctx.artifacts(ARTIFACT) if v is not None] + [v.cpu() for v in this_call]
    count = sum(v.shape[0] for v in earlier)
    if count < MIN_EARLIER:
        return None
    return F.normalize(torch.cat(earlier).float().sum(0), dim=0)


def orthogonal_steps(direction: torch.Tensor, metric: torch.Tensor | None = None) -> torch.Tensor:
    """The step metric [d, d] (editor/kv/values.py) that keeps δ orthogonal to `direction`: I - s sᵀ, around
    `metric` when one is given (Q P Q)."""
    d = direction.shape[0]
    projection = torch.eye(d, device=direction.device) - torch.outer(direction, direction)
    if metric is None:
        return projection
    return projection @ metric.to(projection.dtype) @ projection
