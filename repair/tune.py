"""Tuning: maps of the chosen heads' outputs fit jointly by gradient on the expected answers (head-tune),
keeping the unedited model's next-token distribution on the failing prompts' twins and the `keep` prompts,
and the heads' outputs on ordinary text.

The set grows in candidate order (grow.py); at each size preservation ρ is lowered while locality stays
within budget. Each trial is a fit (`steps` Adam steps of one token per prompt), so a trial costs more than
a remap's; the fixed and locality figures are measured on the edited weights, like every strategy's.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from suture.editor.kv import CorpusSpec
from suture.methods.heads.hparams import HeadTuneHParams, TuneKLWeight, TunePreservation, TuneRate
from suture.repair.context import SearchContext
from suture.repair.grow import Candidates, candidate_heads, grow, lowest_preservation, read_statistics, size_schedule
from suture.repair.types import RepairPoint, RepairResult, TunePlan


class TuneStrategy(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    kind: Literal["tune"] = "tune"
    preservations: list[TunePreservation] = Field(
        default_factory=lambda: [10.0, 3.0, 1.0], min_length=1,
        description="preservation weights ρ tried at each set size")
    sizes: list[Annotated[int, Field(ge=1)]] | None = Field(
        None, description="set sizes tried (default: SIZES up to max_heads)")
    candidates: Candidates = Field("helping", description="candidate heads, as for remap")
    kl_weight: TuneKLWeight = Field(10.0, description="weight of KL(unedited || edited) on the kept prompts")
    steps: int = Field(40, ge=1, le=1000, description="Adam steps of each fit")
    lr: TuneRate = Field(0.005, description="Adam learning rate")
    keep: list[str] = Field(default_factory=list,
                            description="prompts whose next-token distribution the fit keeps, besides the twins "
                                        "(not the locality prompts, which judge the search)")
    corpus: CorpusSpec | None = Field(None, description="ordinary text to keep (None: head-tune's default)")

    def search(self, ctx: SearchContext) -> RepairResult:
        ranked = candidate_heads(ctx, self.candidates)
        sizes = size_schedule(ctx, self.sizes, ranked)
        read_statistics(ctx, ranked[:max(sizes, default=0)],
                        self.corpus or HeadTuneHParams.model_fields["corpus"].get_default(call_default_factory=True))

        def plan_of(size: int, rho: float) -> TunePlan:
            return TunePlan(heads=ranked[:size], preservation=rho, kl_weight=self.kl_weight, steps=self.steps,
                            lr=self.lr, failing=ctx.failing, answers=ctx.answers, keep=[*ctx.twins, *self.keep],
                            corpus=self.corpus)

        def best_at(size: int, trials: list[RepairPoint]) -> RepairPoint | None:
            return lowest_preservation(ctx, lambda rho: plan_of(size, rho), self.preservations, trials,
                                       n_heads=size)

        return grow(ctx, sizes, best_at, lambda p: plan_of(p.n_heads, p.preservation))
