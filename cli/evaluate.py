"""`suture eval`: evaluate a model (optionally with a ledger of edits re-applied) on edit cases and write
the report."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from suture.cli.common import (
    EXIT_OK,
    CliError,
    Timer,
    add_model_arguments,
    check_device,
    format_seconds,
    load_editor,
    output_dir,
)


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "eval", help="evaluate edits: efficacy, paraphrase, neighborhood, drift, norm growth",
        description="Score edit cases (CounterFact ROME/MEND schema, zsRE MEND schema, or suture JSONL) on a\n"
                    "model, before (base weights) and after the edits of --edits, and write a JSON report.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(parser)
    parser.add_argument("--data", required=True, metavar="FILE", help="edit cases to score")
    parser.add_argument("--edits", default=None, metavar="LEDGER",
                        help="a ledger export or a checkpoint's suture.json; its edits are re-applied first")
    parser.add_argument("--limit", type=int, default=None, metavar="N", help="score the first N cases only")
    parser.add_argument("--fluency", action="store_true", help="also measure fluency (greedy generations)")
    parser.add_argument("--no-generation", action="store_true",
                        help="skip the generated-answer evaluation (greedy answers judged; on by default)")
    parser.add_argument("--report", default=None, metavar="DIR", help="write report.json (and report.html) here")
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from suture.editor.ledger import replay_ledger
    from suture.evaluation import EvaluationOptions, evaluate, load_cases

    check_device(args.device)
    cases = load_cases(Path(args.data), limit=args.limit)
    ledger = None
    if args.edits is not None:
        path = Path(args.edits)
        if not path.is_file():
            raise CliError(f"--edits: {path} does not exist")
        try:
            ledger = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise CliError(f"--edits: {path} is not valid JSON ({exc.msg})") from None
    report_dir = output_dir("--report", args.report, empty=False)
    print(f"{len(cases)} case(s) from {args.data}")
    timer = Timer()
    editor, timer.seconds["load"] = load_editor(args.model, args.device, args.dtype)
    if ledger is not None:
        with timer("re-apply edits"):
            results = replay_ledger(editor, ledger)
        print(f"re-applied {len(results)} edit(s) from {args.edits}")
    with timer("evaluate"):
        report = evaluate(editor, cases, EvaluationOptions(fluency=args.fluency, generation=not args.no_generation))
    drop = report.neighborhood_drop
    print("teacher-forced (log-probability comparisons):")
    print(f"efficacy      {report.pre.efficacy:.3f} -> {report.post.efficacy:.3f}")
    if report.post.paraphrase is not None:
        print(f"paraphrase    {report.pre.paraphrase:.3f} -> {report.post.paraphrase:.3f}")
    if report.post.neighborhood is not None:
        print(f"neighborhood  {report.pre.neighborhood:.3f} -> {report.post.neighborhood:.3f} (drop {drop:.3f})")
    if report.drift is not None:
        print(f"drift         mean KL {report.drift.mean_kl:.5f}, top-1 agreement {report.drift.top1_agreement:.3f}, "
              f"perplexity {report.drift.perplexity_base:.2f} -> {report.drift.perplexity_edited:.2f}")
    gen = report.generated
    if gen is not None:
        def show(value):
            return "n/a" if value is None else f"{value:.3f}"

        print(f"generated     efficacy {show(gen.efficacy)}, paraphrase {show(gen.paraphrase)}, "
              f"chat {show(gen.chat)}, locality {show(gen.locality)}, portability {show(gen.portability)} "
              f"({gen.seconds_per_case:.2f} s/case; greedy answers judged, not teacher-forced)")
        if gen.fluency is not None:
            print(f"gen. fluency  entropy {gen.fluency.base_entropy:.3f} -> {gen.fluency.edited_entropy:.3f}, "
                  f"repetition {gen.fluency.base_repetition:.3f} -> {gen.fluency.edited_repetition:.3f}")
    if report.norm_growth:
        print(f"norm growth   max {report.max_norm_growth:+.4%} over {len(report.norm_growth)} weight(s)")
    if args.report:
        from suture.evaluation.html_report import write_report

        json_path, html_path = write_report(report, report_dir)
        print(f"report written to {json_path} and {html_path}")
    print(f"timing: {timer.summary()} (total {format_seconds(sum(timer.seconds.values()))})")
    return EXIT_OK
