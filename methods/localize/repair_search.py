"""Minimal-repair search: the fewest attention heads, and a steering strength, that repair a failure family.

Given failing prompts with their expected answers and working twins (the same question in a format the
model gets right):

1. rank every query head by last-token activation patching from the twins into the failing prompts
   (effect on logit(right) - logit(wrong), `attribute_heads`);
2. steering directions d_h = mean head output on the twins - mean on the failing prompts, per head;
3. grow the set in rank order (heads whose patching helps, largest effect first); at each size try every
   strength α, steering the chosen heads by α·d_h (`head-steer` edits, one per layer, exact biases of the
   output projections), and record the fraction of failing prompts fixed (top-1 = expected answer) and
   the locality cost on unrelated prompts (top-1 unchanged, mean KL of the next-token distribution to the
   unrepaired model);
4. the repair is the smallest set reaching `target_fixed` with locality at least `min_unchanged`; the
   search goes `extra_sizes` past it so the curve shows the threshold.

With kind "remap" each chosen head gets a least-squares map of its output (head-remap) fit to send its
outputs on the failing prompts to those on the twins while keeping ordinary text; the search over set size
and preservation is in remap_search.py.

With kind "scale" the heads' outputs are multiplied instead (0 ablates), and the growth is greedy per head:
candidates in order of |effect|, each tried at every factor on top of the heads kept so far and kept, at
its best factor, only if it fixes more failures within the locality budget. Scaling acts only where a
head is active, so it is kinder to unrelated prompts than a bias added at every position.

Everything is measured on the prompts given here; judge a repair on held-out prompts (benchmarks/head_repair.py).
"""

from __future__ import annotations

from collections import defaultdict
from contextlib import contextmanager
from typing import Literal

import torch
from pydantic import BaseModel, Field

from suture.editor import Editor
from suture.editor.kv import CorpusSpec
from suture.methods.localize.head_attribution import HeadAttribution, attribute_heads
from suture.methods.localize.last_token import last_token_head_means, last_token_logprobs


class RepairPoint(BaseModel):
    n_heads: int
    alpha: float
    fixed: float  # fraction of failing prompts whose top-1 is now the expected answer
    unchanged: float  # fraction of locality prompts whose top-1 did not change
    mean_kl: float  # mean KL(unrepaired || repaired) of the next-token distribution on locality prompts


class RepairPlan(BaseModel):
    heads: list[tuple[int, int]] = Field(description="(layer, head), in the order they were added")
    kind: Literal["steer", "scale", "remap"] = "steer"
    alpha: float = Field(1.0, description="steer: the strength α (scale: unused, see factors)")
    directions: dict[str, list[float]] = Field(default_factory=dict, description="steer: 'layer.head' -> d_h")
    factors: dict[str, float] = Field(default_factory=dict, description="scale: 'layer.head' -> output factor")
    preservation: float = Field(1.0, gt=0, description="remap: ρ, the weight of keeping ordinary text")
    undesired: list[str] = Field(default_factory=list, description="remap: the failing prompts the map is fit on")
    desired: list[str] = Field(default_factory=list, description="remap: their working twins, in the same order")
    corpus: CorpusSpec | None = Field(None, description="remap: ordinary text to keep (None: head-remap's default)")
    keep: list[str] = Field(default_factory=list, description="remap: prompts whose head outputs must not change")

    def edits(self) -> list[tuple[str, dict]]:
        """(method, hyperparameters) of the edits: head-steer or head-remap, one per layer in depth order (a
        remap is fit on what the layers below produce once edited), or head-scale, one per (layer, factor)."""
        if self.kind == "scale":
            groups: dict[tuple[int, float], list[int]] = defaultdict(list)
            for layer, head in self.heads:
                groups[(layer, self.factors[f"{layer}.{head}"])].append(head)
            return [("head-scale", {"layer": layer, "heads": heads, "factor": factor})
                    for (layer, factor), heads in sorted(groups.items())]
        by_layer: dict[int, list[int]] = defaultdict(list)
        for layer, head in self.heads:
            by_layer[layer].append(head)
        if self.kind == "remap":
            corpus = {} if self.corpus is None else {"corpus": self.corpus.model_dump()}
            return [("head-remap", {"layer": layer, "heads": heads, "preservation": self.preservation,
                                    "undesired": self.undesired, "desired": self.desired, "keep": self.keep,
                                    **corpus})
                    for layer, heads in sorted(by_layer.items())]
        return [("head-steer", {"layer": layer, "heads": heads, "alpha": self.alpha,
                                "directions": [self.directions[f"{layer}.{h}"] for h in heads]})
                for layer, heads in sorted(by_layer.items())]


class RepairSearch(BaseModel):
    curve: list[RepairPoint]  # the best strength at each set size
    trials: list[RepairPoint]  # every (size, strength) whose locality was measured
    chosen: RepairPlan | None
    chosen_point: RepairPoint | None
    reached_target: bool = False


