"""Which positions of the drift reference text carry an edited model's KL: the session saved by
`sequential.py --state` is restored and the KL of each position (predicting the token after it) is listed,
largest first, with how much of the total the largest few carry.

    python benchmarks/drift_positions.py --state /work/runs/seq.state --top 25
"""

from __future__ import annotations

import argparse
import json
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--state", required=True, help="a session file saved by sequential.py --state")
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args(argv)
    import torch

    from suture.editor import Editor
    from suture.evaluation.drift import default_reference_texts, measure_drift

    torch.set_num_threads(args.threads)
    editor = Editor.load(args.model)
    editor.restore_session(args.state)
    report = measure_drift(editor)
    tok = editor.tokenizer
    where = []  # (the text up to the position, the token the text continues with), as measure_drift orders them
    for text in default_reference_texts():
        ids = tok(text)["input_ids"]
        where += [(tok.decode(ids[:i + 1])[-32:], tok.decode([ids[i + 1]]) if i + 1 < len(ids) else "")
                  for i in range(len(ids))]
    kl = report.kl_per_position
    order = sorted(range(len(kl)), key=lambda i: -kl[i])
    total = sum(kl)
    print(json.dumps({"mean_kl": report.mean_kl, "top1_agreement": report.top1_agreement, "positions": len(kl),
                      "share_of_the_largest": {n: round(sum(kl[i] for i in order[:n]) / total, 3)
                                               for n in (5, 10, 25, 50, 100)}}))
    for i in order[:args.top]:
        print(json.dumps({"kl": round(kl[i], 3), "after": where[i][0], "next": where[i][1]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
