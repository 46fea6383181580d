"""How much of a sequential run's drift is one shift common to every position? Restores a saved session
(`sequential.py --state`) and splits each edited module's output change on the drift reference text,
ΔW x_t, into its mean over positions (the common shift, a bias every token receives) and the rest.

    python benchmarks/drift_common_shift.py --data ../shared/data/counterfact_rome_format_1000.json \\
        --session /work/runs/seq_orth.state

Per edited module: the share of Σ_t ‖ΔW x_t‖² that the common shift carries. Then the drift KL (and top-1
agreement) to the base model three ways: the edited model as it is; with each module's common shift taken
out (the edits' position-specific part only); and the base model with only the common shifts added. Each
text's first position (the attention sink, whose keys are unlike the rest) is left out of the means and
the KL. No edit is made.
"""

from __future__ import annotations

import json
from collections import defaultdict

from bench_common import benchmark_parser, load_editor, ready


def main(argv: list[str] | None = None) -> int:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--session", required=True, help="a session file saved by sequential.py --state")
    args = parser.parse_args(argv)
    if not ready(args):
        return 2
    import torch

    from suture.evaluation.drift import default_reference_texts, token_log_probs

    editor = load_editor(args)
    extra = editor.restore_session(args.session)
    delta = defaultdict(lambda: 0)
    for entry in editor.ledger:
        for d in entry.deltas:
            delta[d.module] = delta[d.module] + d.materialize().float()
    modules = {name: editor.model.get_submodule(name) for name in delta}
    state = {"mask": None, "mode": None, "energy": defaultdict(lambda: [0.0, 0.0])}

    def inner(mask):  # valid positions after each text's first one
        first = mask.float().cumsum(1) == 1
        return mask.bool() & ~first

    def hook(name):
        def fn(module, inputs, output):
            if state["mode"] is None:
                return None
            change = inputs[0].float() @ delta[name].T.to(inputs[0].device)  # [b, t, d_out]
            keep = inner(state["mask"])[..., None].float()
            shift = (change * keep).sum((0, 1)) / keep.sum()
            if state["mode"] == "measure":
                state["energy"][name][0] += float((change ** 2 * keep).sum())
                state["energy"][name][1] += float((shift ** 2).sum() * keep.sum())
                return None
            sign = -1.0 if state["mode"] == "without" else 1.0
            return output + sign * shift.to(output.dtype)
        return fn

    handles = [m.register_forward_hook(hook(name)) for name, m in modules.items()]
    tok = editor.tokenizer
    totals = {k: [0.0, 0, 0] for k in ("edited", "without_common_shift", "only_common_shift")}
    with torch.no_grad():
        for text in default_reference_texts():
            batch = tok([text], return_tensors="pt").to(editor.handle.device)
            state["mask"] = batch["attention_mask"]
            keep = inner(batch["attention_mask"])
            state["mode"] = None
            with editor.weights.base_weights():
                base = token_log_probs(editor, batch)
                state["mode"] = "only"
                only = token_log_probs(editor, batch)
            state["mode"] = "measure"
            edited = token_log_probs(editor, batch)
            state["mode"] = "without"
            without = token_log_probs(editor, batch)
            for key, other in (("edited", edited), ("without_common_shift", without), ("only_common_shift", only)):
                kl = (base.exp() * (base - other)).sum(-1)[keep]
                agree = (base.argmax(-1) == other.argmax(-1))[keep]
                totals[key][0] += float(kl.sum())
                totals[key][1] += int(agree.sum())
                totals[key][2] += int(keep.sum())
    for h in handles:
        h.remove()
    print(json.dumps({
        "session": args.session, "edits": extra.get("applied"),
        "common_shift_energy_share": {name: round(e[1] / e[0], 4) for name, e in state["energy"].items()},
        **{key: {"drift_kl": t[0] / t[2], "top1_agreement": t[1] / t[2]} for key, t in totals.items()}}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
