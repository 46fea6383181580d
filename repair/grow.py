"""What the remap and tune searches share: candidate heads in rank order, the schedule of set sizes, growing
the set size by size, and at each size lowering the preservation weight ρ while locality stays within the
budget (a lower ρ fixes more and moves unrelated prompts more).

The repair is the smallest size reaching `target_fixed` within budget (the search goes `extra_sizes` past it
so the curve shows the threshold), else the one fixing most within it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from suture.editor.kv import CorpusSpec
from suture.repair.context import SearchContext
from suture.repair.trials import plan_applied
from suture.repair.types import RepairPlan, RepairPoint, RepairResult

SIZES = (1, 2, 3, 5, 8, 12, 18, 27, 40, 60)
Candidates = Literal["helping", "abs"]


def candidate_heads(ctx: SearchContext, candidates: Candidates) -> list[tuple[int, int]]:
    """'helping': heads whose patch from the twin raises the answer, strongest first (a map towards the twin's
    output makes a head whose twin output hurts worse); 'abs': every head by |patching effect|."""
    return ctx.ranked("signed", positive_only=True) if candidates == "helping" else ctx.ranked("abs")


def size_schedule(ctx: SearchContext, sizes: list[int] | None, ranked: list) -> list[int]:
    """The set sizes to try: `sizes` (default SIZES) below max_heads, max_heads itself, at most len(ranked)."""
    chosen = sorted({s for s in (sizes or SIZES) if s < ctx.max_heads} | {ctx.max_heads})
    return [s for s in chosen if s <= len(ranked)]


def read_statistics(ctx: SearchContext, heads: list[tuple[int, int]], corpus: CorpusSpec) -> None:
    """Every trial's edit reads its layers' head-output statistics: one corpus pass for all candidate layers
    now, instead of one pass per layer as trials first reach it."""
    ctx.editor.context.second_moment(sorted({layer for layer, _ in heads}), corpus, site="attn_out")


def grow(ctx: SearchContext, sizes: list[int], best_at: Callable[[int, list[RepairPoint]], RepairPoint | None],
         plan_of: Callable[[RepairPoint], RepairPlan]) -> RepairResult:
    """Try each size in turn; `best_at(size, trials)` measures its settings (appending each to trials) and
    returns the best within budget; `plan_of(point)` is the plan that point measured."""
    trials, curve, chosen, chosen_point, stop_at = [], [], None, None, len(sizes)
    for index, size in enumerate(sizes):
        if index > stop_at:
            break
        best = best_at(size, trials)
        if best is None:
            ctx.progress(f"{size:3d} head(s): no preservation tried keeps locality >= {ctx.min_unchanged}")
            continue
        curve.append(best)
        gain = "" if best.gain is None else f", gain {best.gain:g}"
        ctx.progress(f"{size:3d} head(s): preservation {best.preservation:g}{gain}: fixed {best.fixed:.3f}, "
                     f"locality unchanged {best.unchanged:.3f}, KL {best.mean_kl:.4f}")
        if chosen is None and best.fixed >= ctx.target_fixed:
            chosen, chosen_point, stop_at = plan_of(best), best, index + ctx.extra_sizes
    if chosen is None and curve:  # the target was not reached: the repair fixing most within the budget
        chosen_point = max(curve, key=lambda p: (p.fixed, -p.n_heads))
        chosen = plan_of(chosen_point)
    return RepairResult(curve=curve, trials=trials, chosen=chosen, chosen_point=chosen_point,
                        reached_target=chosen_point is not None and chosen_point.fixed >= ctx.target_fixed)


def lowest_preservation(ctx: SearchContext, plan_of: Callable[[float], RepairPlan], preservations: list[float],
                        trials: list[RepairPoint], **point: float) -> RepairPoint | None:
    """ρ lowered from the most preserving value while locality stays within budget: the last point within it
    (None when even the first is over). Every measured point, with the `point` fields (n_heads, gain, ...), is
    appended to `trials`."""
    best = None
    for rho in sorted(preservations, reverse=True):
        with plan_applied(ctx.editor, plan_of(rho)):
            unchanged, kl = ctx.locality.measure()
            if unchanged < ctx.min_unchanged and best is not None:
                break  # lower ρ only moves unrelated prompts more
            measured = RepairPoint(preservation=rho, fixed=ctx.fixed(), unchanged=unchanged, mean_kl=kl, **point)
        trials.append(measured)
        if unchanged < ctx.min_unchanged:
            break  # even the most preserving ρ is over budget (recorded as a trial)
        best = measured
    return best
