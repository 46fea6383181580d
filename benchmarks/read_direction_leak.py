"""How much of a ROME update reaches unrelated tokens against how much reaches the subject in paraphrases,
for a choice of key covariance (corpus size, ridge). ROME writes W x + (ũ·x) δ at every token with
ũ·k* = 1: ũ·x at a neighbor prompt's tokens is the share of δ they receive, ũ·k at the subject of a
paraphrase the share that generalizes. No edit is made; only keys are read.

    python benchmarks/read_direction_leak.py --data ../shared/data/counterfact_rome_format_1000.json \\
        --offset 600 --n 20 --ridges 1e-6,1e-2,1e-1,1
"""

from __future__ import annotations

import json
import sys

from bench_common import add_record_range, benchmark_parser, load_editor, ready


def main(argv: list[str] | None = None) -> int:
    parser = benchmark_parser(__doc__)
    add_record_range(parser, n=20, offset=600)
    parser.add_argument("--ridges", default="1e-6,1e-2,1e-1,1")
    parser.add_argument("--corpora", default="128", help="comma-separated statistics corpus sizes (texts)")
    args = parser.parse_args(argv)
    if not ready(args):
        return 2
    import torch

    from suture.editor import EditRequest
    from suture.editor.kv import CorpusSpec
    from suture.editor.kv.capture import capture_input, hooks, run_until_stopped
    from suture.editor.kv.keys import compute_keys
    from suture.evaluation import load_counterfact
    from suture.methods.rome import Rome
    from suture.methods.shared.rank_one import read_directions

    editor = load_editor(args)
    handle = editor.handle
    hparams = Rome().default_hparams(handle)
    layer = hparams.layer
    templates = editor.context.templates(hparams.templates)
    mlp_out = handle.model.get_submodule(handle.sites.mlp_out_path(layer))
    variants = {}
    for n_texts in (int(c) for c in args.corpora.split(",")):
        mom2 = editor.context.second_moment([layer], CorpusSpec(n_samples=n_texts))[layer]
        variants.update({f"n{n_texts} ridge {r:g}": (mom2, r) for r in (float(x) for x in args.ridges.split(","))})

    @torch.no_grad()
    def token_keys(text: str) -> torch.Tensor:
        sink: list = []
        with hooks(capture_input(mlp_out, sink, stop=True)):
            run_until_stopped(handle.model, **handle.tokenizer([text], return_tensors="pt").to(handle.device))
        return sink[0][0].float()

    found = {name: {"paraphrase": [], "neighbor_rms": [], "neighbor_max": []} for name in variants}
    for case in load_counterfact(args.data, limit=args.n, offset=args.offset):
        key = compute_keys(handle, [layer], [case], templates)[layer]
        in_paraphrases = [EditRequest(prompt=p.replace(case.subject, "{}", 1), subject=case.subject,
                                      target_new=case.target_new) for p in case.paraphrases if case.subject in p]
        paraphrase_keys = [compute_keys(handle, [layer], [r], ["{}"])[layer][0] for r in in_paraphrases]
        neighbor_keys = [token_keys(p) for p in case.neighbors]
        for name, (mom2, ridge) in variants.items():
            u = read_directions(key, mom2, ridge)[0]
            found[name]["paraphrase"] += [float(u @ k) for k in paraphrase_keys]
            for x in neighbor_keys:
                share = (x @ u).abs()[1:]  # the first token is the attention sink of every prompt
                found[name]["neighbor_rms"].append(float(share.pow(2).mean().sqrt()))
                found[name]["neighbor_max"].append(float(share.max()))
        print(case.id, file=sys.stderr, flush=True)

    def mean(values):
        return sum(values) / len(values) if values else None

    print(json.dumps({name: {k: mean(v) for k, v in r.items()} for name, r in found.items()}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
