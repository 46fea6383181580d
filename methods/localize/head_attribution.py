"""Activation patching of single attention heads: which query heads carry the difference between two prompts?

For each layer and each query head h, head h's output in the base run is replaced by its output in the paired
source run, read where it enters the attention output projection (input shaped [batch, pos, n_heads,
head_dim] — query heads, so grouped-query attention needs nothing special; GPT-2's Conv1D takes the same
input). The metric is the logit difference right - wrong (first tokens of " " + answer) at each base prompt's
last position, averaged over prompts; a head's effect is patched metric - base metric.

Patching happens at the last token only: base and source prompts need not tokenize to the same length, and
positions never have to be aligned. Only what a head writes at the last position is swapped; its effect
through earlier positions is not measured (all-position patching needs equal-length pairs).

Each patched row runs only its last token on a KV cache of the base prompt's prefix.
"""

from __future__ import annotations

import copy

import torch
from pydantic import BaseModel

from suture.editor.errors import InvalidInputError
from suture.editor.handle import ModelHandle
from suture.editor.kv.capture import capture_input, hooks
from suture.editor.kv.incremental import cache_of, with_cache
from suture.editor.kv.tokens import answer_token_ids
from suture.editor.requests import InvalidRequestError
from suture.methods.heads.projection import HeadProjection


class HeadAttribution(BaseModel):
    layers: list[int]
    n_heads: int
    right_tokens: list[int]
    wrong_tokens: list[int]
    base_metric: float  # mean logit(right) - logit(wrong) on the base prompts
    source_metric: float  # the same on the source prompts
    effects: list[list[float]]  # [len(layers) x n_heads]: patched metric - base metric

    def matrix(self) -> torch.Tensor:
        return torch.tensor(self.effects, dtype=torch.float64)

    def ranking(self, by: str = "abs") -> list[tuple[int, int, float]]:
        """(layer, head, effect), largest first: by |effect| ("abs") or by signed effect ("signed")."""
        if by not in ("abs", "signed"):
            raise InvalidInputError("by: by must be 'abs' or 'signed'")
        rows = [(layer, head, effect) for layer, row in zip(self.layers, self.effects)
                for head, effect in enumerate(row)]
        return sorted(rows, key=lambda r: -abs(r[2]) if by == "abs" else -r[2])


def _answers(tok, answers: str | list[str | int], prompts: list[str], name: str) -> list[int]:
    """First token of each answer spelled the way its prompt continues; an int is taken as a token id (for
    answers such as a newline, which no string after a space encodes)."""
    answers = [answers] * len(prompts) if isinstance(answers, str) else list(answers)
    if len(answers) != len(prompts):
        raise InvalidInputError(f"{name}: {len(answers)} answers for {len(prompts)} prompts")
    try:
        return [a if isinstance(a, int) else answer_token_ids(tok, [p], [a])[0] for p, a in zip(prompts, answers)]
    except InvalidRequestError as exc:
        raise InvalidInputError(f"{name}: {exc}") from None