def answer_tokens(editor: Editor, answers: list[str]) -> torch.Tensor:
    from suture.editor.kv.tokens import encode_target

    return torch.tensor([encode_target(editor.tokenizer, a)[0] for a in answers])


def apply_plan(editor: Editor, plan: RepairPlan) -> int:
    """Apply the plan's edits; returns how many ledger entries it added (for revert)."""
    edits = plan.edits()
    for method, hparams in edits:
        editor.apply(method=method, **hparams)
    return len(edits)


class LocalityProbe:
    """Next-token distributions of the unrepaired model on unrelated prompts, to compare repairs against."""

    def __init__(self, editor: Editor, prompts: list[str], batch_size: int):
        self.editor, self.prompts, self.batch_size = editor, prompts, batch_size
        self.base = last_token_logprobs(editor.handle, prompts, batch_size)

    def measure(self) -> tuple[float, float]:
        now = last_token_logprobs(self.editor.handle, self.prompts, self.batch_size)
        unchanged = float((now.argmax(-1) == self.base.argmax(-1)).double().mean())
        kl = (self.base.exp() * (self.base - now)).sum(-1).mean()
        return unchanged, float(kl)


def fixed_fraction(editor: Editor, prompts: list[str], right: torch.Tensor, batch_size: int = 32) -> float:
    top = last_token_logprobs(editor.handle, prompts, batch_size).argmax(-1)
    return float((top == right).double().mean())


def rank_heads(editor: Editor, failing: list[str], answers: list[str], twins: list[str],
               wrong: list[str] | None = None, batch_size: int = 32) -> HeadAttribution:
    """Head attribution from the twins into the failing prompts on logit(answer) - logit(wrong); `wrong`
    defaults to each failing prompt's current top-1 token."""
    wrong_ids = (last_token_logprobs(editor.handle, failing, batch_size).argmax(-1) if wrong is None
                 else answer_tokens(editor, wrong)).tolist()
    return attribute_heads(editor.handle, failing, twins, right=answer_tokens(editor, answers).tolist(),
                           wrong=wrong_ids)


def search_repair(editor: Editor, failing: list[str], answers: list[str], twins: list[str],
                  locality: list[str], max_heads: int, alphas: list[float], target_fixed: float = 0.9,
                  min_unchanged: float = 0.95, wrong: list[str] | None = None, batch_size: int = 32,
                  attribution: HeadAttribution | None = None, extra_sizes: int = 2,
                  kind: Literal["steer", "scale", "remap"] = "steer", progress=print,
                  corpus: CorpusSpec | None = None, keep: list[str] | None = None, sizes: list[int] | None = None,
                  ) -> tuple[RepairSearch, HeadAttribution]:
    """Search as described in the module docstring; `wrong` defaults to each failing prompt's current top-1.
    kind "scale": `alphas` are the factors tried per head (greedy growth, see the module docstring).
    kind "remap": `alphas` are the preservation weights ρ tried (methods/localize/remap_search.py); `keep` are
    prompts whose head outputs the remap keeps (give other prompts than `locality`, which judges the search);
    `sizes` the set sizes tried (default remap_search.SIZES)."""
    handle = editor.handle
    right = answer_tokens(editor, answers)
    if attribution is None:
        attribution = rank_heads(editor, failing, answers, twins, wrong, batch_size)
    if kind == "remap":
        from suture.methods.localize.remap_search import search_remap

        ranked = [(layer, head) for layer, head, _ in attribution.ranking("abs")][:max_heads]
        local = LocalityProbe(editor, locality, batch_size)
        return search_remap(editor, failing, twins, right, ranked, local, max_heads, alphas, target_fixed,
                            min_unchanged, extra_sizes, batch_size, progress, corpus, keep, sizes), attribution
    if kind == "scale":  # candidates: every head whose patching matters, either sign; at most 3 per slot
        ranked = [(layer, head) for layer, head, _ in attribution.ranking("abs")][:3 * max_heads]
    else:
        ranked = [(layer, head) for layer, head, effect in attribution.ranking("signed") if effect > 0][:max_heads]
    directions: dict[str, list[float]] = {}
    if kind == "steer":
        layers = sorted({layer for layer, _ in ranked})
        desired = last_token_head_means(handle, twins, layers, batch_size)
        undesired = last_token_head_means(handle, failing, layers, batch_size)
        directions = {f"{layer}.{head}": (desired[layer][head] - undesired[layer][head]).tolist()
                      for layer, head in ranked}
    local = LocalityProbe(editor, locality, batch_size)

    if kind == "scale":
        return _greedy_scale(editor, failing, right, ranked, local, max_heads, alphas, target_fixed,
                             min_unchanged, extra_sizes, batch_size, progress), attribution
    trials, curve, chosen, chosen_point, stop_at = [], [], None, None, len(ranked)
    for size in range(1, len(ranked) + 1):
        if size > stop_at:
            break
        best = None
        fixed_by_alpha = {}
        for alpha in alphas:
            plan = RepairPlan(heads=ranked[:size], kind=kind, alpha=alpha, directions=directions)
            with plan_applied(editor, plan):
                fixed_by_alpha[alpha] = fixed_fraction(editor, failing, right, batch_size)
        # Locality costs most: measure it from the most-fixing strength down, until one is within budget.
        for alpha in sorted(alphas, key=lambda a: -fixed_by_alpha[a]):
            plan = RepairPlan(heads=ranked[:size], kind=kind, alpha=alpha, directions=directions)
            with plan_applied(editor, plan):
                unchanged, kl = local.measure()
            point = RepairPoint(n_heads=size, alpha=alpha, fixed=fixed_by_alpha[alpha], unchanged=unchanged,
                                mean_kl=kl)
            trials.append(point)
            if best is None or _better(point, best, min_unchanged):
                best = point
            if unchanged >= min_unchanged:
                break
        curve.append(best)
        progress(f"{size:3d} head(s): best alpha {best.alpha:g}: fixed {best.fixed:.3f}, "
                 f"locality unchanged {best.unchanged:.3f}, KL {best.mean_kl:.4f}")
        if chosen is None and best.fixed >= target_fixed and best.unchanged >= min_unchanged:
            chosen = RepairPlan(heads=ranked[:size], kind=kind, alpha=best.alpha, directions=directions)
            chosen_point = best
            stop_at = size + extra_sizes  # a few sizes past the threshold, to show the curve around it
    return RepairSearch(curve=curve, trials=trials, chosen=chosen, chosen_point=chosen_point,
                        reached_target=chosen is not None), attribution


