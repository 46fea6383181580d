"""What one edit costs the rest of the model, against how firmly it is written: the screen for sequential
settings before a 1,000-edit run.

    python benchmarks/edit_drift.py --data ../shared/data/counterfact_rome_format_1000.json --offset 600 --n 20 \\
        --method memit --hparams '{"norm_anchor": {}}' --out drift.jsonl

Each record is edited alone on the unedited model, measured, and reverted. Per edit: drift KL on the
reference text (evaluation/drift.py), the same on a few ordinary sentences using the subject's last word on
its own (subjects of two or more words; `word_kl`), the margin log P(new) - log P(true) on the rewrite prompt and on the
paraphrases, teacher-forced efficacy / paraphrase / neighborhood, the verdict, the norm of each layer's
update and the seconds. Over a sequential run drift adds up about linearly (memit+anchor+preserve: KL
0.003 at 10 edits, 0.234 at 1,000), so the mean KL of one edit times N is a first estimate of the drift
after N, and a setting that halves it is worth a long run.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

from bench_common import add_method_options, add_record_range, benchmark_parser, load_editor, ready


def paraphrase_margin(handle, case) -> float | None:
    """Mean over the paraphrases of log P(new) - log P(true), nats (the rewrite prompt's is in score_cases)."""
    from suture.evaluation.scoring import target_logprobs

    if not case.paraphrases:
        return None
    pairs = [(p, case.target_new) for p in case.paraphrases] + [(p, case.target_true) for p in case.paraphrases]
    logp = target_logprobs(handle, pairs).tolist()
    count = len(case.paraphrases)
    return statistics.mean(logp[i] - logp[i + count] for i in range(count))


# Ordinary sentences around a subject's last word used on its own (lower case: "cars" for "Laurent Cars"):
# where an edit that reads the word instead of the subject drifts. Not the contexts that
# preserve_subject_words holds (methods/shared/subject_words.py), so the measure is not what it fits.
WORD_SENTENCES = ("I read about {} in the paper yesterday.", "There were two {} near the old station.",
                  "We talked about {} for an hour after dinner.", "Her favourite word is {}, she said.")


def word_use_kl(editor, subject: str, measure_drift) -> float | None:
    """Mean KL over WORD_SENTENCES with the subject's last word (`subject_words.last_word`: lower case, no
    punctuation); None for a one-word subject. Every such word, common or not: the measure asks where an
    edit reads the word, including the rare surnames the hold leaves alone."""
    from suture.methods.shared.subject_words import last_word

    word = last_word(subject)
    if word is None:
        return None
    return measure_drift(editor, [s.format(word) for s in WORD_SENTENCES]).mean_kl


def main(argv: list[str] | None = None) -> int:
    parser = benchmark_parser(__doc__)
    add_record_range(parser, n=20, offset=600)
    add_method_options(parser, "memit")
    parser.add_argument("--out", help="one JSON row per edit (appended)")
    args = parser.parse_args(argv)
    if not ready(args):
        return 2
    from suture.evaluation import load_counterfact, score_cases
    from suture.evaluation.drift import measure_drift

    editor = load_editor(args)
    hparams = args.hparams  # parsed by add_method_options
    rows = []
    for case in load_counterfact(args.data, limit=args.n, offset=args.offset):
        started = time.perf_counter()
        result = editor.apply([case], method=args.method, keep_failed=True, **hparams)
        seconds = time.perf_counter() - started
        scores = score_cases(editor.handle, [case]).cases[0]
        row = {"id": case.id, "hparams": hparams, "kl": measure_drift(editor).mean_kl,
               "word_kl": word_use_kl(editor, case.subject, measure_drift),
               "margin_rewrite": scores.logp_new - scores.logp_true,
               "margin_paraphrase": paraphrase_margin(editor.handle, case), "efficacy": scores.efficacy,
               "paraphrase": scores.paraphrase, "neighborhood": scores.neighborhood,
               "passed": all(v.passed for v in result.verdicts) if result.verdicts else None,
               "update_norms": [d.norm for d in result.deltas], "seconds": seconds,
               "value_steps": result.details.get("value_steps"), "residual_left": result.details.get("residual_left"),
               "write_scale": result.details.get("write_scale")}
        rows.append(row)
        print(json.dumps(row), flush=True)
        if args.out:
            with Path(args.out).open("a") as sink:
                sink.write(json.dumps(row) + "\n")
        editor.reset()
    summary = {key: statistics.mean([r[key] for r in rows if r[key] is not None] or [float("nan")])
               for key in ("kl", "word_kl", "margin_rewrite", "margin_paraphrase", "efficacy", "paraphrase",
                           "neighborhood", "passed", "seconds")}
    summary["update_norm"] = statistics.mean(sum(n * n for n in r["update_norms"]) ** 0.5 for r in rows)
    print(json.dumps({"summary": summary, "n": len(rows), "hparams": hparams}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