def _encode(handle: ModelHandle, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Left-padded ids, mask and position ids: every prompt's last token is the last column."""
    enc = handle.tokenizer(prompts, return_tensors="pt", padding=True, padding_side="left").to(handle.device)
    mask = enc["attention_mask"]
    if (mask.sum(1) == 0).any():
        raise InvalidInputError("prompts: a prompt tokenizes to nothing")
    positions = (mask.cumsum(1) - 1).clamp_min(0)  # as if unpadded (matters for absolute position embeddings)
    return enc["input_ids"], mask, positions


def _metric(handle: ModelHandle, ids, mask, positions, right: torch.Tensor, wrong: torch.Tensor) -> torch.Tensor:
    """logit(right) - logit(wrong) after the last token, per row (a full forward)."""
    logits = handle.model(input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=1).logits[:, -1]
    return (logits.gather(1, right[:, None]) - logits.gather(1, wrong[:, None])).squeeze(1).double()


def _prefix_cache(handle: ModelHandle, ids, mask, positions):
    """Keys and values of every prompt's tokens but the last: a last-token patch cannot change them."""
    out = handle.model(input_ids=ids[:, :-1], attention_mask=mask[:, :-1], position_ids=positions[:, :-1],
                       use_cache=True, logits_to_keep=1)
    return cache_of(out)


def _last_token_metric(handle: ModelHandle, cache, rows, ids, mask, positions, right, wrong) -> torch.Tensor:
    """`_metric` for prompts `rows` (repeats allowed), running only their last token on the cached prefix."""
    rows_cache = copy.deepcopy(cache)
    rows_cache.reorder_cache(rows)
    logits = handle.model(input_ids=ids[rows, -1:], attention_mask=mask[rows], position_ids=positions[rows, -1:],
                          **with_cache(handle.model, rows_cache)).logits[:, -1]
    index = torch.arange(rows.shape[0], device=rows.device)
    return (logits[index, right[rows]] - logits[index, wrong[rows]]).double()


@torch.no_grad()
def attribute_heads(handle: ModelHandle, base_prompts: list[str], source_prompts: list[str],
                    right: str | list[str | int], wrong: str | list[str | int], layers: list[int] | None = None,
                    max_rows: int = 128) -> HeadAttribution:
    """Effect of patching each query head's last-token output from source into base (pairs by index) on
    logit(right) - logit(wrong) at the base prompts' last token. right/wrong: one answer or one per prompt
    (strings, or token ids).

    A last-token patch leaves every earlier position alone, so the base prompts' prefixes run once (a KV
    cache) and each patched row runs its last token only: n_layers x n_heads x n_prompts one-token passes.
    """
    if len(base_prompts) != len(source_prompts) or not base_prompts:
        raise InvalidInputError("base_prompts and source_prompts must be non-empty and paired (same count)")
    tok, device, n = handle.tokenizer, handle.device, len(base_prompts)
    layers = list(range(handle.n_layers)) if layers is None else [int(x) for x in layers]
    projs = {layer: HeadProjection.of(handle, layer) for layer in layers}
    layout = next(iter(projs.values())).layout
    n_heads, head_dim = layout.n_heads, layout.head_dim
    right_ids = torch.tensor(_answers(tok, right, base_prompts, "right"), device=device)
    wrong_ids = torch.tensor(_answers(tok, wrong, base_prompts, "wrong"), device=device)

    base = _encode(handle, base_prompts)
    if base[0].shape[1] < 2:
        raise InvalidInputError("base_prompts: every prompt is a single token; patching needs a prefix before the last")
    src_ids, src_mask, src_pos = _encode(handle, source_prompts)
    base_metric = float(_metric(handle, *base, right_ids, wrong_ids).mean())
    # Source head outputs at the last token, every layer, from the same pass that measures its metric.
    sinks = {layer: [] for layer in layers}
    with hooks(*(capture_input(projs[layer].module, sinks[layer]) for layer in layers)):
        source_metric = float(_metric(handle, src_ids, src_mask, src_pos, right_ids, wrong_ids).mean())
    source = {layer: sinks[layer][0][:, -1].reshape(n, n_heads, head_dim) for layer in layers}
    cache = _prefix_cache(handle, *base)

    # Row r of a layer's batch is prompt r % n with head r // n patched.
    total = n * n_heads
    row_prompt = torch.arange(total, device=device) % n
    row_head = torch.arange(total, device=device) // n
    effects = []
    for layer in layers:
        values = source[layer]  # [n, n_heads, head_dim]
        metric = torch.empty(total, dtype=torch.float64, device=device)
        for lo in range(0, total, max_rows):
            prompt, head = row_prompt[lo:lo + max_rows], row_head[lo:lo + max_rows]
            rows = torch.arange(prompt.shape[0], device=device)

            def patch(_module, args, prompt=prompt, head=head, rows=rows, values=values):
                x = args[0]
                heads = x.reshape(*x.shape[:-1], n_heads, head_dim).clone()
                heads[rows, -1, head] = values[prompt, head].to(heads.dtype)
                return (heads.reshape(x.shape), *args[1:])

            with hooks(projs[layer].module.register_forward_pre_hook(patch)):
                metric[lo:lo + max_rows] = _last_token_metric(handle, cache, prompt, *base, right_ids, wrong_ids)
        effects.append((metric.view(n_heads, n).mean(1) - base_metric).tolist())

    return HeadAttribution(layers=layers, n_heads=n_heads, right_tokens=right_ids.tolist(),
                           wrong_tokens=wrong_ids.tolist(), base_metric=base_metric, source_metric=source_metric,
                           effects=effects)
