"""A real failure family of SmolLM2 repaired with attention heads: the model completes a fact in plain
form ("Vinson Massif is located in the continent of" -> " Antarctica") but not when the same sentence is
the answer line of a Q&A format ("Q: Complete the sentence. <s>\\nA: <s>" -> a newline).

    python benchmarks/head_repair.py --data ../shared/data/known_1000.json --out-dir docs/head_repair

1. The family: known_1000 facts whose plain prompt SmolLM2 answers right (top-1 = the attribute's first
   token) and whose Q&A form it gets wrong. Split by a seeded shuffle into prompts that choose heads and
   strength (--train) and held-out prompts that judge the repair.
2. Localize: head attribution (patching each head from the plain twin into the Q&A prompt), PNG heatmap.
3. Minimal-repair search (suture.repair): success curve against the number of heads.
4. Judge on held-out prompts: fraction fixed; locality on the other known_1000 prompts (plain form, facts not
   in the family): top-1 unchanged and mean KL; the repaired checkpoint is saved and reloaded with stock
   transformers, and its outputs compared with the in-memory ones.
"""

from __future__ import annotations

import json
import random
import sys
import tempfile
import time
from pathlib import Path

from bench_common import benchmark_parser, load_editor, ready

QA_FORMAT = "Q: Complete the sentence. {prompt}\nA: {prompt}"


def build_family(editor, facts: list[dict], batch_size: int = 32):
    from suture.methods.localize.last_token import last_token_logprobs
    from suture.repair import answer_tokens

    right = answer_tokens(editor, [f["prompt"] for f in facts], [f["attribute"] for f in facts])
    plain = last_token_logprobs(editor.handle, [f["prompt"] for f in facts], batch_size).argmax(-1)
    known = [i for i in range(len(facts)) if plain[i] == right[i]]
    qa = last_token_logprobs(editor.handle, [QA_FORMAT.format(prompt=facts[i]["prompt"]) for i in known],
                             batch_size).argmax(-1)
    failing = [i for i, top in zip(known, qa.tolist()) if top != right[i]]
    return known, failing


