"""Batched scoring of target strings after prompts, each prompt computed once for all of its targets.

Pairs are grouped by prompt. A chunk of distinct prompts (left-padded, so every prompt ends in the same
column) runs once and keeps its keys and values (a KV cache); the final hidden state at a prompt's last
token gives the first token of every target. Targets of more than one token then run only their own
tokens, minus the last, against the cached prompt (its rows repeated per target). CounterFact asks two
targets of every prompt, mostly single tokens, so the prompt pass is nearly all the work, done once
instead of twice (BENCHMARKS.md, "Evaluation"). The vocabulary projection is applied only where a target
token is read. One pass gives both the whole-target log-probability (CounterFact) and the per-token
argmax (zsRE token accuracy).
"""

from __future__ import annotations

import inspect
from contextlib import suppress
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm
from transformers import DynamicCache

from suture.editor.errors import InvalidInputError
from suture.editor.handle import ModelHandle
from suture.editor.kv.capture import StopForward, capture_output, hooks
from suture.editor.kv.readout import logits_at
from suture.editor.kv.tokens import spelled_target_ids
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


def _cache_argument(model: torch.nn.Module) -> str:
    """The forward keyword that takes a KV cache (`cache`; `past_key_values` in earlier transformers 5.x)."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _final_hidden(handle: ModelHandle, **inputs) -> torch.Tensor:
    """Final-norm hidden states of one pass that stops before the vocabulary projection; a cache passed in
    `cache` is filled for every layer on the way."""
    sink: list[torch.Tensor] = []
    norm = handle.model.get_submodule(handle.sites.final_norm)
    with hooks(capture_output(norm, sink, stop=True)), suppress(StopForward):
        handle.model(**inputs)
    return sink[0]


def _read(handle: ModelHandle, normed: torch.Tensor, rows: list[int], cols: list[int], ids: list[int]):
    """(log-probabilities of `ids`, argmax tokens) at the given (row, column) positions of `normed`."""
    device = normed.device
    logits = logits_at(handle, normed, torch.tensor(rows, device=device), torch.tensor(cols, device=device))
    token_lp = F.log_softmax(logits, -1).gather(1, torch.tensor(ids, device=device)[:, None]).squeeze(1)
    return token_lp.cpu(), logits.argmax(-1).tolist()


@torch.no_grad()
def score_pairs(handle: ModelHandle, pairs: list[tuple[str, str]], batch_size: int = 64) -> PairScores:
    """Teacher-forced scores of each (prompt, target) pair; `batch_size` distinct prompts run per pass.

    Raises InvalidInputError for a prompt that encodes to no token (nothing predicts the target's first).
    """
    tok = handle.tokenizer
    device = handle.device
    # Targets spelled the way each prompt continues, as edits train them.
    encoded = [(tok(prompt)["input_ids"], spelled_target_ids(tok, prompt, target)) for prompt, target in pairs]
    by_prompt: dict[tuple[int, ...], list[int]] = {}
    for i, (prompt_ids, _target) in enumerate(encoded):
        if not prompt_ids:
            raise InvalidInputError(f"pairs[{i}]: the prompt {pairs[i][0]!r} encodes to no token")
        by_prompt.setdefault(tuple(prompt_ids), []).append(i)
    prompts = sorted(by_prompt, key=len)
    token_lp: list[list[float]] = [[0.0] * len(t) for _, t in encoded]
    predicted: list[list[int]] = [[0] * len(t) for _, t in encoded]
    starts = range(0, len(prompts), batch_size)
    cache_kw = _cache_argument(handle.model)
    # A bar only when scoring takes a while (CLI `suture eval` on a benchmark file); stderr, transient.
    for start in tqdm(starts, desc="scoring", leave=False, disable=len(starts) < 20):
        check_cancelled()
        chunk = prompts[start:start + batch_size]
        width = len(chunk[-1])
        ids = torch.full((len(chunk), width), tok.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, prompt in enumerate(chunk):
            ids[row, width - len(prompt):] = torch.tensor(prompt)
            mask[row, width - len(prompt):] = 1
        positions = (mask.cumsum(1) - 1).clamp(min=0)
        cache = DynamicCache(config=handle.model.config)
        normed = _final_hidden(handle, input_ids=ids.to(device), attention_mask=mask.to(device),
                               position_ids=positions.to(device), use_cache=True, **{cache_kw: cache})
        # the first token of every target, read at the last prompt column
        members = [i for prompt in chunk for i in by_prompt[prompt]]
        rows = [row for row, prompt in enumerate(chunk) for _ in by_prompt[prompt]]
        lp, argmax = _read(handle, normed, rows, [width - 1] * len(rows), [encoded[i][1][0] for i in members])
        for i, value, token in zip(members, lp.tolist(), argmax):
            token_lp[i][0], predicted[i][0] = value, token
        # the rest of longer targets: their own tokens (all but the last) after the cached prompt
        longer = [(row, i) for row, i in zip(rows, members) if len(encoded[i][1]) > 1]
        if not longer:
            continue
        span = max(len(encoded[i][1]) - 1 for _, i in longer)
        cont = torch.full((len(longer), span), tok.pad_token_id, dtype=torch.long)
        cont_mask = torch.zeros_like(cont)
        for j, (_, i) in enumerate(longer):
            rest = encoded[i][1][:-1]
            cont[j, : len(rest)] = torch.tensor(rest)
            cont_mask[j, : len(rest)] = 1
        source = torch.tensor([row for row, _ in longer])
        cache.batch_select_indices(source.to(device))
        lengths = mask.sum(1)[source]
        cont_positions = lengths[:, None] + torch.arange(span)[None, :]
        normed = _final_hidden(handle, input_ids=cont.to(device),
                               attention_mask=torch.cat([mask[source], cont_mask], 1).to(device),
                               position_ids=cont_positions.to(device), use_cache=True, **{cache_kw: cache})
        read_rows, read_cols, read_ids, owners = [], [], [], []
        for j, (_, i) in enumerate(longer):
            target = encoded[i][1]
            read_rows += [j] * (len(target) - 1)
            read_cols += range(len(target) - 1)
            read_ids += target[1:]
            owners += [(i, k) for k in range(1, len(target))]
        lp, argmax = _read(handle, normed, read_rows, read_cols, read_ids)
        for (i, k), value, token in zip(owners, lp.tolist(), argmax):
            token_lp[i][k], predicted[i][k] = value, token
    logprob = torch.tensor([sum(values) for values in token_lp], dtype=torch.float32)
    return PairScores(logprob=logprob, n_tokens=torch.tensor([len(t) for _, t in encoded]), predicted=predicted,
                      target=[t for _, t in encoded])


def target_logprobs(handle: ModelHandle, pairs: list[tuple[str, str]], batch_size: int = 64,
                    per_token: bool = False) -> torch.Tensor:
    """log P(target | prompt) summed over the target's tokens (or their mean with per_token)."""
    scores = score_pairs(handle, pairs, batch_size)
    return scores.logprob / scores.n_tokens if per_token else scores.logprob
