"""Head outputs as they enter the attention output projection, read with a forward pre-hook."""

from __future__ import annotations

import torch

from suture.editor import EditFailedError
from suture.editor.handle import ModelHandle
from suture.editor.kv.capture import capture_input, hooks, run_until_stopped
from suture.editor.progress import check_cancelled
from suture.methods.heads.projection import HeadProjection


@torch.no_grad()
def head_outputs(handle: ModelHandle, proj: HeadProjection, prompts: list[str], position: str,
                 batch_size: int = 16) -> torch.Tensor:
    """[rows, n_heads, head_dim] (float64) of the projection's input on the current model: one row per prompt
    at its last token (`position="last"`) or one per non-padding token (`position="all"`)."""
    tok, layout = handle.tokenizer, proj.layout
    rows = []
    for start in range(0, len(prompts), batch_size):
        check_cancelled()
        batch = prompts[start:start + batch_size]
        enc = tok(batch, return_tensors="pt", padding=True).to(handle.device)
        mask = enc["attention_mask"].bool()
        empty = [p for p, n in zip(batch, mask.sum(1).tolist()) if n == 0]
        if empty:
            raise EditFailedError(f"prompt(s) {empty} tokenize to nothing")
        sink: list[torch.Tensor] = []
        with hooks(capture_input(proj.module, sink, stop=True)):
            run_until_stopped(handle.model, **enc)
        heads = sink[0].reshape(*mask.shape, layout.n_heads, layout.head_dim).double()
        if position == "last":  # index of each row's last real token, whichever side the padding is on
            last = mask.shape[1] - 1 - mask.flip(1).int().argmax(1)
            rows.append(heads[torch.arange(len(batch), device=heads.device), last])
        else:
            rows.append(heads[mask])
    return torch.cat(rows)


def mean_head_outputs(handle: ModelHandle, proj: HeadProjection, prompts: list[str], position: str,
                      batch_size: int = 16) -> torch.Tensor:
    """[n_heads, head_dim] mean of `head_outputs` (float64)."""
    return head_outputs(handle, proj, prompts, position, batch_size).mean(0)
