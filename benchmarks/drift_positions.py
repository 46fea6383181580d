"""Which positions of the drift reference text carry an edited model's KL: the session saved by
`sequential.py --state` is restored and the KL of each position (predicting the token after it) is listed,
largest first, with how much of the total the largest few carry. With --data and --edits, also the share
of the KL at positions within three words after a capitalized word (4+ letters) that the first N edits'
subjects or new targets contain: where the reference text names what was edited.

    python benchmarks/drift_positions.py --state /work/runs/seq.state --top 25 \\
        --data ../shared/data/counterfact_rome_format_1000.json --edits 500
"""

from __future__ import annotations

import argparse
import json
import re
import sys

NAME = re.compile(r"[A-Z][a-z]{3,}")


def edited_names(path: str, edits: int) -> set[str]:
    """Capitalized words of 4+ letters in the subjects and new targets of the first `edits` records."""
    from suture.evaluation import load_counterfact

    return {word for case in load_counterfact(path, limit=edits)
            for word in NAME.findall(case.subject) + NAME.findall(case.target_new)}


def reference_positions(tok, names: set[str] = frozenset()) -> tuple[list[tuple[str, str]], list[bool]]:
    """Per reference-text position in measure_drift's order: (the last 32 characters of the text up to it,
    the token it predicts), and whether one of the last three words up to it is in `names`."""
    from suture.evaluation.drift import default_reference_texts

    where, named = [], []
    for text in default_reference_texts():
        ids = tok(text)["input_ids"]
        for i in range(len(ids)):
            before = tok.decode(ids[:i + 1])
            where.append((before[-32:], tok.decode([ids[i + 1]]) if i + 1 < len(ids) else ""))
            named.append(any(word in names for word in re.findall(r"[A-Za-z]+", before)[-3:]))
    return where, named


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--state", required=True, help="a session file saved by sequential.py --state")
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--data", help="the records the session edited, in order (CounterFact JSON)")
    parser.add_argument("--edits", type=int, help="with --data: how many of them the session applied")
    args = parser.parse_args(argv)
    import torch

    from suture.editor import Editor
    from suture.evaluation.drift import default_reference_texts, measure_drift

    torch.set_num_threads(args.threads)
    editor = Editor.load(args.model)
    editor.restore_session(args.state)
    report = measure_drift(editor)
    tok = editor.tokenizer
    names = edited_names(args.data, args.edits) if args.data and args.edits else set()
    where, named = reference_positions(tok, names)
    kl = report.kl_per_position
    order = sorted(range(len(kl)), key=lambda i: -kl[i])
    total = sum(kl)
    summary = {"mean_kl": report.mean_kl, "top1_agreement": report.top1_agreement, "positions": len(kl),
               "share_of_the_largest": {n: round(sum(kl[i] for i in order[:n]) / total, 3)
                                        for n in (5, 10, 25, 50, 100)}}
    if names:
        at_named = sum(k for k, flag in zip(kl, named) if flag)
        summary |= {"named_positions": sum(named), "share_at_named": round(at_named / total, 3),
                    "mean_kl_elsewhere": (total - at_named) / max(1, len(kl) - sum(named)),
                    "names_in_reference": sorted({w for t in default_reference_texts() for w in NAME.findall(t)
                                                  if w in names})}
    print(json.dumps(summary))
    for i in order[:args.top]:
        print(json.dumps({"kl": round(kl[i], 3), "after": where[i][0], "next": where[i][1]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
