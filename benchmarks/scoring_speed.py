"""Batched CounterFact scoring against a naive one-prompt-at-a-time scorer, in the same run.

    python benchmarks/scoring_speed.py --data ../shared/data/counterfact_rome_format_1000.json --n 1000 --naive-n 100

The naive scorer runs one forward pass per (prompt, target) pair over the full vocabulary at every
position, as a straightforward implementation would; the batched one is `evaluation.score_cases`.
Both score the same whole-target log-probabilities, and the run checks that they agree.
"""

from __future__ import annotations

import json
import sys
import time

import torch
from bench_common import benchmark_parser, load_editor, ready


@torch.no_grad()
def naive_logprob(model, tok, prompt: str, target: str) -> float:
    prompt_ids = tok(prompt)["input_ids"]
    target_ids = tok(" " + target.strip(), add_special_tokens=False)["input_ids"]
    ids = torch.tensor([prompt_ids + target_ids])
    logp = torch.log_softmax(model(input_ids=ids).logits[0].float(), -1)
    return sum(float(logp[len(prompt_ids) - 1 + i, t]) for i, t in enumerate(target_ids))


def naive_cases(model, tok, cases) -> list[float]:
    out = []
    for case in cases:
        for text in [case.text, *case.paraphrases, *case.neighbors]:
            out += [naive_logprob(model, tok, text, case.target_new), naive_logprob(model, tok, text, case.target_true)]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--n", type=int, default=1000, help="cases for the batched scorer")
    parser.add_argument("--naive-n", type=int, default=100, help="cases for the naive scorer (it is slow)")
    args = parser.parse_args(argv)
    if not ready(args):
        return 2
    from suture.evaluation import load_counterfact, score_cases, target_logprobs

    editor = load_editor(args)
    cases = load_counterfact(args.data, limit=args.n)
    subset = cases[: args.naive_n]

    started = time.perf_counter()
    full = score_cases(editor.handle, cases)
    batched_all = time.perf_counter() - started

    started = time.perf_counter()
    score_cases(editor.handle, subset)
    batched_subset = time.perf_counter() - started

    started = time.perf_counter()
    naive = naive_cases(editor.model, editor.tokenizer, subset)
    naive_subset = time.perf_counter() - started

    pairs = [(text, target) for c in subset for text in [c.text, *c.paraphrases, *c.neighbors]
             for target in (c.target_new, c.target_true)]
    max_diff = float((target_logprobs(editor.handle, pairs) - torch.tensor(naive)).abs().max())
    result = {
        "cases": len(cases), "batched_seconds": batched_all, "batched_cases_per_second": len(cases) / batched_all,
        "subset_cases": len(subset), "batched_subset_seconds": batched_subset, "naive_subset_seconds": naive_subset,
        "batched_subset_cases_per_second": len(subset) / batched_subset,
        "naive_cases_per_second": len(subset) / naive_subset, "speedup": naive_subset / batched_subset,
        "max_abs_logprob_difference": max_diff,
        "unedited_scores": {"efficacy": full.efficacy, "paraphrase": full.paraphrase,
                            "neighborhood": full.neighborhood},
        "threads": args.threads,
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
