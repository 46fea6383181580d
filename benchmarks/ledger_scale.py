"""How much of a long run's summed update do its facts need? A saved session's edited weights set to
W₀ + s·(W - W₀) for each scale s, and scored as `sequential.py` scores a checkpoint: Efficacy / Paraphrase /
Neighborhood over every fact so far, drift (mean KL and top-1 agreement to the unedited model on the
reference text), and how many of the ledger's facts count as lapsed by either of `Editor.refresh`'s tests
(the old answer preferred again, "old_preferred"; the new one no longer greedy, "not_greedy"). No edit is
made; the weights are left as the session had them.

Each edit is written at the least scale that still takes it when made, plus a headroom (`least_write`);
later edits add to some facts' margins and take from others'. This measures what a whole-ledger shrink
would buy in drift (KL goes about as s²) against what it costs in the facts.

    python benchmarks/ledger_scale.py --data ../shared/data/counterfact_rome_format_1000.json \\
        --session /work/runs/state_250.pt --scales 1,0.97,0.94,0.9,0.85 --out scale_250.jsonl

One JSON line per scale; with --generated, the generated scores of a seeded sample of the facts at each.
"""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from pathlib import Path

from bench_common import add_generated_options, benchmark_parser, generated_row, load_editor, ready, session_cases


@contextmanager
def scaled_update(editor, scale: float):
    """Inside the block every parameter the edits touched is W₀ + scale·(W - W₀), head interventions' too
    (`Editor.consolidate` leaves those alone); restored exactly after, also when scaling fails half-way."""
    import torch

    saved: dict[int, tuple] = {}  # by the parameter's identity: a tied weight is scaled once
    try:
        with torch.no_grad():
            for key in editor.weights.touched:
                module, _, name = key.rpartition(".")
                param = getattr(editor.model.get_submodule(module), name)
                if id(param) in saved:
                    continue
                base = editor.weights.base_value(key).to(param.device, param.dtype)
                saved[id(param)] = (param, param.detach().clone())
                param.copy_(base + scale * (param - base))
        yield
    finally:
        with torch.no_grad():
            for param, value in saved.values():
                param.copy_(value)


def scale_rows(editor, cases, scales: list[float], pre_neighborhood: float | None = None, generated=None):
    """One row per scale (see the module docstring); with `generated` (the parsed arguments, with
    `generated_sample`), the generated scores of a seeded sample of the cases as well."""
    from sequential import generated_sample

    from suture.editor.refresh import held_facts, lapsed_requests
    from suture.evaluation import score_cases
    from suture.evaluation.drift import measure_drift

    facts = held_facts(editor.ledger)
    base_cache: dict = {}  # the unedited model's generated answers, the same at every scale
    for scale in scales:
        with scaled_update(editor, scale):
            scores = score_cases(editor.handle, cases)
            drift = measure_drift(editor)
            lapsed = {when: sum(lapsed_requests(editor, facts, when)) if facts else 0
                      for when in ("old_preferred", "not_greedy")}
            judged = generated_row(editor, generated_sample(cases, generated.generated_sample), generated,
                                   base_cache, edits=len(cases), tag={"scale": scale}) if generated is not None else {}
        row = {"scale": scale, "edits": len(cases), "efficacy": scores.efficacy, "paraphrase": scores.paraphrase,
               "neighborhood": scores.neighborhood, "drift_kl": drift.mean_kl,
               "top1_agreement": drift.top1_agreement, "facts": len(facts),
               "lapsed_old_preferred": lapsed["old_preferred"], "lapsed_not_greedy": lapsed["not_greedy"]}
        if pre_neighborhood is not None:
            row["neighborhood_drop"] = scores.neighborhood - pre_neighborhood
        yield {**row, **judged}


def main(argv: list[str] | None = None) -> int:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--session", type=Path, required=True, help="a session file saved by sequential.py --state")
    parser.add_argument("--offset", type=int, default=0, help="the session run's --offset (default 0)")
    parser.add_argument("--scales", default="1,0.97,0.94,0.9,0.85", help="comma-separated scales of the update")
    parser.add_argument("--skip-neighbors", action="store_true",
                        help="leave the neighborhood prompts out (most of the scoring's time; a shrink only "
                        "brings neighbors back)")
    add_generated_options(parser)
    parser.add_argument("--generated-sample", type=int, default=20,
                        help="with --generated: judge this many of the facts (seeded sample; default 20)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        scales = [float(s) for s in args.scales.split(",") if s.strip()]
    except ValueError:
        parser.error(f"--scales: comma-separated numbers, got {args.scales!r}")
    if not scales or any(not 0 <= s <= 2 for s in scales):
        parser.error("--scales: give one or more scales in [0, 2]")
    if not ready(args):
        return 2
    editor = load_editor(args)
    saved = editor.restore_session(args.session)
    applied = saved["applied"]
    cases = session_cases(args.data, saved, args.offset)
    if args.skip_neighbors:
        cases = [case.model_copy(update={"neighbors": [], "neighbor_answers": []}) for case in cases]
    pre = saved.get("pre_neighborhood")
    pre_ns = sum(pre[:applied]) / applied if pre and not args.skip_neighbors else None
    with args.out.open("w") as out:
        for row in scale_rows(editor, cases, scales, pre_ns, args if args.generated else None):
            out.write(json.dumps({**row, "session": str(args.session)}) + "\n")
            out.flush()
            print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
