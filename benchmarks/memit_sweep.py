"""MEMIT's lower layers and covariance weight, swept over one set of target values.

MEMIT's costly step, the value optimization at the top layer, does not depend on which layers below share
the update or on the covariance weight λ. This runs it once (the first setting's call) and reuses its
target residuals for every other setting, so each further setting costs the layer solves, the verdicts and
the scoring: minutes instead of the half hour of a 1,000-edit call on 2 cores.

    python benchmarks/memit_sweep.py --data ../shared/data/counterfact_rome_format_1000.json --n 1000 \\
        --layer-sets "1,2,3,4;0,1,2,3,4" --weights 1.0,0.5,0.25 --out docs/batch/memit_sweep_1000.json

Every setting shares the top layer of the first layer set (the values live there). Rows: one per setting,
with the teacher-forced scores after the edit, the verdicts passed, the residual left and the seconds of
the call (the first includes the value optimization).
"""

from __future__ import annotations

import itertools
import json
import sys
import time
from pathlib import Path

from bench_common import add_record_range, benchmark_parser, load_editor, ready


def sweep(editor, cases: list, layer_sets: list[list[int]], weights: list[float], on_row=None,
          values: Path | None = None, rounds: list[int] = (1,), **hparams) -> list[dict]:
    """One row per (layers, weight): teacher-forced scores after the call, verdicts passed, residual left,
    seconds. The target values are computed by the first call and reused by the others; with `values`, a
    file, they are also read from it when it holds them and written to it once computed, so a sweep
    stopped after the value optimization (the costly half hour) resumes without redoing it."""
    import torch

    from suture.evaluation import score_cases
    from suture.methods.memit import Memit

    if hparams.get("group_size") is not None:  # a later group's values depend on the lower layers' writes
        raise ValueError("sweep: group_size cannot share values between settings; sweep without it")
    memo: dict = torch.load(values, weights_only=True) if values and values.is_file() else {}
    computed = Memit.target_deltas

    def reused(self, ctx, requests, resolved):
        # what the values depend on besides the requests: the weights, the top layer and its hyperparameters
        key = json.dumps([editor.handle.base_fingerprint, [e.label for e in editor.ledger],
                          [r.model_dump(mode="json") for r in requests],
                          resolved.model_dump(mode="json", exclude={"layers", "mom2_weight_per_dim", "rounds"}),
                          resolved.layers[-1]], sort_keys=True)
        if key not in memo:
            memo[key] = computed(self, ctx, requests, resolved)
            if values:
                torch.save(memo, values)
        return memo[key]

    rows = []
    Memit.target_deltas = reused
    try:
        for layers, weight, passes in itertools.product(layer_sets, weights, rounds):
            held = len(editor.ledger)
            started = time.perf_counter()
            result = editor.apply(cases, method="memit", keep_failed=True, layers=layers,
                                  mom2_weight_per_dim=weight, rounds=passes, **hparams)
            seconds = time.perf_counter() - started
            post = score_cases(editor.handle, cases)
            rows.append({"setting": {"layers": layers, "mom2_weight_per_dim": weight, "rounds": passes},
                         "n": len(cases),
                         "efficacy": post.efficacy, "paraphrase": post.paraphrase,
                         "neighborhood": post.neighborhood,
                         "verdicts_passed": sum(v.passed for v in result.verdicts) / max(1, len(result.verdicts)),
                         "residual_left": result.details.get("residual_left"), "seconds": seconds})
            if on_row:  # before the revert: a caller may read the edited weights
                on_row(rows[-1])
            if len(editor.ledger) > held:  # nothing is recorded when every request was already true
                editor.revert()
    finally:
        Memit.target_deltas = computed
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = benchmark_parser(__doc__)
    add_record_range(parser, n=1000, offset=0)
    parser.add_argument("--layer-sets", default="1,2,3,4", help="';'-separated comma lists; all end at one top layer")
    parser.add_argument("--weights", default="1.0", help="comma-separated mom2_weight_per_dim values")
    parser.add_argument("--rounds", default="1", help="comma-separated numbers of passes over the layers")
    parser.add_argument("--out", required=True)
    parser.add_argument("--values", type=Path, help="file that keeps the target values between runs (torch.save)")
    args = parser.parse_args(argv)
    if not ready(args):
        return 2
    from suture.editor.conflicts import without_clashes
    from suture.evaluation import load_counterfact, score_cases

    layer_sets = [[int(x) for x in group.split(",")] for group in args.layer_sets.split(";")]
    if len({layers[-1] for layers in layer_sets}) != 1:
        print("--layer-sets: every set must end at the same top layer (the values are computed there)", file=sys.stderr)
        return 2
    editor = load_editor(args)
    cases, _ = without_clashes(load_counterfact(args.data, limit=args.n, offset=args.offset))
    pre = score_cases(editor.handle, cases)
    rows = [{"setting": "unedited", "n": len(cases), "efficacy": pre.efficacy, "paraphrase": pre.paraphrase,
             "neighborhood": pre.neighborhood}]
    Path(args.out).write_text(json.dumps(rows, indent=1))

    def keep(row: dict) -> None:  # written as it comes: a long sweep that is stopped keeps what it measured
        rows.append(row)
        print(json.dumps(row), flush=True)
        Path(args.out).write_text(json.dumps(rows, indent=1))

    sweep(editor, cases, layer_sets, [float(w) for w in args.weights.split(",")], on_row=keep, values=args.values,
          rounds=[int(r) for r in args.rounds.split(",")])
    return 0


if __name__ == "__main__":
    sys.exit(main())
