"""CounterFact edits one at a time, scored both ways side by side: teacher-forced (log-probability
comparisons, evaluation/counterfact.py) and generated (greedy answers judged by editor/judge.py,
evaluation/generated.py), with the seconds each costs per case. One JSON row per case is appended to
--rows as it comes, so an interrupted run keeps what it measured; --summarize prints the table of a file.

    python benchmarks/generated.py --data ../shared/data/counterfact_rome_format_1000.json \\
        --offset 500 --n 100 --threads 1 --rows docs/bench/generated_rome_500.jsonl
    python benchmarks/generated.py --data ... --summarize docs/bench/generated_rome_500.jsonl
"""

from __future__ import annotations

import inspect
import json
import statistics
import sys
import time
from pathlib import Path

from bench_common import add_method_options, add_record_range, benchmark_parser, json_object, load_editor, ready

KEYS_TF = ("efficacy", "paraphrase", "neighborhood")
KEYS_GEN = ("efficacy", "paraphrase", "chat", "generation_prompts", "locality", "subject_kept")


def summarize(path: Path) -> dict:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if "case" in r]

    def mean(values):
        values = [v for v in values if v is not None]
        return sum(values) / len(values) if values else None

    out = {"n": len(rows),
           "teacher_forced": {k: mean([r["tf"][k] for r in rows]) for k in KEYS_TF},
           "generated": {k: mean([r["gen"].get(k) for r in rows]) for k in KEYS_GEN},
           "verdict_passed": mean([r.get("verdict_passed") for r in rows]),
           "fluency": {k: mean([r["gen"]["fluency"][k] for r in rows if r["gen"]["fluency"]])
                       for k in ("base_entropy", "edited_entropy", "base_repetition", "edited_repetition",
                                 "chat_base_entropy", "chat_edited_entropy")},
           "seconds": {k: statistics.median([r["seconds"][k] for r in rows]) for k in rows[0]["seconds"]}
           if rows else {}}
    flu = out["fluency"]
    if flu["chat_base_entropy"]:
        flu["chat_ratio"] = flu["chat_edited_entropy"] / flu["chat_base_entropy"]
    if flu["base_entropy"]:
        flu["ratio"] = flu["edited_entropy"] / flu["base_entropy"]
    return out


def main(argv: list[str] | None = None) -> int:
    if argv is None and "--summarize" in sys.argv:
        print(json.dumps(summarize(Path(sys.argv[sys.argv.index("--summarize") + 1])), indent=1))
        return 0
    parser = benchmark_parser(__doc__)
    add_record_range(parser, n=100, offset=500)
    add_method_options(parser, "rome")
    parser.add_argument("--generation", type=json_object, default={}, help="JSON overrides of GenerationOptions")
    parser.add_argument("--rows", required=True, help="append one JSON row per case here")
    parser.add_argument("--label", default="", help="free text stored in the header row")
    args = parser.parse_args(argv)
    if not ready(args):
        return 2

    from suture.evaluation import load_counterfact, score_cases
    from suture.evaluation.generated import GenerationOptions, evaluate_generated

    hparams = args.hparams  # parsed by add_method_options
    options = GenerationOptions(**{"generation_prompts": 1, **args.generation})
    editor = load_editor(args)
    cases = load_counterfact(args.data, limit=args.n, offset=args.offset)
    rows_path = Path(args.rows)
    rows_path.parent.mkdir(parents=True, exist_ok=True)
    done = set()
    if rows_path.exists():
        done = {json.loads(line).get("case") for line in rows_path.read_text().splitlines() if line.strip()}
    verifying = "keep_failed" in inspect.signature(editor.apply).parameters
    extra = {"keep_failed": True} if verifying else {}
    with rows_path.open("a") as sink:
        if not done:
            sink.write(json.dumps({"header": True, "method": args.method, "hparams": hparams, "offset": args.offset,
                                   "n": args.n, "generation": options.model_dump(), "label": args.label,
                                   "threads": args.threads}) + "\n")
        base_cache: dict = {}
        for i, case in enumerate(cases):
            if case.id in done:
                continue
            t0 = time.perf_counter()
            result = editor.apply([case], method=args.method, **extra, **hparams)
            t1 = time.perf_counter()
            tf = score_cases(editor.handle, [case]).cases[0]
            t2 = time.perf_counter()
            gen = evaluate_generated(editor, [case], options, base_cache=base_cache)
            t3 = time.perf_counter()
            editor.revert()
            g = gen.cases[0]
            verdicts = getattr(result, "verdicts", [])
            row = {"case": case.id, "tf": {k: getattr(tf, k) for k in KEYS_TF},
                   "gen": {**{k: getattr(g, k) for k in KEYS_GEN},
                           "fluency": gen.fluency.model_dump() if gen.fluency else None},
                   "answers": [a.model_dump() for a in g.answers],
                   "verdict_passed": (all(v.passed for v in verdicts) if verdicts else None),
                   "verdicts": [v.model_dump() for v in verdicts],
                   "details": result.details,
                   "seconds": {"edit": t1 - t0, "teacher_forced": t2 - t1, "generated": t3 - t2}}
            sink.write(json.dumps(row) + "\n")
            sink.flush()
            print(f"[{i + 1}/{len(cases)}] edit {t1 - t0:.1f}s tf {t2 - t1:.1f}s gen {t3 - t2:.1f}s "
                  f"gen eff {g.efficacy} para {g.paraphrase} chat {g.chat} loc {g.locality}", file=sys.stderr,
                  flush=True)
    print(json.dumps(summarize(rows_path), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
