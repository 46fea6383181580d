"""Remapping: a least-squares map of each chosen head's output (head-remap), fit to send its outputs on the
failing prompts to those on their twins while keeping its outputs on ordinary text.

The set grows in candidate order (grow.py). At each size and each gain g (how far past the twins' outputs
the map sends the failing ones), preservation ρ is lowered while locality stays within budget, and the
(g, ρ) within budget that fixes most is kept.
"""

from __future__ import annotations

from functools import partial
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from suture.editor.kv import CorpusSpec
from suture.methods.heads.hparams import HeadRemapHParams, RemapGain, RemapPreservation
from suture.repair.context import SearchContext
from suture.repair.grow import Candidates, candidate_heads, grow, lowest_preservation, read_statistics, size_schedule
from suture.repair.types import RemapPlan, RepairPoint, RepairResult


class RemapStrategy(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    kind: Literal["remap"] = "remap"
    preservations: list[RemapPreservation] = Field(
        default_factory=lambda: [10.0, 5.0, 3.0, 2.0], min_length=1,
        description="preservation weights ρ tried at each set size")
    gains: list[RemapGain] = Field(
        default_factory=lambda: [1.0], min_length=1,
        description="gains g tried at each set size (1: send the failing outputs to the twins' outputs)")
    sizes: list[Annotated[int, Field(ge=1)]] | None = Field(
        None, description="set sizes tried (default: SIZES up to max_heads)")
    # 'abs' stays the default: on held-out failures 'helping' did not do better (9 heads 0.695 against 0.752,
    # 13 heads 0.752; BENCHMARKS.md, "Head repair").
    candidates: Candidates = Field(
        "abs", description="'abs': every head by |patching effect|; 'helping': only heads whose twin output "
        "raises the answer, strongest first")
    keep: list[str] = Field(default_factory=list,
                            description="prompts whose head outputs the remap keeps (not the locality prompts, "
                                        "which judge the search)")
    corpus: CorpusSpec | None = Field(None, description="ordinary text to keep (None: head-remap's default)")

    def search(self, ctx: SearchContext) -> RepairResult:
        ranked = candidate_heads(ctx, self.candidates)
        sizes = size_schedule(ctx, self.sizes, ranked)
        read_statistics(ctx, ranked[:max(sizes, default=0)],
                        self.corpus or HeadRemapHParams.model_fields["corpus"].get_default(call_default_factory=True))

        def plan_of(size: int, rho: float, gain: float) -> RemapPlan:
            return RemapPlan(heads=ranked[:size], preservation=rho, gain=gain, undesired=ctx.failing,
                             desired=ctx.twins, corpus=self.corpus, keep=self.keep)

        def best_at(size: int, trials: list[RepairPoint]) -> RepairPoint | None:
            best = None
            for gain in sorted(self.gains):
                point = lowest_preservation(ctx, partial(plan_of, size, gain=gain), self.preservations, trials,
                                            n_heads=size, gain=gain)
                if point is not None and (best is None or point.fixed > best.fixed):
                    best = point
            return best

        return grow(ctx, sizes, best_at, lambda p: plan_of(p.n_heads, p.preservation, p.gain))
