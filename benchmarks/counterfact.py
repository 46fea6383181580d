"""CounterFact edits one at a time from the unedited model: pre/post Efficacy, Paraphrase, Neighborhood
and seconds per edit.

    python benchmarks/counterfact.py --data ../shared/data/counterfact_rome_format_1000.json --n 100 --method rome
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

from bench_common import add_method_options, add_record_range, benchmark_parser, load_editor, ready


def main(argv: list[str] | None = None) -> int:
    parser = benchmark_parser(__doc__)
    add_record_range(parser, n=100, offset=0)
    add_method_options(parser, "rome")
    parser.add_argument("--out", help="write per-case results as JSON here")
    args = parser.parse_args(argv)
    if not ready(args):
        return 2

    from suture.evaluation import load_counterfact, score_cases

    hparams = args.hparams  # parsed by add_method_options
    editor = load_editor(args)
    cases = load_counterfact(args.data, limit=args.n, offset=args.offset)
    pre = score_cases(editor.handle, cases)

    # Warm-up edit: one-off work (key statistics, corpus, context templates) is excluded from timings.
    started = time.perf_counter()
    editor.apply([cases[0]], method=args.method, keep_failed=True, **hparams)
    editor.revert()
    warmup = time.perf_counter() - started

    seconds, post_cases, details = [], [], []
    for i, case in enumerate(cases):
        t0 = time.perf_counter()
        result = editor.apply([case], method=args.method, keep_failed=True, **hparams)
        seconds.append(time.perf_counter() - t0)
        post_cases.append(score_cases(editor.handle, [case]).cases[0])
        details.append(result.details)
        editor.revert()
        done = post_cases
        print(f"[{i + 1}/{len(cases)}] {seconds[-1]:.1f}s  ES {sum(c.efficacy for c in done) / len(done):.3f}  "
              f"PS {sum(c.paraphrase for c in done) / len(done):.3f}  "
              f"NS {sum(c.neighborhood for c in done) / len(done):.3f}", file=sys.stderr, flush=True)

    def mean(key: str) -> float:
        return sum(getattr(c, key) for c in post_cases) / len(post_cases)

    summary = {
        "model": args.model, "method": args.method, "n": len(cases), "offset": args.offset, "hparams": hparams,
        "resolved_hparams": result.hparams, "threads": args.threads,
        "pre": {"efficacy": pre.efficacy, "paraphrase": pre.paraphrase, "neighborhood": pre.neighborhood},
        "post": {"efficacy": mean("efficacy"), "paraphrase": mean("paraphrase"), "neighborhood": mean("neighborhood")},
        "seconds_per_edit": {"median": statistics.median(seconds), "mean": statistics.fmean(seconds),
                             "max": max(seconds)},
        "warmup_seconds": warmup,
    }
    print(json.dumps({k: v for k, v in summary.items() if k != "resolved_hparams"}, indent=2))
    print(f"\n| | Efficacy | Paraphrase | Neighborhood |\n|---|---|---|---|\n"
          f"| pre | {pre.efficacy:.3f} | {pre.paraphrase:.3f} | {pre.neighborhood:.3f} |\n"
          f"| post | {mean('efficacy'):.3f} | {mean('paraphrase'):.3f} | {mean('neighborhood'):.3f} |\n"
          f"median {statistics.median(seconds):.2f} s/edit ({args.threads} threads)")
    if args.out:
        Path(args.out).write_text(json.dumps({"summary": summary, "cases": [c.model_dump() for c in post_cases],
                                              "details": details}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
