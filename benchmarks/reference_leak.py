"""Where a MEMIT-style layer update lands on the drift reference text, per layer, and whether weighting the
covariance toward word-continuation pieces (the `uss` of "Debussy") moves it. No edit is made; only keys
are read.

    python benchmarks/reference_leak.py --data ../shared/data/counterfact_rome_format_1000.json \\
        --offset 600 --n 20 --layers 1,2,3,4 --weights 0,1,3,10

For an edit key k at the subject's last token and M = λ(C + a·C_cont) with λ = d_in, a layer's update writes
along u = (M + kkᵀ)⁻¹k (Sherman-Morrison: the direction is M⁻¹k whatever λ). At a reference-text key x the
update writes (x·u)/(k·u) of what it writes at k. Per layer and weight a: the mean write fraction k·u, the
sum over the reference text's positions of ((x·u)/(k·u))² (the leak), its part on word-continuation pieces
(a token that starts with a letter or digit right after one that ends with one), and the tokens most often
among an edit's three largest leaks. C_cont is the second moment over the corpus's continuation pieces,
normalised by all the corpus's tokens (so C = C_cont + C_rest).
"""

from __future__ import annotations

import json
import sys
from collections import Counter

from bench_common import add_record_range, benchmark_parser, load_editor, ready


def continuation_flags(tokenizer, ids: list[int]) -> list[bool]:
    """Whether each token continues the word of the token before it."""
    pieces = [tokenizer.decode([i]) for i in ids]
    return [i > 0 and bool(p) and p[0].isalnum() and bool(pieces[i - 1]) and pieces[i - 1][-1].isalnum()
            for i, p in enumerate(pieces)]


def main(argv: list[str] | None = None) -> int:
    parser = benchmark_parser(__doc__)
    add_record_range(parser, n=20, offset=600)
    parser.add_argument("--layers", default="1,2,3,4")
    parser.add_argument("--weights", default="0", help="comma-separated a: weight of the continuation pieces' C")
    args = parser.parse_args(argv)
    if not ready(args):
        return 2
    import torch

    from suture.editor.kv import CorpusSpec
    from suture.editor.kv.corpus import load_corpus
    from suture.editor.kv.stats import key_batches
    from suture.evaluation import load_counterfact
    from suture.evaluation.drift import default_reference_texts

    editor = load_editor(args)
    handle, tok = editor.handle, editor.tokenizer
    layers = [int(x) for x in args.layers.split(",")]
    weights = [float(x) for x in args.weights.split(",")]

    @torch.no_grad()
    def batches(texts: list[str]):
        """Per batch of `texts`: ({layer: keys [tokens, d_in]}, continuation flags [tokens], token texts)."""
        for enc, keys in key_batches(handle, layers, texts, max_tokens=128):
            mask = enc["attention_mask"].bool()
            flags, tokens = [], []
            for row in range(mask.shape[0]):
                ids = enc["input_ids"][row][mask[row]].tolist()
                flags += continuation_flags(tok, ids)
                tokens += [tok.decode([i]) for i in ids]
            yield keys, torch.tensor(flags), tokens

    def keys_of(texts: list[str]):
        found, flags, tokens = [], [], []
        for keys, batch_flags, batch_tokens in batches(texts):
            found.append(keys)
            flags.append(batch_flags)
            tokens += batch_tokens
        return {layer: torch.cat([k[layer] for k in found]) for layer in layers}, torch.cat(flags), tokens

    spec = CorpusSpec()
    mom2 = {layer: m.double() for layer, m in editor.context.second_moment(layers, spec).items()}
    cont_mom2 = {}
    if any(weights):
        count, continuing = 0, 0
        for keys, flags, _ in batches(load_corpus(handle, spec)):
            for layer in layers:
                chosen = keys[layer][flags]
                cont_mom2[layer] = cont_mom2.get(layer, 0) + chosen.T @ chosen
            count, continuing = count + len(flags), continuing + int(flags.sum())
        cont_mom2 = {layer: total / count for layer, total in cont_mom2.items()}  # so that C = C_cont + C_rest
        print(json.dumps({"corpus_tokens": count, "continuation_share": round(continuing / count, 4)}), flush=True)
    ref_keys, ref_flags, ref_tokens = keys_of(default_reference_texts())
    edit_keys: dict[int, list] = {layer: [] for layer in layers}
    for case in load_counterfact(args.data, limit=args.n, offset=args.offset):
        subject_end = case.prompt.split("{}")[0] + case.subject  # the bare prompt up to the subject's last token
        keys, _, _ = keys_of([subject_end])
        for layer in layers:
            edit_keys[layer].append(keys[layer][-1])
    for weight in weights:
        for layer in layers:
            system = mom2[layer].shape[0] * (mom2[layer] + weight * cont_mom2.get(layer, 0))
            fractions, leak, leak_cont, top = [], 0.0, 0.0, Counter()
            for key in edit_keys[layer]:
                u = torch.linalg.solve(system + torch.outer(key, key), key)
                fraction = float(key @ u)
                relative = (ref_keys[layer] @ u) / fraction
                fractions.append(fraction)
                leak += float((relative ** 2).sum())
                leak_cont += float((relative[ref_flags] ** 2).sum())
                top.update(ref_tokens[p] for p in relative.abs().topk(3).indices.tolist())
            n = len(fractions)
            print(json.dumps({"layer": layer, "continuation_weight": weight,
                              "write_fraction": round(sum(fractions) / n, 3), "leak": round(leak / n, 4),
                              "leak_on_continuations": round(leak_cont / n, 4),
                              "top_tokens": top.most_common(6)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
