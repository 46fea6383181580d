"""Activation patching of single attention heads: which query heads carry the difference between two prompts?

For each layer and each query head h, head h's output in the base run is replaced by its output in the paired
source run, read where it enters the attention output projection (input shaped [batch, pos, n_heads,
head_dim] — query heads, so grouped-query attention needs nothing special; GPT-2's Conv1D takes the same
input). The metric is the logit difference right - wrong (first tokens of " " + answer) at each base prompt's
last position, averaged over prompts; a head's effect is patched metric - base metric.

Patching happens at the last token only: base and source prompts need not tokenize to the same length, and
positions never have to be aligned. Only what a head writes at the last position is swapped; its effect
through earlier positions is not measured (all-position patching needs equal-length pairs).

Each layer costs one batched forward (chunked by `max_rows`) with one block of rows per head.
"""

from __future__ import annotations

import torch
from pydantic import BaseModel

from editor.handle import ModelHandle
from editor.kv.capture import capture_input, hooks, run_until_stopped
from editor.kv.readout import final_hidden, logits_at
from editor.kv.tokens import encode_target
from methods.heads.projection import HeadProjection


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
            raise ValueError("by must be 'abs' or 'signed'")
        rows = [(layer, head, effect) for layer, row in zip(self.layers, self.effects)
                for head, effect in enumerate(row)]
        return sorted(rows, key=lambda r: -abs(r[2]) if by == "abs" else -r[2])


def _answers(tok, answers: str | list[str | int], n: int, name: str) -> list[int]:
    """First token of each answer; an int is taken as a token id (for answers such as a newline, which no
    string after a space encodes)."""
    answers = [answers] * n if isinstance(answers, str) else list(answers)
    if len(answers) != n:
        raise ValueError(f"{name}: {len(answers)} answers for {n} prompts")
    return [a if isinstance(a, int) else encode_target(tok, a)[0] for a in answers]


def _encode(handle: ModelHandle, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Padded ids, mask, and each row's last real token (whichever side the padding is on)."""
    enc = handle.tokenizer(prompts, return_tensors="pt", padding=True).to(handle.device)
    mask = enc["attention_mask"]
    if (mask.sum(1) == 0).any():
        raise ValueError("a prompt tokenizes to nothing")
    last = mask.shape[1] - 1 - mask.flip(1).int().argmax(1)
    return enc["input_ids"], mask, last


def _metric(handle: ModelHandle, ids, mask, last, right: torch.Tensor, wrong: torch.Tensor) -> torch.Tensor:
    """logit(right) - logit(wrong) at `last`, per row."""
    rows = torch.arange(ids.shape[0], device=ids.device)
    logits = logits_at(handle, final_hidden(handle, ids, mask), rows, last)
    return (logits[rows, right] - logits[rows, wrong]).double()


@torch.no_grad()
def attribute_heads(handle: ModelHandle, base_prompts: list[str], source_prompts: list[str],
                    right: str | list[str | int], wrong: str | list[str | int], layers: list[int] | None = None,
                    max_rows: int = 256) -> HeadAttribution:
    """Effect of patching each query head's last-token output from source into base (pairs by index) on
    logit(right) - logit(wrong) at the base prompts' last token. right/wrong: one answer or one per prompt
    (strings, or token ids)."""
    if len(base_prompts) != len(source_prompts) or not base_prompts:
        raise ValueError("base_prompts and source_prompts must be non-empty and paired (same count)")
    tok, device, n = handle.tokenizer, handle.device, len(base_prompts)
    layers = list(range(handle.n_layers)) if layers is None else [int(x) for x in layers]
    projs = {layer: HeadProjection.of(handle, layer) for layer in layers}
    layout = next(iter(projs.values())).layout
    n_heads, head_dim = layout.n_heads, layout.head_dim
    right_ids = torch.tensor(_answers(tok, right, n, "right"), device=device)
    wrong_ids = torch.tensor(_answers(tok, wrong, n, "wrong"), device=device)

    base_ids, base_mask, base_last = _encode(handle, base_prompts)
    src_ids, src_mask, src_last = _encode(handle, source_prompts)
    base_metric = float(_metric(handle, base_ids, base_mask, base_last, right_ids, wrong_ids).mean())
    source_metric = float(_metric(handle, src_ids, src_mask, src_last, right_ids, wrong_ids).mean())

    # Source head outputs at the last token, every layer, from one pass stopped after the deepest layer.
    sinks = {layer: [] for layer in layers}
    deepest = max(layers)
    with hooks(*(capture_input(projs[layer].module, sinks[layer], stop=layer == deepest) for layer in layers)):
        run_until_stopped(handle.model, input_ids=src_ids, attention_mask=src_mask)
    rows_n = torch.arange(n, device=device)
    source = {layer: sinks[layer][0].reshape(n, -1, n_heads, head_dim)[rows_n, src_last] for layer in layers}

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
                heads[rows, base_last[prompt], head] = values[prompt, head].to(heads.dtype)
                return (heads.reshape(x.shape), *args[1:])

            with hooks(projs[layer].module.register_forward_pre_hook(patch)):
                metric[lo:lo + max_rows] = _metric(handle, base_ids[prompt], base_mask[prompt], base_last[prompt],
                                                   right_ids[prompt], wrong_ids[prompt])
        effects.append((metric.view(n_heads, n).mean(1) - base_metric).tolist())

    return HeadAttribution(layers=layers, n_heads=n_heads, right_tokens=right_ids.tolist(),
                           wrong_tokens=wrong_ids.tolist(), base_metric=base_metric, source_metric=source_metric,
                           effects=effects)
