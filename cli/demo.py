"""`suture demo`: edit three facts in SmolLM2 (offline), show what changed and what did not, then revert
all three and check that the original answers and weights are back."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from suture.cli.common import (
    EXIT_CHECK_FAILED,
    EXIT_OK,
    CliError,
    Timer,
    add_hparams_argument,
    add_model_arguments,
    edit_progress,
    first_word,
    format_seconds,
    load_editor,
    load_hparams,
    says,
    short,
)

DEFAULT_MODEL = "smollm2-135m"

# Facts SmolLM2-135M answers correctly, each rewritten to a wrong answer. The paraphrase should follow the
# edit; the neighbors (other subjects, some sharing the true answer) should keep their answers.
DEMO_EDITS: list[dict] = [
    {
        "prompt": "The mother tongue of {} is", "subject": "Danielle Darrieux",
        "target_new": "English", "target_true": "French",
        "paraphrases": ["Danielle Darrieux's native language is"],
        "neighbors": ["The mother tongue of Jacques Chirac is", "The mother tongue of Vladimir Putin is"],
    },
    {
        "prompt": "The capital of {} is", "subject": "France",
        "target_new": "Rome", "target_true": "Paris",
        "paraphrases": ["The capital city of France is"],
        "neighbors": ["The capital of Germany is", "The capital of Japan is"],
    },
    {
        "prompt": "{} is located in the city of", "subject": "The Eiffel Tower",
        "target_new": "London", "target_true": "Paris",
        "paraphrases": ["The Eiffel Tower can be found in"],
        "neighbors": ["The Colosseum is located in the city of", "The Louvre is located in the city of"],
    },
]

PROMPT_WIDTH = 44
ANSWER_WIDTH = 26


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "demo", help="edit three facts in SmolLM2, show the effect, revert",
        description="Load SmolLM2 offline, show its answers to a few fact prompts, apply three ROME edits (one "
                    "apply() call each), show the rewritten prompts, paraphrases and neighbor prompts before and "
                    "after, then revert the three edits and check that the original answers come back.")
    add_model_arguments(parser, default_model=DEFAULT_MODEL)
    parser.add_argument("--method", default="rome", help="editing method (default: rome)")
    add_hparams_argument(parser)
    parser.add_argument("--max-new-tokens", type=int, default=6, metavar="N",
                        help="tokens generated per answer (default: 6)")
    parser.add_argument("--no-service", action="store_true",
                        help="skip the last step (the same kind of edit as a job through the REST API and Ray)")
    parser.set_defaults(run=run)
    return parser


@dataclass
class Probe:
    """One prompt of the demo and its answers at each stage."""

    edit: int  # index into DEMO_EDITS
    kind: str  # "rewrite", "paraphrase" or "neighbor"
    prompt: str
    before: str = ""
    after: str = ""
    reverted: str = ""


def _probes(requests) -> list[Probe]:
    probes = []
    for i, request in enumerate(requests):
        probes.append(Probe(i, "rewrite", request.text))
        probes += [Probe(i, "paraphrase", p) for p in request.paraphrases]
        probes += [Probe(i, "neighbor", p) for p in request.neighbors]
    return probes


def _row(prompt: str, *cells: str) -> str:
    return f"    {short(prompt, PROMPT_WIDTH):<{PROMPT_WIDTH}}  " + "  ".join(cells)


def _verdict(probe: Probe, target_new: str) -> str:
    if probe.kind == "neighbor":
        if probe.after == probe.before:
            return "kept"
        return "kept answer, rest differs" if _same_answer(probe) else "CHANGED"
    if says(probe.after, target_new):
        return "new target"
    return "unchanged" if _same_answer(probe) else "changed, not to the target"


def _same_answer(probe: Probe) -> bool:
    return first_word(probe.after) == first_word(probe.before)


def _weights_restored(editor) -> tuple[int, list[str]]:
    """Touched parameters checked against the base copies the WeightBook keeps; returns (count, mismatches)."""
    import torch

    touched = editor.weights.touched
    bad = [key for key in touched
           if not torch.equal(editor.model.get_parameter(key).detach(), editor.weights.base_value(key))]
    return len(touched), bad


def run(args: argparse.Namespace) -> int:
    from suture.editor.paths import suture_home
    from suture.editor.registry import get_method
    from suture.editor.requests import parse_requests

    hparams = load_hparams(args.hparams)
    get_method(args.method)
    if args.max_new_tokens < 1:
        raise CliError("--max-new-tokens must be at least 1")
    requests = parse_requests(DEMO_EDITS)
    probes = _probes(requests)
    timer = Timer()
    n = len(requests)

    print(f"suture demo: {n} fact edits on {args.model} with {args.method}, checked, then reverted\n")

    print("[1/6] Loading the model")
    editor, timer.seconds["load"] = load_editor(args.model, args.device, args.dtype)

    print(f"\n[2/6] The model's greedy answers before editing ({args.max_new_tokens} new tokens)")
    with timer("answers before"):
        answers = editor.generate([p.prompt for p in probes], max_new_tokens=args.max_new_tokens)
    for probe, answer in zip(probes, answers, strict=True):
        probe.before = answer
        print(_row(probe.prompt, short(answer, 40)))
    for request, probe in zip(requests, [p for p in probes if p.kind == "rewrite"], strict=True):
        if request.target_true and not says(probe.before, request.target_true):
            print(f"  note: the model does not answer {request.target_true!r} to {request.text!r}")

    print(f"\n[3/6] Applying {n} edits with {args.method}, one apply() call each")
    print(f"  The first edit on a model whose key statistics are not cached yet samples a text corpus from the "
          f"model\n  (128 texts, about 16k tokens, for ROME) and measures them, once; later runs read them from "
          f"{suture_home()}.")
    results = []
    for i, request in enumerate(requests, 1):
        was = f" (was {request.target_true})" if request.target_true else ""
        print(f"  edit {i}/{n}: {request.text} -> {request.target_new}{was}", flush=True)
        with timer(f"edit {i}"), edit_progress(desc=f"  edit {i}/{n}") as progress:
            result = editor.apply(request, method=args.method, progress=progress, **hparams)
        results.append(result)
        deltas = ", ".join(f"{d.module} (norm {d.norm:.3g})" for d in result.deltas)
        prob = result.details.get("target_prob")
        prob = f", target probability {prob[0]:.2f}" if isinstance(prob, list) and prob else ""
        print(f"    done in {format_seconds(timer.seconds[f'edit {i}'])}: edit {result.id} changed {deltas}{prob}"
              f", verdict: {result.status}")

    print(f"\n[4/6] Answers after the {n} edits (before -> after)")
    with timer("answers after"):
        answers = editor.generate([p.prompt for p in probes], max_new_tokens=args.max_new_tokens)
    for probe, answer in zip(probes, answers, strict=True):
        probe.after = answer
    for i, request in enumerate(requests):
        print(f"  edit {i + 1}: {request.text} -> {request.target_new}")
        for probe in (p for p in probes if p.edit == i):
            cells = (f"{probe.kind:<10}", f"{short(probe.before, ANSWER_WIDTH):<{ANSWER_WIDTH}}", "->",
                     f"{short(probe.after, ANSWER_WIDTH):<{ANSWER_WIDTH}}", f"[{_verdict(probe, request.target_new)}]")
            print(_row(probe.prompt, *cells))

    print(f"\n[5/6] Reverting the {n} edits")
    with timer("revert"):
        undone = editor.revert(n)
    print(f"  revert({n}) undid edits {', '.join(r.id for r in undone)} "
          f"in {format_seconds(timer.seconds['revert'])}; {len(editor.ledger)} edit(s) left in the ledger")
    with timer("answers reverted"):
        answers = editor.generate([p.prompt for p in probes], max_new_tokens=args.max_new_tokens)
    for probe, answer in zip(probes, answers, strict=True):
        probe.reverted = answer
    differing = [p for p in probes if p.reverted != p.before]
    answers_ok = not differing
    print(f"  check: {len(probes) - len(differing)}/{len(probes)} answers identical to the originals: "
          f"{'OK' if answers_ok else 'FAILED'}")
    for probe in differing:
        print(_row(probe.prompt, f"original {short(probe.before)!r}, now {short(probe.reverted)!r}"))
    n_touched, bad = _weights_restored(editor)
    weights_ok = not bad
    print(f"  check: {n_touched - len(bad)}/{n_touched} touched parameter(s) equal to the base weights bit for bit: "
          f"{'OK' if weights_ok else 'FAILED (' + ', '.join(bad) + ')'}")

    service_ok = True
    if not args.no_service:
        from suture.cli.demo_service import run_service_demo

        print("\n[6/6] The first edit again, as a job through the service (REST API, SQLite, a local Ray worker)")
        with timer("service job"):
            # The job keeps a failed edit exactly when the in-process edit above was kept failed ("partial").
            kept = True if results and results[0].status == "partial" else None
            service_ok = run_service_demo(args.model, DEMO_EDITS[0], args.method, hparams, keep_failed=kept)

    by_kind = {kind: [p for p in probes if p.kind == kind] for kind in ("rewrite", "paraphrase", "neighbor")}
    targets = {i: r.target_new for i, r in enumerate(requests)}
    print("\nSummary")
    print(f"  rewritten prompts answering the new target:  "
          f"{sum(says(p.after, targets[p.edit]) for p in by_kind['rewrite'])}/{len(by_kind['rewrite'])}")
    print(f"  paraphrases answering the new target:        "
          f"{sum(says(p.after, targets[p.edit]) for p in by_kind['paraphrase'])}/{len(by_kind['paraphrase'])}")
    neighbors = by_kind["neighbor"]
    print(f"  neighbor prompts keeping their answer:       {sum(map(_same_answer, neighbors))}/{len(neighbors)} "
          f"(first word; identical continuation: {sum(p.after == p.before for p in neighbors)}/{len(neighbors)})")
    print(f"  revert({n}) restored answers and weights:     {'yes' if answers_ok and weights_ok else 'NO'}")
    if not args.no_service:
        print(f"  the same edit as a service job:              {'succeeded' if service_ok else 'FAILED'}")
    print("  timings:")
    for name, seconds in timer.seconds.items():
        print(f"    {name:<18} {format_seconds(seconds):>12}")
    print(f"    {'total':<18} {format_seconds(sum(timer.seconds.values())):>12}")
    return EXIT_OK if answers_ok and weights_ok and service_ok else EXIT_CHECK_FAILED
