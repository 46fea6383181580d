"""Batched scoring of target strings after prompts.

Every (prompt, target) pair becomes one row `prompt + target`; rows are sorted by length and scored in
batches with one forward pass each, reading logits only at the target tokens. One pass gives both the
whole-target log-probability (CounterFact) and the per-token argmax (zsRE token accuracy).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from suture.editor.handle import ModelHandle
from suture.editor.kv.readout import final_hidden, logits_at
from suture.editor.kv.tokens import encode_target
from suture.editor.progress import check_cancelled


@dataclass
class PairScores:
    logprob: torch.Tensor  # [pairs] log P(target | prompt), summed over target tokens
    n_tokens: torch.Tensor  # [pairs]
    predicted: list[list[int]]  # argmax token at each target position (teacher-forced)
    target: list[list[int]]

    def token_accuracy(self) -> torch.Tensor:
        """Share of target tokens that are the argmax prediction, per pair."""
        return torch.tensor([sum(p == t for p, t in zip(pred, gold)) / len(gold)
                             for pred, gold in zip(self.predicted, self.target)])


@torch.no_grad()
def score_pairs(handle: ModelHandle, pairs: list[tuple[str, str]], batch_size: int = 64) -> PairScores:
    tok = handle.tokenizer
    device = handle.device
    encoded = [(tok(prompt)["input_ids"], encode_target(tok, target)) for prompt, target in pairs]
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i][0]) + len(encoded[i][1]))
    logprob = torch.empty(len(encoded))
    predicted: list[list[int]] = [[] for _ in encoded]
    starts = range(0, len(order), batch_size)
    # A bar only when scoring takes a while (CLI `suture eval` on a benchmark file); stderr, transient.
    for start in tqdm(starts, desc="scoring", leave=False, disable=len(starts) < 20):
        check_cancelled()
        chunk = order[start:start + batch_size]
        rows = [encoded[i][0] + encoded[i][1] for i in chunk]
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), tok.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        read_rows, read_cols, read_ids = [], [], []
        for j, (i, row) in enumerate(zip(chunk, rows)):
            ids[j, : len(row)] = torch.tensor(row)
            mask[j, : len(row)] = 1
            prompt_len, target_ids = len(encoded[i][0]), encoded[i][1]
            read_rows += [j] * len(target_ids)
            read_cols += range(prompt_len - 1, prompt_len - 1 + len(target_ids))
            read_ids += target_ids
        normed = final_hidden(handle, ids.to(device), mask.to(device))
        rows_t = torch.tensor(read_rows, device=device)
        logits = logits_at(handle, normed, rows_t, torch.tensor(read_cols, device=device))
        token_lp = F.log_softmax(logits, -1).gather(1, torch.tensor(read_ids, device=device)[:, None]).squeeze(1)
        sums = torch.zeros(len(chunk), device=device).index_add_(0, rows_t, token_lp)
        logprob[torch.tensor(chunk)] = sums.cpu()
        argmax = logits.argmax(-1).tolist()
        for row, token in zip(read_rows, argmax):
            predicted[chunk[row]].append(token)
    return PairScores(logprob=logprob, n_tokens=torch.tensor([len(t) for _, t in encoded]), predicted=predicted,
                      target=[t for _, t in encoded])


def target_logprobs(handle: ModelHandle, pairs: list[tuple[str, str]], batch_size: int = 64,
                    per_token: bool = False) -> torch.Tensor:
    """log P(target | prompt) summed over the target's tokens (or their mean with per_token)."""
    scores = score_pairs(handle, pairs, batch_size)
    return scores.logprob / scores.n_tokens if per_token else scores.logprob