def _greedy_scale(editor: Editor, failing: list[str], right: torch.Tensor, candidates: list[tuple[int, int]],
                  local: LocalityProbe, max_heads: int, factors: list[float], target_fixed: float, min_unchanged: float,
                  extra_sizes: int, batch_size: int, progress) -> RepairSearch:
    """Greedy growth with a factor per head: candidates in rank order; each is tried at every factor with the
    heads kept so far, and kept (at its best factor) only if that fixes more within the locality budget."""
    kept: list[tuple[int, int]] = []
    chosen_factors: dict[str, float] = {}
    current = RepairPoint(n_heads=0, alpha=1.0, fixed=fixed_fraction(editor, failing, right, batch_size),
                          unchanged=1.0, mean_kl=0.0)
    trials, curve, chosen, chosen_point, stop_at = [], [], None, None, max_heads
    for layer, head in candidates:
        if len(kept) >= stop_at:
            break
        name = f"{layer}.{head}"

        def plan_with(factor: float, layer=layer, head=head, name=name) -> RepairPlan:
            return RepairPlan(heads=[*kept, (layer, head)], kind="scale", factors={**chosen_factors, name: factor})

        fixed_by = {}
        for factor in factors:
            with plan_applied(editor, plan_with(factor)):
                fixed_by[factor] = fixed_fraction(editor, failing, right, batch_size)
        best = None
        for factor in sorted(factors, key=lambda f: -fixed_by[f]):
            if fixed_by[factor] <= current.fixed:
                break  # no factor of this head fixes anything more
            with plan_applied(editor, plan_with(factor)):
                unchanged, kl = local.measure()
            point = RepairPoint(n_heads=len(kept) + 1, alpha=factor, fixed=fixed_by[factor], unchanged=unchanged,
                                mean_kl=kl)
            trials.append(point)
            if unchanged >= min_unchanged:
                best = point
                break
        if best is None:
            continue
        kept.append((layer, head))
        chosen_factors[name] = best.alpha
        current = best
        curve.append(best)
        progress(f"{len(kept):3d} head(s): +L{layer}H{head} x{best.alpha:g}: fixed {best.fixed:.3f}, "
                 f"locality unchanged {best.unchanged:.3f}, KL {best.mean_kl:.4f}")
        if chosen is None and best.fixed >= target_fixed:
            chosen = RepairPlan(heads=list(kept), kind="scale", factors=dict(chosen_factors))
            chosen_point = best
            stop_at = len(kept) + extra_sizes
    if chosen is None and kept:  # the target was not reached: the best repair found within the budget
        chosen_point = curve[-1]
        chosen = RepairPlan(heads=list(kept), kind="scale", factors=dict(chosen_factors))
    return RepairSearch(curve=curve, trials=trials, chosen=chosen, chosen_point=chosen_point,
                        reached_target=chosen_point is not None and chosen_point.fixed >= target_fixed)


@contextmanager
def plan_applied(editor: Editor, plan: RepairPlan):
    """The plan applied for the duration of the block, reverted exactly afterwards (a search trial)."""
    added = apply_plan(editor, plan)
    try:
        yield
    finally:
        editor.revert(added)


def _better(a: RepairPoint, b: RepairPoint, min_unchanged: float) -> bool:
    """Prefer strengths within the locality budget, then more fixed, then less drift."""
    a_ok, b_ok = a.unchanged >= min_unchanged, b.unchanged >= min_unchanged
    if a_ok != b_ok:
        return a_ok
    if a.fixed != b.fixed:
        return a.fixed > b.fixed
    return a.mean_kl < b.mean_kl
