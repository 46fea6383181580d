"""Prefix sharing in scoring: `score_pairs` (each prompt once, its targets after a KV cache) against the
previous scorer (one row per (prompt, target) pair, so each CounterFact prompt ran twice), same pairs.

    python benchmarks/scoring_prefix.py --data ../shared/data/counterfact_rome_format_1000.json --n 100 --repeats 3

The pairs are those `score_cases` scores for the first n cases (every rewrite, paraphrase and neighbor
prompt with target_new and target_true). The two scorers alternate `--repeats` times so that load on the
machine hits both alike; the median of each is reported, with the largest log-probability difference.
"""

from __future__ import annotations

import json
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from bench_common import benchmark_parser, load_editor, ready


@torch.no_grad()
def per_pair_logprobs(handle, pairs: list[tuple[str, str]], batch_size: int = 64) -> torch.Tensor:
    """The previous scorer: every pair is one right-padded row prompt + target, rows sorted by length."""
    from suture.editor.kv.readout import final_hidden, logits_at
    from suture.editor.kv.tokens import encode_target

    tok = handle.tokenizer
    encoded = [(tok(prompt)["input_ids"], encode_target(tok, target)) for prompt, target in pairs]
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i][0]) + len(encoded[i][1]))
    logprob = torch.empty(len(encoded))
    for start in range(0, len(order), batch_size):
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
        normed = final_hidden(handle, ids, mask)
        rows_t = torch.tensor(read_rows)
        logits = logits_at(handle, normed, rows_t, torch.tensor(read_cols))
        token_lp = F.log_softmax(logits, -1).gather(1, torch.tensor(read_ids)[:, None]).squeeze(1)
        logprob[torch.tensor(chunk)] = torch.zeros(len(chunk)).index_add_(0, rows_t, token_lp)
    return logprob


def main(argv: list[str] | None = None) -> int:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--n", type=int, default=100, help="CounterFact cases whose pairs are scored")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    if not ready(args):
        return 2
    from suture.evaluation import load_counterfact, target_logprobs

    editor = load_editor(args)
    cases = load_counterfact(args.data, limit=args.n)
    pairs = [(text, target) for c in cases for text in [c.text, *c.paraphrases, *c.neighbors]
             for target in (c.target_new, c.target_true)]
    target_logprobs(editor.handle, pairs[:64])  # warm-up
    shared_s, per_pair_s = [], []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        shared = target_logprobs(editor.handle, pairs)
        shared_s.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        per_pair = per_pair_logprobs(editor.handle, pairs)
        per_pair_s.append(time.perf_counter() - t0)
    result = {
        "cases": len(cases), "pairs": len(pairs), "distinct_prompts": len({p for p, _ in pairs}),
        "per_pair_seconds": per_pair_s, "shared_prefix_seconds": shared_s,
        "speedup_of_medians": statistics.median(per_pair_s) / statistics.median(shared_s),
        "max_abs_logprob_difference": float((shared - per_pair).abs().max()), "threads": args.threads,
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
