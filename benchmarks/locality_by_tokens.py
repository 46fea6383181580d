"""Generated locality against answer length: the share of neighbor answers whose first k tokens are the
unedited model's, for k = 1, 2, 4, 8, 12, read from stored answers (no model run; only its tokenizer).

The locality bar counts a neighbor answer as kept only when all of it (up to 12 tokens or the end of the
sentence) is the base model's word for word; this shows where along the answer the edited model departs:
the fact is usually in the first few tokens, the continuation after it drifts.

    python benchmarks/locality_by_tokens.py docs/bench/generated_rome_500_wb.jsonl \\
        docs/batch/memit_100_500_answers.jsonl docs/sequential/memit_anchor_100_500_answers.jsonl

Input: rows of benchmarks/generated.py (--rows) or answer files (--answers of batch.py / sequential.py);
answers judged "same"/"changed" are the neighbor ones. Rows are grouped by their "edits" field if present.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

LENGTHS = (1, 2, 4, 8, 12)


def prefix_agreement(pairs: list[tuple[str, str]], tokenize, lengths=LENGTHS) -> dict[int, float]:
    """{k: share of (base, edited) answer pairs whose first k token ids agree}."""
    ids = [(tokenize(base), tokenize(edited)) for base, edited in pairs]
    return {k: sum(b[:k] == e[:k] for b, e in ids) / len(ids) for k in lengths}


def neighbor_pairs(rows: list[dict]) -> list[tuple[str, str]]:
    return [(a["base"], a["text"]) for r in rows for a in r.get("answers", [])
            if a.get("judged") in ("same", "changed") and a.get("base") is not None]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="+")
    parser.add_argument("--model", default="smollm2-135m", help="whose tokenizer counts the tokens")
    args = parser.parse_args(argv)
    from transformers import AutoTokenizer

    from suture.editor.zoo import ZOO, resolve_zoo

    tokenizer = AutoTokenizer.from_pretrained(resolve_zoo(args.model) if args.model in ZOO else args.model)

    def tokenize(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    print("| file | edits | neighbor answers | " + " | ".join(f"first {k}" for k in LENGTHS) + " |")
    print("|---|---|---|" + "---|" * len(LENGTHS))
    for path in args.files:
        rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
        groups: dict = {}
        for row in rows:
            if not row.get("header"):
                groups.setdefault(row.get("edits"), []).append(row)
        for edits, group in groups.items():
            pairs = neighbor_pairs(group)
            if not pairs:
                continue
            shares = prefix_agreement(pairs, tokenize)
            print(f"| {path} | {edits or 'one at a time'} | {len(pairs)} | "
                  + " | ".join(f"{shares[k]:.3f}" for k in LENGTHS) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