def plot_curve(curve, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    sizes = [p.n_heads for p in curve]
    ax.plot(sizes, [p.fixed for p in curve], marker="o", label="failures fixed (train)")
    ax.plot(sizes, [p.unchanged for p in curve], marker="s", label="locality: top-1 unchanged")
    ax.axhline(0.8, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("heads")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title("SmolLM2 Q&A-format repair: success vs heads intervened on")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--train", type=int, default=60, help="failing prompts used to choose heads and strength")
    parser.add_argument("--max-heads", type=int, default=27, help="at most this many heads (10%% of SmolLM2's 270)")
    parser.add_argument("--kind", choices=["steer", "scale", "remap", "tune"], default="remap",
                        help="remap: least-squares map of each head's output (head-remap); tune: the same form of "
                        "map fit by gradient on the answers (head-tune); scale: multiply the heads' "
                        "outputs (0 ablates); steer: add alpha x a mean difference")
    parser.add_argument("--alphas", default="100,30,10,3,1",
                        help="preservation weights (remap, tune), factors (scale) or strengths (steer)")
    parser.add_argument("--gains", default="1",
                        help="remap: gains g tried at each size (the failing outputs are sent to U + g (D - U))")
    parser.add_argument("--candidates", choices=["helping", "abs"], default="helping",
                        help="remap: candidate heads, those whose patch from the twin helps or all by |effect|")
    parser.add_argument("--attribution", default=None, help="reuse a head_attribution.json of an earlier run")
    parser.add_argument("--plan", default=None, help="judge this RepairPlan JSON on held-out prompts (no search)")
    parser.add_argument("--min-unchanged", type=float, default=0.97,
                        help="locality budget during the search (top-1 unchanged on the sample)")
    parser.add_argument("--locality-sample", type=int, default=200, help="unrelated prompts used during search")
    parser.add_argument("--keep", type=int, default=200,
                        help="remap, tune: unrelated prompts the fit keeps (not used to judge)")
    parser.add_argument("--sizes", default=None, help="remap: set sizes to try, e.g. 9,18,27 (default: a schedule)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out-dir", default="head_repair")
    args = parser.parse_args(argv)
    if not ready(args):
        return 2
    import torch
    from transformers import AutoModelForCausalLM

    from suture.methods.localize import HeadAttribution, save_head_heatmap
    from suture.methods.localize.last_token import last_token_logprobs
    from suture.repair import (
        RepairConfig,
        answer_tokens,
        apply_plan,
        fixed_fraction,
        parse_plan,
        rank_heads,
        search_repair,
    )
    from suture.repair.grow import SIZES

    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    editor = load_editor(args)
    facts = json.loads(Path(args.data).read_text())
    known, failing = build_family(editor, facts)
    rng = random.Random(args.seed)
    rng.shuffle(failing)
    train, held_out = failing[: args.train], failing[args.train:]
    in_family = set(known)
    unrelated = [f["prompt"] for i, f in enumerate(facts) if i not in in_family]
    # The search selects against a sample of unrelated prompts; locality is judged on the others.
    # remap also keeps the head outputs of other unrelated prompts; neither set judges locality.
    sample = rng.sample(unrelated, min(args.locality_sample, len(unrelated) // 3))
    searched = set(sample)
    rest = [u for u in unrelated if u not in searched]
    keep = rng.sample(rest, min(args.keep, len(rest) // 2)) if args.kind in ("remap", "tune") else []
    kept = set(keep)
    judged = [u for u in rest if u not in kept]
    print(f"{len(facts)} facts; {len(known)} answered right in plain form; {len(failing)} of those fail in the "
          f"Q&A form -> {len(train)} to choose the repair, {len(held_out)} held out; {len(unrelated)} unrelated "
          f"({len(sample)} used by the search, {len(keep)} kept by the remap, {len(judged)} judge locality)")

    def qa(ids):
        return [QA_FORMAT.format(prompt=facts[i]["prompt"]) for i in ids]

    def answers(ids):
        return [facts[i]["attribute"] for i in ids]

    result = {"command": "python benchmarks/head_repair.py " + " ".join(argv or sys.argv[1:]),
              "facts": len(facts), "known_plain": len(known), "family": len(failing), "train": len(train),
              "held_out": len(held_out), "unrelated": len(unrelated), "locality_search_sample": len(sample),
              "locality_kept": len(keep),
              "locality_judged": len(judged)}
    if args.plan:
        plan = parse_plan(Path(args.plan).read_text())
        search = None
    else:
        if args.attribution:
            attribution = HeadAttribution.model_validate_json(Path(args.attribution).read_text())
        else:
            attribution = rank_heads(editor, qa(train), answers(train), [facts[i]["prompt"] for i in train])
        (out / "head_attribution.json").write_text(attribution.model_dump_json())
        save_head_heatmap(attribution, out / "head_attribution.png")
        values = [float(a) for a in args.alphas.split(",")]
        strategy = {"steer": {"kind": "steer", "alphas": values}, "scale": {"kind": "scale", "factors": values},
                    "remap": {"kind": "remap", "preservations": values, "keep": keep,
                              "gains": [float(g) for g in args.gains.split(",")], "candidates": args.candidates,
                              "sizes": [int(x) for x in args.sizes.split(",")] if args.sizes else None},
                    "tune": {"kind": "tune", "preservations": values, "keep": keep, "candidates": args.candidates,
                             "sizes": [int(x) for x in args.sizes.split(",")] if args.sizes else None}}[args.kind]
        config = RepairConfig(strategy=strategy, max_heads=args.max_heads, target_fixed=0.9,
                              min_unchanged=args.min_unchanged)
        search, attribution = search_repair(editor, qa(train), answers(train), [facts[i]["prompt"] for i in train],
                                            sample, config, attribution=attribution)
        plot_curve(search.curve, out / "repair_curve.png")
        plan = search.chosen
        result.update(curve=[p.model_dump() for p in search.curve], top_heads=attribution.ranking("signed")[:15],
                      reached_target_on_train=search.reached_target)
        if plan is not None:
            (out / "plan.json").write_text(plan.model_dump_json())
    if plan is None:
        print("no head improved the training prompts within the locality budget")
        (out / "result.json").write_text(json.dumps(result, indent=1))
        return 1

    base_unrelated = last_token_logprobs(editor.handle, judged)
    held_right = answer_tokens(editor, qa(held_out), answers(held_out))
    held_before = fixed_fraction(editor, qa(held_out), held_right)
    twins_before = fixed_fraction(editor, [facts[i]["prompt"] for i in held_out], held_right)
    # The held-out curve: prefixes of the plan (sizes on the search's schedule) judged on held-out failures and
    # the unrelated prompts the search did not see.
    held_curve = []
    schedule = [int(x) for x in args.sizes.split(",")] if args.sizes else SIZES
    for size in sorted({s for s in schedule if s < len(plan.heads)} | {len(plan.heads)}):
        prefix = plan.prefix(size)
        added = apply_plan(editor, prefix)
        now = last_token_logprobs(editor.handle, judged)
        held_curve.append({"n_heads": size, "held_out_fixed": fixed_fraction(editor, qa(held_out), held_right),
                           "locality_unchanged": float((now.argmax(-1) == base_unrelated.argmax(-1)).double().mean()),
                           "locality_mean_kl": float((base_unrelated.exp() * (base_unrelated - now)).sum(-1).mean())})
        print(json.dumps(held_curve[-1]), flush=True)
        editor.revert(added)
    result["held_out_curve"] = held_curve
    apply_plan(editor, plan)
    held_after = fixed_fraction(editor, qa(held_out), held_right)
    twins_after = fixed_fraction(editor, [facts[i]["prompt"] for i in held_out], held_right)
    now = last_token_logprobs(editor.handle, judged)
    unchanged = float((now.argmax(-1) == base_unrelated.argmax(-1)).double().mean())
    mean_kl = float((base_unrelated.exp() * (base_unrelated - now)).sum(-1).mean())
    n_heads_total = editor.handle.n_layers * editor.handle.sites.head_layout(editor.model.config).n_heads
    result.update(heads=plan.heads, kind=plan.kind, n_heads=len(plan.heads),
                  plan={k: v for k, v in plan.model_dump().items()
                        if k in ("alpha", "factors", "preservation", "gain")},
                  heads_total=n_heads_total,
                  held_out_fixed_before=held_before, held_out_fixed=held_after,
                  twins_right_before=twins_before, twins_right_after=twins_after,
                  locality_unchanged=unchanged, locality_mean_kl=mean_kl)

    # The repaired checkpoint, reloaded by stock transformers, must give the same outputs.
    with tempfile.TemporaryDirectory() as tmp:
        path = editor.save(Path(tmp) / "repaired")
        reloaded = AutoModelForCausalLM.from_pretrained(path).eval()
        probe = editor.tokenizer(qa(held_out[:8]), return_tensors="pt", padding=True, padding_side="left")
        with torch.no_grad():
            diff = (reloaded(**probe).logits - editor.model(**probe).logits).abs().max()
        result["reload_max_logit_diff"] = float(diff)
    result["seconds"] = time.perf_counter() - started
    (out / "result.json").write_text(json.dumps(result, indent=1))
    print(json.dumps({k: v for k, v in result.items() if k not in ("curve", "top_heads")}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
