"""The least write that still takes: an edit's update scaled down to a little more than the smallest
multiple at which every target is still the greedy answer on its rewrite prompt (lifelong editing).

An edit's drift on unrelated text goes with the square of its size (BENCHMARKS.md, "How much of an edit the
neighbors can bear": locality and KL fall smoothly as W₀ + s·ΔW shrinks, with no threshold), while the value
optimization stops only once the target leads in every context template, and the layers' closed-form solves
then overshoot what the rewrite prompt needs (ROME's edits of records 600-619 still take 18 of 20 at s=0.75).
Over a thousand sequential edits the drift adds up edit by edit, so each edit written at s < 1 is s² of its
drift. The headroom keeps a margin above the bare pass for paraphrases and for later edits' interference.
"""

from __future__ import annotations

from collections.abc import Callable

from pydantic import BaseModel, ConfigDict, Field

from suture.editor.deltas import WeightBook, WeightDelta


class LeastWrite(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    step: float = Field(0.05, gt=0, le=0.5, description="how much the scale falls between two checks")
    floor: float = Field(0.3, gt=0, le=1, description="the smallest scale checked")
    headroom: float = Field(0.25, ge=0, le=4, description="the scale written is the least passing one times "
                            "1 + headroom, at most 1")
    # The bare rewrite prompt alone lets an edit shrink to where its paraphrases no longer take (a sequential
    # run lost 0.034 paraphrase at 250 edits); the value was fit in every context template, so a smaller
    # scale must keep the target in each context where the full edit has it.
    contexts: bool = Field(False, description="also check the rewrite prompt inside each context template of the "
                           "value optimization: a scale passes only if every context where the full edit makes "
                           "the target the greedy answer still does")


def least_written_scale(book: WeightBook, deltas: list[WeightDelta], written: Callable[[], bool],
                        spec: LeastWrite, written_at_one: bool | None = None) -> float:
    """The scale s ∈ [floor, 1] the edit is written at. `deltas` are applied in `book` at scale 1 on entry
    and at the returned scale on exit; `written()` says whether every target is still the greedy answer
    on the weights as they are. The scale falls in steps of `step` while `written()` holds (each check one
    teacher-forced pass); the last passing scale, times 1 + headroom and at most 1, is returned. An edit not
    written at scale 1 stays at 1. `written_at_one`: the caller's own check of the weights as they are on
    entry (None: check here)."""
    if not (written() if written_at_one is None else written_at_one):
        return 1.0
    current, passing = 1.0, 1.0
    scale = 1.0 - spec.step
    while scale >= spec.floor - 1e-9:
        book.apply([d.scaled(scale - current) for d in deltas])
        current = scale
        if not written():
            break
        passing = scale
        scale -= spec.step
    final = min(1.0, passing * (1.0 + spec.headroom))
    book.apply([d.scaled(final - current) for d in deltas])
    return final
