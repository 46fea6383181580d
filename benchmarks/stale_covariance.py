"""Do a long run's edits read keys the covariance no longer describes? MEMIT's covariance C₀ = E[k kᵀ] of
each edited layer's keys is computed once, on the unedited model, and every solve holds the edits' change
small on it. After many edits the layers below have moved, so an edited layer's keys on ordinary text are
no longer those C₀ was computed from. Restores a saved session (`sequential.py --state`) and, on the same
statistics-corpus texts, reads each edited layer's keys with the edited model (C_t) and with the base
weights (C₀).

    python benchmarks/stale_covariance.py --data ../shared/data/counterfact_rome_format_1000.json \\
        --session /work/runs/state.pt

Per edited module, for the summed update ΔW of every edit in the session: ‖C_t - C₀‖/‖C₀‖ (Frobenius), and
the update's energy on the keys it now meets against the energy the solves held it to, tr(ΔW C_t ΔWᵀ) /
tr(ΔW C₀ ΔWᵀ). A ratio well above 1 at the upper edited layers says the solves underweight what their
updates now do to ordinary text (a case for recomputing C as the run goes); about 1 says the covariance
is not stale. No edit is made.
"""

from __future__ import annotations

import json
from collections import defaultdict

from bench_common import benchmark_parser, load_editor, ready


def main(argv: list[str] | None = None) -> int:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--session", required=True, help="a session file saved by sequential.py --state")
    parser.add_argument("--texts", type=int, help="statistics-corpus texts to read (the first N; default all: "
                        "64 texts overstated the change 2.3 times at 250 edits)")
    args = parser.parse_args(argv)
    if not ready(args):
        return 2
    import torch

    from suture.editor.kv.corpus import CorpusSpec, load_corpus
    from suture.editor.kv.stats import measure_second_moment

    editor = load_editor(args)
    editor.restore_session(args.session)
    handle = editor.handle
    delta: dict[str, torch.Tensor] = defaultdict(lambda: 0)
    for entry in editor.ledger:
        for d in entry.deltas:
            delta[d.module] = delta[d.module] + d.materialize().double()
    layer_of = {handle.sites.mlp_out_path(layer): layer for layer in range(handle.n_layers)}
    layers = sorted(layer_of[name] for name in delta if name in layer_of)
    texts = load_corpus(handle, CorpusSpec())[: args.texts]

    def moments():
        found = measure_second_moment(handle, "mlp_out", layers, texts, CorpusSpec().max_tokens)[0]
        return {layer: c.double() for layer, c in found.items()}

    edited = moments()
    with editor.weights.base_weights():
        base = moments()
    for layer in layers:
        dw = delta[handle.sites.mlp_out_path(layer)].to(base[layer].device)
        c0, ct = base[layer], edited[layer]
        held, met = float(torch.trace(dw @ c0 @ dw.T)), float(torch.trace(dw @ ct @ dw.T))
        print(json.dumps({"layer": layer, "edits": len(editor.ledger), "texts": len(texts),
                          "covariance_change": float(torch.linalg.norm(ct - c0) / torch.linalg.norm(c0)),
                          "energy_held": held, "energy_met": met, "ratio": met / held}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
