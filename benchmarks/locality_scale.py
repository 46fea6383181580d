"""How much of an edit the neighbors' generated answers can bear: each record's edit scaled by s.

    python benchmarks/locality_scale.py --data ../shared/data/counterfact_rome_format_1000.json \\
        --offset 600 --n 20 --scales 0,0.1,0.25,0.5,1

Each record is edited alone (ROME's defaults unless --method/--hparams), then every edited weight is set
to W₀ + s·(W - W₀) for each scale s and the neighbor prompts and the rewrite prompt are answered greedily
as the generated evaluation answers them (evaluation/generated.py's budgets and sentence stop). Per
scale: the share of neighbor answers equal to the unedited model's (generated locality), the share whose
first token is, and the share of rewrite answers judged to name the new target. s = 0 is the unedited
model itself (1.0 by construction: a check of the comparison). Whether locality falls with the size of
the update or flips at any nonzero one says whether a smaller write can reach the locality bar at all.
"""

from __future__ import annotations

import json
import sys

from bench_common import add_method_options, add_record_range, benchmark_parser, load_editor, ready


def main(argv: list[str] | None = None) -> int:
    parser = benchmark_parser(__doc__)
    add_record_range(parser, n=20, offset=600)
    add_method_options(parser, "rome")
    parser.add_argument("--scales", default="0,0.1,0.25,0.5,1")
    parser.add_argument("--out", help="one JSON row per record and scale (appended)")
    args = parser.parse_args(argv)
    if not ready(args):
        return 2
    import torch

    from suture.editor.generation import generate_greedy
    from suture.editor.judge import judge, normalize
    from suture.evaluation import load_counterfact
    from suture.evaluation.generated import GenerationOptions

    editor = load_editor(args)
    handle = editor.handle
    options = GenerationOptions()
    scales = [float(s) for s in args.scales.split(",")]
    totals = {s: {"same": 0, "first": 0, "neighbors": 0, "rewrite": 0, "cases": 0} for s in scales}

    def answer(prompts: list[str], tokens: int) -> list[str]:
        return [g.text for g in generate_greedy(handle, prompts, max_new_tokens=tokens, stop="sentence",
                                                 batch_size=options.batch_size)]

    def first_word(text: str) -> str:
        words = normalize(text).split()
        return words[0] if words else ""

    for case in load_counterfact(args.data, limit=args.n, offset=args.offset):
        base = answer(case.neighbors, options.neighbor_tokens)
        editor.apply([case], method=args.method, keep_failed=True, **args.hparams)
        params = {d.key: handle.model.get_submodule(d.module).get_parameter(d.param)
                  for d in editor.ledger[-1].deltas}
        edited = {k: p.detach().clone() for k, p in params.items()}
        with editor.weights.base_weights():
            original = {k: p.detach().clone() for k, p in params.items()}
        for s in scales:
            with torch.no_grad():
                for k, p in params.items():
                    p.copy_(original[k] + s * (edited[k] - original[k]))
            neighbors = answer(case.neighbors, options.neighbor_tokens)
            rewrite = answer([case.text], options.answer_tokens)[0]
            same = sum(normalize(a) == normalize(b) for a, b in zip(neighbors, base))
            first = sum(first_word(a) == first_word(b) for a, b in zip(neighbors, base))
            named = judge(rewrite, case.target_new, case.target_true) == "new"
            t = totals[s]
            t["same"] += same
            t["first"] += first
            t["neighbors"] += len(base)
            t["rewrite"] += named
            t["cases"] += 1
            row = {"id": case.id, "scale": s, "same": same, "first_word_same": first, "neighbors": len(base),
                   "rewrite_named": named, "rewrite": rewrite}
            if args.out:
                with open(args.out, "a") as sink:
                    sink.write(json.dumps(row) + "\n")
        with torch.no_grad():
            for k, p in params.items():
                p.copy_(edited[k])
        editor.revert()
    for s, t in totals.items():
        print(json.dumps({"scale": s, "locality": t["same"] / t["neighbors"],
                          "first_word_kept": t["first"] / t["neighbors"], "rewrite": t["rewrite"] / t["cases"],
                          "cases": t["cases"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
