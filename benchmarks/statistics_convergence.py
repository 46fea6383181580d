"""How many corpus tokens ROME's key covariance needs: the read direction ũ = C⁻¹k*/(k*ᵀC⁻¹k*) from
statistics over the first n sampled texts against the largest sample, for the keys of CounterFact subjects.

    python benchmarks/statistics_convergence.py --data ../shared/data/counterfact_rome_format_1000.json \\
        --texts 256 --sizes 32,64,128 --keys 20 --corpus-out docs/statistics/corpus_256.json

The texts are sampled once with the default sampler (their cost is reported); `--corpus-out` keeps them so
that `benchmarks/counterfact.py --hparams '{"corpus": {"source": ...}}'` can edit with each prefix.
Reported per size: tokens, the relative change ‖ũ_n − ũ_ref‖/‖ũ_ref‖ (median and max over keys) and the
change of the update's effect on the reference corpus keys, ‖K(ũ_n − ũ_ref)‖/‖K ũ_ref‖, which is what
neighborhood locality depends on. A split-half row compares two disjoint halves of the sample.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch
from bench_common import benchmark_parser, load_editor, ready


def main(argv: list[str] | None = None) -> int:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--texts", type=int, default=256, help="texts sampled (the reference uses all)")
    parser.add_argument("--sizes", default="32,64,128", help="prefix sizes compared with the reference")
    parser.add_argument("--keys", type=int, default=20, help="CounterFact subjects whose keys are read")
    parser.add_argument("--layer", type=int, default=4)
    parser.add_argument("--corpus-out", help="write the sampled texts here (a JSON list)")
    args = parser.parse_args(argv)
    if not ready(args):
        return 2
    from suture.editor.kv.corpus import CorpusSpec, sample_from_model
    from suture.editor.kv.keys import compute_keys
    from suture.editor.kv.stats import measure_second_moment
    from suture.evaluation import load_counterfact
    from suture.methods.shared.rank_one import read_directions

    editor = load_editor(args)
    handle, layer = editor.handle, args.layer
    spec = CorpusSpec()
    started = time.perf_counter()
    texts = sample_from_model(handle, args.texts, spec.max_tokens, spec.seed)
    sample_seconds = time.perf_counter() - started
    if args.corpus_out:
        Path(args.corpus_out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.corpus_out).write_text(json.dumps(texts))
    requests = load_counterfact(args.data, limit=args.keys)
    keys = compute_keys(handle, [layer], requests, ["{}"])[layer].double()

    def moment(subset: list[str]) -> tuple[torch.Tensor, int, float]:
        t0 = time.perf_counter()
        computed, count = measure_second_moment(handle, "mlp_out", [layer], subset, spec.max_tokens)
        return computed[layer].double(), count, time.perf_counter() - t0

    ref, ref_tokens, ref_seconds = moment(texts)
    u_ref = read_directions(keys, ref, 1e-6)
    # corpus keys from the reference sample: where a changed ũ would move unrelated outputs
    probe_texts = texts[: min(32, len(texts))]
    enc = handle.tokenizer(probe_texts, return_tensors="pt", padding=True, truncation=True, max_length=32)
    from suture.editor.kv.capture import capture_input, hooks, run_until_stopped
    sink: list[torch.Tensor] = []
    module = handle.model.get_submodule(handle.sites.mlp_out_path(layer))
    with torch.no_grad(), hooks(capture_input(module, sink, stop=True)):
        run_until_stopped(handle.model, **enc)
    corpus_keys = sink[0][enc["attention_mask"].bool()].double()

    def compare(mom2: torch.Tensor, against: torch.Tensor) -> dict:
        u = read_directions(keys, mom2, 1e-6)
        rel = ((u - against).norm(dim=1) / against.norm(dim=1))
        effect = ((corpus_keys @ (u - against).T).norm(dim=0) / (corpus_keys @ against.T).norm(dim=0))
        return {"u_rel_change_median": float(rel.median()), "u_rel_change_max": float(rel.max()),
                "effect_rel_change_median": float(effect.median())}

    rows = []
    for size in [int(s) for s in args.sizes.split(",")]:
        mom2, tokens, seconds = moment(texts[:size])
        rows.append({"texts": size, "tokens": tokens, "stats_seconds": seconds, **compare(mom2, u_ref)})
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    half = len(texts) // 2
    first, t1, _ = moment(texts[:half])
    second, _, _ = moment(texts[half:])
    split = {"texts": half, "tokens": t1, **compare(first, read_directions(keys, second, 1e-6))}
    result = {"sampled_texts": len(texts), "sample_seconds": sample_seconds, "reference_tokens": ref_tokens,
              "reference_stats_seconds": ref_seconds, "threads": args.threads, "layer": layer,
              "sizes": rows, "split_half": split}
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
