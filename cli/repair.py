"""`suture repair`: find the fewest attention heads whose change repairs a failure family, apply that
repair, and optionally save the repaired checkpoint (the search is `suture.repair`)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from suture.cli.common import (
    EXIT_CHECK_FAILED,
    EXIT_OK,
    CliError,
    add_model_arguments,
    load_editor,
    output_dir,
    output_file,
)

EPILOG = """\
FAILING.jsonl has one failure per line: the failing prompt, the answer it should give, and a working twin
(the same question in a form the model gets right), e.g.
  {"prompt": "Q: Complete the sentence. The capital of France is\\nA: The capital of France is",
   "answer": "Paris", "twin": "The capital of France is"}
LOCALITY.txt has one unrelated prompt per line whose next token must not change (it judges the search);
KEEP.txt (remap and tune, optional) more such prompts, kept while fitting (remap: their head outputs;
tune: their next-token distributions).
Exit codes: 0 a repair was found (and saved with --out), 1 none reached the target, 2 bad input."""


# --kind -> the strategy's field that --alphas fills (the values tried)
VALUES_FIELD = {"remap": "preservations", "tune": "preservations", "scale": "factors", "steer": "alphas"}


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "repair", help="find and apply a minimal attention-head repair for a family of failing prompts",
        description="Rank heads by activation patching from working twins into failing prompts, grow the set\n"
                    "in rank order with several strengths, choose the smallest set that fixes --target of\n"
                    "the failures within the locality budget (the search tries two sizes past it, so the\n"
                    "curve in --report shows the threshold), apply it, and save with --out.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(parser)
    parser.add_argument("--failing", required=True, metavar="FAILING.jsonl")
    parser.add_argument("--locality", required=True, metavar="LOCALITY.txt")
    parser.add_argument("--max-heads", type=int, default=16, help="largest head set tried (default: 16)")
    parser.add_argument("--kind", choices=["remap", "tune", "scale", "steer"], default="remap",
                        help="remap: a least-squares map of each head's output from the failing context to the "
                             "twin's, keeping ordinary text (--alphas are preservation weights); tune: the same form "
                             "of map fit by gradient on the answers, keeping the twins' and KEEP's next tokens and "
                             "ordinary text (--alphas are preservation weights); scale: multiply the "
                             "heads' outputs by each --alphas value (0 ablates); steer: add alpha x (mean on twins - "
                             "mean on failures) to them (default: remap)")
    parser.add_argument("--alphas", default=None,
                        help="values tried: remap preservation weights (default 10,5,3,2), tune preservation "
                             "weights (default 10,3,1), scale factors "
                             "(default 0,0.5,1.5,2), steer strengths (default 0.5,1,2)")
    parser.add_argument("--keep", default=None, metavar="KEEP.txt",
                        help="remap, tune: more prompts to keep as they are")
    parser.add_argument("--target", type=float, default=0.9, help="fraction of failures to fix (default: 0.9)")
    parser.add_argument("--min-unchanged", type=float, default=0.95,
                        help="fraction of locality prompts whose top-1 must not change (default: 0.95)")
    parser.add_argument("--out", default=None, metavar="DIR", help="save the repaired checkpoint here")
    parser.add_argument("--report", default=None, metavar="FILE.json", help="write the search curve and plan")
    parser.set_defaults(run=run)
    return parser


def _read_failures(path: Path) -> tuple[list[str], list[str], list[str]]:
    from suture.editor.jsonl import iter_jsonl

    if not path.is_file():
        raise CliError(f"--failing: {path} does not exist")
    prompts, answers, twins = [], [], []
    for number, record in iter_jsonl(path):
        if not isinstance(record, dict):
            raise CliError(f"{path}:{number}: each line must be a JSON object with 'prompt', 'answer' and 'twin', "
                           f"got {type(record).__name__}")
        unknown = sorted(set(record) - {"prompt", "answer", "twin"})
        if unknown:
            raise CliError(f"{path}:{number}: unknown field(s) {unknown}; each line has 'prompt', 'answer' and 'twin'")
        for field in ("prompt", "answer", "twin"):
            if not isinstance(record.get(field), str) or not record[field].strip():
                raise CliError(f"{path}:{number}: field '{field}' must be a non-empty string")
        prompts.append(record["prompt"])
        answers.append(record["answer"])
        twins.append(record["twin"])
    if not prompts:
        raise CliError(f"--failing: {path} holds no failures")
    return prompts, answers, twins


def run(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from suture.repair import RepairConfig, apply_plan, search_repair

    prompts, answers, twins = _read_failures(Path(args.failing))
    locality_path = Path(args.locality)
    if not locality_path.is_file():
        raise CliError(f"--locality: {locality_path} does not exist")
    locality = [line for line in locality_path.read_text().splitlines() if line.strip()]
    if not locality:
        raise CliError(f"--locality: {locality_path} holds no prompts")
    keep = []
    if args.keep:
        keep_path = Path(args.keep)
        if not keep_path.is_file():
            raise CliError(f"--keep: {keep_path} does not exist")
        keep = [line for line in keep_path.read_text().splitlines() if line.strip()]
    strategy: dict = {"kind": args.kind}
    if args.alphas is not None:
        try:
            strategy[VALUES_FIELD[args.kind]] = [float(a) for a in args.alphas.split(",")]
        except ValueError:
            raise CliError(f"--alphas: {args.alphas!r} is not a comma-separated list of numbers") from None
    if keep:
        strategy["keep"] = keep
    if args.max_heads < 1:
        raise CliError("--max-heads must be at least 1")
    try:
        config = RepairConfig(strategy=strategy, max_heads=args.max_heads, target_fixed=args.target,
                              min_unchanged=args.min_unchanged)
    except ValidationError as exc:
        flags = {VALUES_FIELD[args.kind]: "--alphas", "keep": "--keep", "max_heads": "--max-heads",
                 "target_fixed": "--target", "min_unchanged": "--min-unchanged"}
        def flag(loc: tuple) -> str:
            return next((flags[str(part)] for part in loc if str(part) in flags), "--kind")

        raise CliError("; ".join(f"{flag(e['loc'])}: {e['msg']}" for e in exc.errors())) from None

    out = output_dir("--out", args.out)
    report = output_file("--report", args.report)
    editor, _ = load_editor(args.model, args.device, args.dtype)
    search, _ = search_repair(editor, prompts, answers, twins, locality, config,
                              progress=lambda line: print(line, flush=True))
    if report is not None:
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text(json.dumps(search.model_dump(), indent=1))
    if not search.reached_target:
        best = f" (the best found fixed {search.chosen_point.fixed:.1%})" if search.chosen_point else ""
        print(f"no set of at most {args.max_heads} heads fixed {args.target:.0%} of the failures within the "
              f"locality budget{best}")
        return EXIT_CHECK_FAILED
    point, plan = search.chosen_point, search.chosen
    print(f"repair: {len(plan.heads)} head(s) [{plan.describe()}]: fixed "
          f"{point.fixed:.1%} of the failures, top-1 unchanged on {point.unchanged:.1%} of the locality prompts")
    apply_plan(editor, search.chosen)
    if out is not None:
        saved = editor.save(out)
        print(f"saved the repaired checkpoint to {saved}")
    return EXIT_OK
