"""Scaling: multiply chosen heads' outputs by a factor each (0 ablates), grown greedily.

Candidates are heads in order of |patching effect| (either sign, at most three per slot of `max_heads`).
Each is tried at every factor on top of the heads kept so far, and kept at its best factor only if that
fixes more failures within the locality budget. Scaling acts only where a head is active, so it is kinder
to unrelated prompts than a bias added at every position.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from suture.methods.heads.hparams import HeadFactor
from suture.repair.context import SearchContext
from suture.repair.trials import plan_applied
from suture.repair.types import RepairPoint, RepairResult, ScalePlan, head_key


class ScaleStrategy(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    kind: Literal["scale"] = "scale"
    factors: list[HeadFactor] = Field(default_factory=lambda: [0.0, 0.5, 1.5, 2.0], min_length=1,
                                 description="output factors tried for each candidate head")

    def search(self, ctx: SearchContext) -> RepairResult:
        kept: list[tuple[int, int]] = []
        kept_factors: dict[str, float] = {}
        current_fixed = ctx.fixed()
        trials, curve, chosen, chosen_point, stop_at = [], [], None, None, ctx.max_heads
        for layer, head in ctx.ranked("abs", limit=3 * ctx.max_heads):
            if len(kept) >= stop_at:
                break
            name = head_key(layer, head)

            def plan_with(factor: float, layer=layer, head=head, name=name) -> ScalePlan:
                return ScalePlan(heads=[*kept, (layer, head)], factors={**kept_factors, name: factor})

            fixed_by = {}
            for factor in self.factors:
                with plan_applied(ctx.editor, plan_with(factor)):
                    fixed_by[factor] = ctx.fixed()
            best = None
            for factor in sorted(self.factors, key=lambda f: -fixed_by[f]):
                if fixed_by[factor] <= current_fixed:
                    break  # no factor of this head fixes anything more
                with plan_applied(ctx.editor, plan_with(factor)):
                    unchanged, kl = ctx.locality.measure()
                point = RepairPoint(n_heads=len(kept) + 1, factor=factor, fixed=fixed_by[factor], unchanged=unchanged,
                                    mean_kl=kl)
                trials.append(point)
                if unchanged >= ctx.min_unchanged:
                    best = point
                    break
            if best is None:
                continue
            kept.append((layer, head))
            kept_factors[name] = best.factor
            current_fixed = best.fixed
            curve.append(best)
            ctx.progress(f"{len(kept):3d} head(s): +L{layer}H{head} x{best.factor:g}: fixed {best.fixed:.3f}, "
                         f"locality unchanged {best.unchanged:.3f}, KL {best.mean_kl:.4f}")
            if chosen is None and best.fixed >= ctx.target_fixed:
                chosen, chosen_point = ScalePlan(heads=list(kept), factors=dict(kept_factors)), best
                stop_at = len(kept) + ctx.extra_sizes
        if chosen is None and kept:  # the target was not reached: the best repair found within the budget
            chosen_point = curve[-1]
            chosen = ScalePlan(heads=list(kept), factors=dict(kept_factors))
        return RepairResult(curve=curve, trials=trials, chosen=chosen, chosen_point=chosen_point,
                            reached_target=chosen_point is not None and chosen_point.fixed >= ctx.target_fixed)
