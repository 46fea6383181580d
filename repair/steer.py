"""Steering: add α·d_h to each chosen head's output, d_h = mean output on the twins - mean on the failures.

Candidates are the heads whose patching helps (positive signed effect), largest first. At each set size
every α is tried; locality costs most to measure, so it is measured from the most-fixing α down until one
is within budget. The repair is the smallest set reaching `target_fixed` within the budget.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from suture.methods.heads.hparams import SteerStrength
from suture.methods.localize.last_token import last_token_head_means
from suture.repair.context import SearchContext
from suture.repair.trials import plan_applied
from suture.repair.types import RepairPoint, RepairResult, SteerPlan, head_key


class SteerStrategy(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    kind: Literal["steer"] = "steer"
    alphas: list[SteerStrength] = Field(default_factory=lambda: [0.5, 1.0, 2.0], min_length=1,
                                    description="steering strengths α tried at each set size")

    def search(self, ctx: SearchContext) -> RepairResult:
        ranked = ctx.ranked("signed", positive_only=True)
        layers = sorted({layer for layer, _ in ranked})
        desired = last_token_head_means(ctx.editor.handle, ctx.twins, layers, ctx.batch_size)
        undesired = last_token_head_means(ctx.editor.handle, ctx.failing, layers, ctx.batch_size)
        directions = {head_key(layer, head): (desired[layer][head] - undesired[layer][head]).tolist()
                      for layer, head in ranked}

        def plan_of(size: int, alpha: float) -> SteerPlan:
            return SteerPlan(heads=ranked[:size], alpha=alpha, directions=directions)

        trials, curve, chosen, chosen_point, stop_at = [], [], None, None, len(ranked)
        for size in range(1, len(ranked) + 1):
            if size > stop_at:
                break
            fixed_by = {}
            for alpha in self.alphas:
                with plan_applied(ctx.editor, plan_of(size, alpha)):
                    fixed_by[alpha] = ctx.fixed()
            best = None
            for alpha in sorted(self.alphas, key=lambda a: -fixed_by[a]):
                with plan_applied(ctx.editor, plan_of(size, alpha)):
                    unchanged, kl = ctx.locality.measure()
                point = RepairPoint(n_heads=size, alpha=alpha, fixed=fixed_by[alpha], unchanged=unchanged, mean_kl=kl)
                trials.append(point)
                if best is None or _better(point, best, ctx.min_unchanged):
                    best = point
                if unchanged >= ctx.min_unchanged:
                    break
            curve.append(best)
            ctx.progress(f"{size:3d} head(s): best alpha {best.alpha:g}: fixed {best.fixed:.3f}, "
                         f"locality unchanged {best.unchanged:.3f}, KL {best.mean_kl:.4f}")
            if chosen is None and best.fixed >= ctx.target_fixed and best.unchanged >= ctx.min_unchanged:
                chosen, chosen_point = plan_of(size, best.alpha), best
                stop_at = size + ctx.extra_sizes  # a few sizes past the threshold, to show the curve around it
        return RepairResult(curve=curve, trials=trials, chosen=chosen, chosen_point=chosen_point,
                            reached_target=chosen is not None)


def _better(a: RepairPoint, b: RepairPoint, min_unchanged: float) -> bool:
    """Prefer strengths within the locality budget, then more fixed, then less drift."""
    a_ok, b_ok = a.unchanged >= min_unchanged, b.unchanged >= min_unchanged
    if a_ok != b_ok:
        return a_ok
    if a.fixed != b.fixed:
        return a.fixed > b.fixed
    return a.mean_kl < b.mean_kl
