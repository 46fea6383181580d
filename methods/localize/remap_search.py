"""Minimal-repair search for head-remap: how many of the top-ranked heads, and how much preservation.

Candidates are the heads in order of |patching effect|. For each set size on a schedule (the top-k heads),
preservation ρ is lowered from the most conservative value down: a lower ρ fixes more and moves unrelated
prompts more, so the search keeps the lowest ρ whose locality is within budget and stops lowering there.
The repair is the smallest size reaching `target_fixed` within budget, else the one fixing most within it.
"""

from __future__ import annotations

import torch

from suture.editor import Editor
from suture.editor.kv import CorpusSpec
from suture.methods.localize.repair_search import (
    LocalityProbe,
    RepairPlan,
    RepairPoint,
    RepairSearch,
    fixed_fraction,
    plan_applied,
)

SIZES = (1, 2, 3, 5, 8, 12, 18, 27, 40, 60)


def search_remap(editor: Editor, failing: list[str], twins: list[str], right: torch.Tensor,
                 ranked: list[tuple[int, int]], local: LocalityProbe, max_heads: int, preservations: list[float],
                 target_fixed: float, min_unchanged: float, extra_sizes: int, batch_size: int,
                 progress=print, corpus: CorpusSpec | None = None, keep: list[str] | None = None,
                 sizes: list[int] | None = None) -> RepairSearch:
    def plan_of(size: int, rho: float) -> RepairPlan:
        return RepairPlan(heads=ranked[:size], kind="remap", preservation=rho, undesired=failing, desired=twins,
                          corpus=corpus, keep=keep or [])

    sizes = sorted({s for s in (sizes or SIZES) if s < max_heads} | {max_heads})
    sizes = [s for s in sizes if s <= len(ranked)]
    trials, curve, chosen, chosen_point, stop_at = [], [], None, None, len(sizes)
    for index, size in enumerate(sizes):
        if index > stop_at:
            break
        best = None
        for rho in sorted(preservations, reverse=True):
            with plan_applied(editor, plan_of(size, rho)):
                unchanged, kl = local.measure()
                if unchanged < min_unchanged and best is not None:
                    break  # lower ρ only moves unrelated prompts more
                point = RepairPoint(n_heads=size, alpha=rho, fixed=fixed_fraction(editor, failing, right, batch_size),
                                    unchanged=unchanged, mean_kl=kl)
            trials.append(point)
            if unchanged < min_unchanged:
                break  # even the most preserving ρ is over budget (recorded as a trial)
            best = point
        if best is None:
            progress(f"{size:3d} head(s): no preservation tried keeps locality >= {min_unchanged}")
            continue
        curve.append(best)
        progress(f"{size:3d} head(s): preservation {best.alpha:g}: fixed {best.fixed:.3f}, "
                 f"locality unchanged {best.unchanged:.3f}, KL {best.mean_kl:.4f}")
        if chosen is None and best.fixed >= target_fixed:
            chosen, chosen_point, stop_at = plan_of(size, best.alpha), best, index + extra_sizes
    if chosen is None and curve:  # the target was not reached: the repair fixing most within the budget
        chosen_point = max(curve, key=lambda p: (p.fixed, -p.n_heads))
        chosen = plan_of(chosen_point.n_heads, chosen_point.alpha)
    return RepairSearch(curve=curve, trials=trials, chosen=chosen, chosen_point=chosen_point,
                        reached_target=chosen_point is not None and chosen_point.fixed >= target_fixed)
