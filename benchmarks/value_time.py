"""Seconds and steps of MEMIT's value optimization, chunk by chunk: the costly part of a many-edit call.

    python benchmarks/value_time.py --data ../shared/data/counterfact_rome_format_1000.json --n 96 --threads 1

Runs `optimize_values` at MEMIT's top layer with MEMIT's default templates and objective over chunks of
`--chunk` requests (nothing is written to the model) and prints one JSON row per chunk: steps, seconds, mean
and smallest target probability at the end, and a checksum of the deltas, so two versions of the code can
be compared for speed on the same work and checked to compute the same values.
"""

from __future__ import annotations

import json
import sys
import time

from bench_common import add_record_range, benchmark_parser, load_editor, ready


def main(argv: list[str] | None = None) -> int:
    parser = benchmark_parser(__doc__)
    add_record_range(parser, n=96, offset=0)
    parser.add_argument("--chunk", type=int, default=32)
    args = parser.parse_args(argv)
    if not ready(args):
        return 2
    from suture.editor.kv import optimize_values
    from suture.editor.kv.templates import context_templates
    from suture.evaluation import load_counterfact
    from suture.methods.memit.hparams import MemitHParams, default_layers

    editor = load_editor(args)
    handle = editor.handle
    hparams = MemitHParams(layers=default_layers(handle.sites.family, handle.n_layers))
    templates = context_templates(handle, hparams.templates)
    requests = load_counterfact(args.data, limit=args.n, offset=args.offset)
    for start in range(0, len(requests), args.chunk):
        chunk = requests[start:start + args.chunk]
        started = time.perf_counter()
        solution = optimize_values(handle, hparams.layers[-1], chunk, templates, hparams.objective)
        print(json.dumps({"first": start + args.offset, "n": len(chunk), "steps": solution.steps,
                          "seconds": round(time.perf_counter() - started, 2),
                          "mean_prob": round(float(solution.target_prob.mean()), 4),
                          "min_prob": round(float(solution.target_prob.min()), 4),
                          "delta_sum": round(float(solution.deltas.abs().sum()), 2)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
