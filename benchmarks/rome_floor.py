"""ROME's seconds per edit against its floor: the value optimization's steps times one forward and
backward pass of the blocks from the edited layer up, over the rewrite (templates x prompt) and KL rows.

    python benchmarks/rome_floor.py --data ../shared/data/counterfact_rome_format_1000.json --n 10

Per record: the wall time of `Editor.apply` (after a warm-up edit that pays the one-off statistics and
templates), the number of optimization steps it took, and the time of one step's unavoidable work
measured on its own on the same rows (the suffix blocks forward with a δ that needs a gradient, logits at
the target and KL positions, backward; best of three). floor = steps x that time; ratio = edit / floor.
The remainder is the edit's fixed work: the recorded full forward pass, keys, the C⁻¹k solve, the update.
"""

from __future__ import annotations

import json
import statistics
import sys
import time

import torch
from bench_common import benchmark_parser, json_object, load_editor, ready


def step_seconds(handle, layer: int, request, templates: list[str], kl_prompt: str) -> float:
    """Best-of-three time of one optimization step's forward + backward of blocks layer.. on the edit's rows."""
    from suture.editor.kv.suffix import SuffixRunner
    from suture.editor.kv.value_layout import value_layout

    batch, lay = value_layout(handle.tokenizer, [request], templates, kl_prompt)
    runner = SuffixRunner(handle, layer, batch)
    mlp_out = handle.model.get_submodule(handle.sites.mlp_out_path(layer))
    delta = torch.zeros(runner.start_hidden.shape[-1], requires_grad=True)
    times = []
    for _ in range(3):
        started = time.perf_counter()
        hook = mlp_out.register_forward_hook(lambda _m, _a, out: out + delta)
        try:
            normed = runner.run()
        finally:
            hook.remove()
        logits = runner.logits_at(normed, torch.cat([lay.target_rows, lay.kl_rows]),
                                  torch.cat([lay.target_cols, batch.subject_last[lay.kl_rows]]))
        torch.log_softmax(logits, -1).mean().backward()
        times.append(time.perf_counter() - started)
        delta.grad = None
    return min(times)


def main(argv: list[str] | None = None) -> int:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--n", type=int, default=10)
    parser.add_argument("--hparams", type=json_object, default={}, help="JSON overrides of ROME's hyperparameters")
    args = parser.parse_args(argv)
    if not ready(args):
        return 2
    from suture.evaluation import load_counterfact
    from suture.methods.rome.hparams import RomeHParams, default_layer

    editor = load_editor(args)
    handle = editor.handle
    overrides = args.hparams
    hp = RomeHParams(**{"layer": default_layer(handle.sites.family, handle.n_layers), **overrides})
    templates = editor.context.templates(hp.templates)
    cases = load_counterfact(args.data, limit=args.n + 1)
    editor.apply([cases[0]], method="rome", **overrides)  # warm-up: statistics, templates
    editor.revert()
    rows = []
    for case in cases[1:]:
        started = time.perf_counter()
        result = editor.apply([case], method="rome", **overrides)
        edit = time.perf_counter() - started
        editor.revert()
        steps = result.details["value_steps"]
        steps = steps[0] if isinstance(steps, list) else steps  # one group: its steps
        step = step_seconds(handle, hp.layer, case, templates, hp.objective.kl_prompt)
        rows.append({"edit_s": edit, "steps": steps, "step_floor_s": step, "floor_s": steps * step,
                     "ratio": edit / (steps * step)})
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    print(json.dumps({"n": len(rows), "layer": hp.layer, "threads": args.threads,
                      "median_edit_s": statistics.median(r["edit_s"] for r in rows),
                      "median_floor_s": statistics.median(r["floor_s"] for r in rows),
                      "median_ratio": statistics.median(r["ratio"] for r in rows), "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
