"""Batched log-probabilities of whole target strings after prompts.

Every (prompt, target) pair becomes one row `prompt + target`; rows are sorted by length and scored in
batches with one forward pass each, reading logits only at the target tokens.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from editor.handle import ModelHandle
from editor.kv.readout import final_hidden, logits_at
from editor.kv.tokens import encode_target


@torch.no_grad()
def target_logprobs(handle: ModelHandle, pairs: list[tuple[str, str]], batch_size: int = 64,
                    per_token: bool = False) -> torch.Tensor:
    """log P(target | prompt) summed over the target's tokens (or their mean with per_token)."""
    tok = handle.tokenizer
    encoded = []
    for prompt, target in pairs:
        prompt_ids = tok(prompt)["input_ids"]
        target_ids = encode_target(tok, target)
        encoded.append((prompt_ids, target_ids))
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i][0]) + len(encoded[i][1]))
    scores = torch.empty(len(encoded))
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        rows = [encoded[i][0] + encoded[i][1] for i in chunk]
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), tok.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        read_rows, read_cols, read_ids, owner = [], [], [], []
        for j, (i, row) in enumerate(zip(chunk, rows)):
            ids[j, : len(row)] = torch.tensor(row)
            mask[j, : len(row)] = 1
            prompt_len, target_ids = len(encoded[i][0]), encoded[i][1]
            for t, token in enumerate(target_ids):
                read_rows.append(j)
                read_cols.append(prompt_len - 1 + t)
                read_ids.append(token)
                owner.append(j)
        device = handle.device
        normed = final_hidden(handle, ids.to(device), mask.to(device))
        rows_t = torch.tensor(read_rows, device=device)
        logits = logits_at(handle, normed, rows_t, torch.tensor(read_cols, device=device))
        token_lp = F.log_softmax(logits, -1).gather(1, torch.tensor(read_ids, device=device)[:, None]).squeeze(1)
        owner_t = torch.tensor(owner, device=device)
        sums = torch.zeros(len(chunk), device=device).index_add_(0, owner_t, token_lp)
        if per_token:
            sums /= torch.bincount(owner_t, minlength=len(chunk))
        scores[torch.tensor(chunk)] = sums.cpu()
    return scores
