"""Batched last-token reads on the current model: top-1 tokens, log-probabilities, and every layer's head
outputs at the attention output projection's input."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from suture.editor.handle import ModelHandle
from suture.editor.kv.capture import capture_input, hooks
from suture.editor.progress import check_cancelled
from suture.methods.heads.projection import HeadProjection


def _batches(handle: ModelHandle, prompts: list[str], batch_size: int):
    tok = handle.tokenizer
    for start in range(0, len(prompts), batch_size):
        check_cancelled()
        enc = tok(prompts[start:start + batch_size], return_tensors="pt", padding=True, padding_side="left")
        # Positions counted from each prompt's first real token: models with absolute positions (GPT-2)
        # would otherwise read a left-padded prompt at shifted positions.
        positions = (enc["attention_mask"].cumsum(1) - 1).clamp_min(0)
        yield {**enc.to(handle.device), "position_ids": positions.to(handle.device)}


@torch.no_grad()
def last_token_logprobs(handle: ModelHandle, prompts: list[str], batch_size: int = 32) -> torch.Tensor:
    """[n, vocab] log-probabilities of the next token after each prompt (left padding: last column)."""
    out = []
    for enc in _batches(handle, prompts, batch_size):
        logits = handle.model(**enc, logits_to_keep=1).logits[:, -1].float()
        out.append(F.log_softmax(logits, dim=-1).cpu())
    return torch.cat(out)


@torch.no_grad()
def last_token_head_means(handle: ModelHandle, prompts: list[str], layers: list[int],
                          batch_size: int = 32) -> dict[int, torch.Tensor]:
    """{layer: [n_heads, head_dim]} mean over prompts of each query head's output at the last token (float64)."""
    projs = {layer: HeadProjection.of(handle, layer) for layer in layers}
    sums = {layer: None for layer in layers}
    for enc in _batches(handle, prompts, batch_size):
        sinks = {layer: [] for layer in layers}
        with hooks(*(capture_input(projs[layer].module, sinks[layer]) for layer in layers)):
            handle.model(**enc, logits_to_keep=1)
        for layer in layers:
            layout = projs[layer].layout
            heads = sinks[layer][0][:, -1].reshape(-1, layout.n_heads, layout.head_dim).double().sum(0)
            sums[layer] = heads if sums[layer] is None else sums[layer] + heads
    return {layer: (total / len(prompts)).cpu() for layer, total in sums.items()}
