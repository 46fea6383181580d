"""Many CounterFact edits in one MEMIT call: wall time, peak memory, quality.

    python benchmarks/batch.py --data ../shared/data/counterfact_rome_format_1000.json --n 100
    python benchmarks/batch.py --data ../shared/data/counterfact_rome_format_1000.json --n 1000
    python benchmarks/batch.py --data ... --offset 500 --n 100 --generated --answers answers.jsonl
"""

from __future__ import annotations

import json
import resource
import sys
import time

from bench_common import (
    add_generated_options,
    add_record_range,
    benchmark_parser,
    generated_row,
    json_object,
    load_editor,
    ready,
)


def _progress(stage: str, fraction: float) -> None:
    print(f"{time.strftime('%H:%M:%S')} {stage} {fraction:.3f}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = benchmark_parser(__doc__)
    add_record_range(parser, n=100, offset=0)
    parser.add_argument("--hparams", type=json_object, default={})
    parser.add_argument("--no-pre", action="store_true",
                        help="skip scoring the unedited model (BENCHMARKS.md has it for all 1,000 records)")
    add_generated_options(parser)
    args = parser.parse_args(argv)
    if not ready(args):
        return 2
    from suture.evaluation import load_counterfact, score_cases

    editor = load_editor(args)
    cases = load_counterfact(args.data, limit=args.n, offset=args.offset)
    from suture.editor.conflicts import without_clashes

    cases, clashes = without_clashes(cases)  # one call cannot make two targets of one key true
    for clash in clashes:
        print(f"left out record {clash.second}: same subject and prompt as record {clash.first}", file=sys.stderr)
    pre = None if args.no_pre else score_cases(editor.handle, cases)
    hparams = args.hparams
    # One-off statistics are not part of the edit's time.
    from suture.methods.memit import Memit

    resolved = Memit().resolve_hparams(editor.handle, hparams)
    editor.context.second_moment(resolved.layers, resolved.corpus)
    editor.context.templates(resolved.templates)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    result = editor.apply(cases, method="memit", progress=_progress, keep_failed=True, **hparams)
    seconds = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    post = score_cases(editor.handle, cases)
    generated = generated_row(editor, cases, args) if args.generated else None
    print(json.dumps({
        "n": len(cases), "seconds": seconds, "seconds_per_edit": seconds / len(cases),
        "peak_rss_mb": peak_mb, "rss_before_mb": rss_before / 1024,
        "pre": pre and {"efficacy": pre.efficacy, "paraphrase": pre.paraphrase, "neighborhood": pre.neighborhood},
        "post": {"efficacy": post.efficacy, "paraphrase": post.paraphrase, "neighborhood": post.neighborhood},
        "generated": generated, "offset": args.offset,
        "verdicts_passed": sum(v.passed for v in result.verdicts) / max(1, len(result.verdicts)),
        "details": result.details, "threads": args.threads,
    }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
