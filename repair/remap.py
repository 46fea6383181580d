"""Remapping: a least-squares map of each chosen head's output (head-remap), fit to send its outputs on the
failing prompts to those on their twins while keeping its outputs on ordinary text.

Candidates are the heads in order of patching effect: by default only heads whose patch from the twin helps
(a map towards the twin's output makes a head whose twin output hurts the answer worse), or all by |effect|.
For each set size on a schedule (the top-k heads) and each gain g (how far past the twins' outputs the map
sends the failing ones), preservation ρ is lowered from the most conservative value down: a lower ρ fixes
more and moves unrelated prompts more, so the search stops lowering at the first ρ over the locality
budget, and keeps the (g, ρ) within budget that fixes most.
The repair is the smallest size reaching `target_fixed` within budget, else the one fixing most within it.
"""

from __future__ import annotations

from functools import partial
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from suture.editor.kv import CorpusSpec
from suture.methods.heads.hparams import HeadRemapHParams
from suture.repair.context import SearchContext
from suture.repair.trials import plan_applied
from suture.repair.types import RemapPlan, RepairPoint, RepairResult

SIZES = (1, 2, 3, 5, 8, 12, 18, 27, 40, 60)


class RemapStrategy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["remap"] = "remap"
    preservations: list[Annotated[float, Field(gt=0)]] = Field(
        default_factory=lambda: [10.0, 5.0, 3.0, 2.0], min_length=1,
        description="preservation weights ρ tried at each set size")
    gains: list[Annotated[float, Field(gt=0)]] = Field(
        default_factory=lambda: [1.0], min_length=1,
        description="gains g tried at each set size (1: send the failing outputs to the twins' outputs)")
    sizes: list[int] | None = Field(None, description="set sizes tried (default: SIZES up to max_heads)")
    candidates: Literal["helping", "abs"] = Field(
        "helping", description="'helping': heads whose twin output raises the answer, strongest first; 'abs': "
        "every head by |patching effect| (until 2026-11-30)")
    keep: list[str] = Field(default_factory=list,
                            description="prompts whose head outputs the remap keeps (not the locality prompts, "
                                        "which judge the search)")
    corpus: CorpusSpec | None = Field(None, description="ordinary text to keep (None: head-remap's default)")

    def search(self, ctx: SearchContext) -> RepairResult:
        helping = self.candidates == "helping"
        ranked = ctx.ranked("signed", positive_only=True) if helping else ctx.ranked("abs")

        def plan_of(size: int, rho: float, gain: float) -> RemapPlan:
            return RemapPlan(heads=ranked[:size], preservation=rho, gain=gain, undesired=ctx.failing,
                             desired=ctx.twins, corpus=self.corpus, keep=self.keep)

        sizes = sorted({s for s in (self.sizes or SIZES) if s < ctx.max_heads} | {ctx.max_heads})
        sizes = [s for s in sizes if s <= len(ranked)]
        # Every trial's remap reads its layers' head-output statistics: one corpus pass for all candidate
        # layers now, instead of one pass per layer as trials first reach it.
        corpus = self.corpus or HeadRemapHParams.model_fields["corpus"].get_default(call_default_factory=True)
        ctx.editor.context.second_moment(sorted({layer for layer, _ in ranked[:max(sizes, default=0)]}), corpus,
                                         site="attn_out")
        trials, curve, chosen, chosen_point, stop_at = [], [], None, None, len(sizes)
        for index, size in enumerate(sizes):
            if index > stop_at:
                break
            best = None
            for gain in sorted(self.gains):
                point = self._lowest_preservation(ctx, partial(plan_of, size, gain=gain), size, gain, trials)
                if point is not None and (best is None or point.fixed > best.fixed):
                    best = point
            if best is None:
                ctx.progress(f"{size:3d} head(s): no preservation tried keeps locality >= {ctx.min_unchanged}")
                continue
            curve.append(best)
            ctx.progress(f"{size:3d} head(s): preservation {best.preservation:g}, gain {best.gain:g}: fixed "
                         f"{best.fixed:.3f}, locality unchanged {best.unchanged:.3f}, KL {best.mean_kl:.4f}")
            if chosen is None and best.fixed >= ctx.target_fixed:
                chosen, chosen_point = plan_of(size, best.preservation, best.gain), best
                stop_at = index + ctx.extra_sizes
        if chosen is None and curve:  # the target was not reached: the repair fixing most within the budget
            chosen_point = max(curve, key=lambda p: (p.fixed, -p.n_heads))
            chosen = plan_of(chosen_point.n_heads, chosen_point.preservation, chosen_point.gain)
        return RepairResult(curve=curve, trials=trials, chosen=chosen, chosen_point=chosen_point,
                            reached_target=chosen_point is not None and chosen_point.fixed >= ctx.target_fixed)

    def _lowest_preservation(self, ctx: SearchContext, plan_of, size: int, gain: float,
                             trials: list[RepairPoint]) -> RepairPoint | None:
        """ρ lowered from the most preserving value while locality stays within budget: the last point within
        it (None when even the first is over). Every measured point is appended to `trials`."""
        best = None
        for rho in sorted(self.preservations, reverse=True):
            with plan_applied(ctx.editor, plan_of(rho)):
                unchanged, kl = ctx.locality.measure()
                if unchanged < ctx.min_unchanged and best is not None:
                    break  # lower ρ only moves unrelated prompts more
                point = RepairPoint(n_heads=size, preservation=rho, gain=gain, fixed=ctx.fixed(),
                                    unchanged=unchanged, mean_kl=kl)
            trials.append(point)
            if unchanged < ctx.min_unchanged:
                break  # even the most preserving ρ is over budget (recorded as a trial)
            best = point
        return best
