"""Do different edits' values share a direction? MEMIT's values δ at its top layer for n records (on the
unedited model, 32 per value optimization), and how far their unit vectors agree.

    python benchmarks/value_coherence.py --data ../shared/data/counterfact_rome_format_1000.json --n 64

Prints one JSON object: mean ‖δ‖, the length of the mean unit vector (1/√n for independent directions,
1 for one shared direction), the mean cosine of each value with that mean direction and with every other
value, and the cosine between the mean directions of the first and second half (whether the shared
direction is a property of the model rather than of these records).
"""

from __future__ import annotations

import json

from bench_common import add_record_range, benchmark_parser, load_editor, ready

# The value objective of the sequential variants (benchmarks/sequential.py, NGD_OBJECTIVE).
OBJECTIVE = {"optimizer": "normalized_gradient", "lr": 0.25, "steps": 40, "early_stop_nll": 0.6}


def main(argv: list[str] | None = None) -> int:
    parser = benchmark_parser(__doc__)
    add_record_range(parser, n=64, offset=0)
    parser.add_argument("--layer", type=int, default=4, help="the top layer, where MEMIT's values are optimized")
    args = parser.parse_args(argv)
    if not ready(args):
        return 2
    import torch
    import torch.nn.functional as F

    from suture.editor.kv import TemplateSpec, ValueObjective, optimize_values
    from suture.evaluation import load_counterfact

    editor = load_editor(args)
    cases = load_counterfact(args.data, limit=args.n, offset=args.offset)
    templates = editor.context.templates(TemplateSpec(groups=[(10, 5)]))  # MEMIT's default templates
    objective = ValueObjective(**OBJECTIVE)
    deltas = torch.cat([optimize_values(editor.handle, args.layer, cases[i:i + 32], templates, objective).deltas
                        for i in range(0, len(cases), 32)]).cpu()
    unit = F.normalize(deltas, dim=1)
    mean = unit.mean(0)
    direction = F.normalize(mean, dim=0)
    pairwise = unit @ unit.T
    half = len(unit) // 2
    halves = F.normalize(unit[:half].mean(0), dim=0) @ F.normalize(unit[half:].mean(0), dim=0)
    print(json.dumps({"records": len(cases), "offset": args.offset, "layer": args.layer,
                      "mean_value_norm": float(deltas.norm(dim=1).mean()),
                      "mean_unit_length": float(mean.norm()), "independent_expectation": len(unit) ** -0.5,
                      "cos_with_mean_direction": float((unit @ direction).mean()),
                      "pairwise_cos": float(pairwise[~torch.eye(len(unit), dtype=torch.bool)].mean()),
                      "halves_cos": float(halves)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
