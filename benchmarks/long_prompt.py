"""Cost of one ROME edit against prompt length: each CounterFact record is edited with its own prompt
padded in front with unrelated text (other records' neighborhood prompts) to about each target length in
tokens, the subject and the question at the end, as in a long document or chat history followed by a
question. Seconds are wall time of `Editor.apply`, after one warm-up edit that pays the one-off costs.

    python benchmarks/long_prompt.py --data ../shared/data/counterfact_rome_format_1000.json \
        --lengths 20,1500 --n 3 --threads 1 --corpus-texts 300
"""

from __future__ import annotations

import inspect
import json
import os
import statistics
import sys
import tempfile
import time

from bench_common import add_record_range, benchmark_parser, json_object, load_editor, ready


def filler_text(records: list[dict], avoid: str, tokenizer, tokens: int) -> str:
    """Sentences from other records' neighborhood prompts, ending in a period, until `tokens` tokens."""
    sentences, count = [], 0
    for record in records:
        for prompt in record.get("neighborhood_prompts", []):
            if avoid.lower() in prompt.lower() or "{" in prompt or "}" in prompt:
                continue
            sentence = prompt.strip() + " something."
            count += len(tokenizer(" " + sentence, add_special_tokens=False)["input_ids"])
            if count > tokens:
                return " ".join(sentences)
            sentences.append(sentence)
    return " ".join(sentences)


def write_corpus(data: str, n: int) -> str:
    """A JSON list of `n` paragraphs, each one record's attribute and neighborhood prompts."""
    with open(data, encoding="utf-8") as f:
        records = json.load(f)
    texts = [" ".join(r.get("attribute_prompts", []) + r.get("neighborhood_prompts", [])) for r in records]
    path = os.path.join(tempfile.gettempdir(), f"long_prompt_corpus_{n}.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump([t for t in texts if t][:n], f)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--lengths", default="20,1500", help="prompt lengths in tokens (subject filled in)")
    add_record_range(parser, n=3, offset=0)
    parser.add_argument("--hparams", type=json_object, default={}, help="JSON overrides of ROME's hyperparameters")
    parser.add_argument("--corpus-texts", type=int, default=0,
                        help="statistics from this many paragraphs of the data file's own prompts instead of the "
                             "model-sampled corpus (one-off, excluded from the timing; sampling is slow on CPU)")
    parser.add_argument("--force", action="store_true", help="skip the no-op pre-check (apply(force=True))")
    parser.add_argument("--out", help="write the rows as JSON here")
    args = parser.parse_args(argv)
    if not ready(args):
        return 2

    from suture.editor import Editor

    try:
        from suture.editor.prompt_template import escape_literal
    except ImportError:  # code from before the one template parser: braces were not escaped
        def escape_literal(text: str) -> str:
            return text.replace("{", "{{").replace("}", "}}")
    force = {"force": True} if args.force and "force" in inspect.signature(Editor.apply).parameters else {}
    from suture.evaluation import load_counterfact, score_cases, target_logprobs

    hparams = args.hparams
    if args.corpus_texts:
        hparams.setdefault("corpus", {}).update(source=write_corpus(args.data, args.corpus_texts),
                                               n_samples=args.corpus_texts)
    editor = load_editor(args)
    tok = editor.tokenizer
    with open(args.data, encoding="utf-8") as f:
        records = json.load(f)
    cases = load_counterfact(args.data, limit=args.n, offset=args.offset)
    lengths = [int(x) for x in args.lengths.split(",")]

    started = time.perf_counter()  # warm-up: statistics, context prefixes (cached afterwards)
    editor.apply([cases[0]], method="rome", **hparams)
    editor.revert()
    print(f"warm-up {time.perf_counter() - started:.1f}s", file=sys.stderr, flush=True)

    rows = []
    for case in cases:
        base_tokens = len(tok(case.text)["input_ids"])
        for length in lengths:
            filler = filler_text(records[args.offset + args.n:], case.subject, tok, max(0, length - base_tokens))
            prompt = (escape_literal(filler) + " " + case.prompt) if filler else case.prompt
            long_case = case.model_copy(update={"prompt": prompt})
            tokens = len(tok(long_case.text)["input_ids"])
            t0 = time.perf_counter()
            result = editor.apply([long_case], method="rome", **force, **hparams)
            seconds = time.perf_counter() - t0
            # The long prompt is scored on its own: batched with the short paraphrases it would pad them all.
            new, true = target_logprobs(editor.handle, [(long_case.text, case.target_new),
                                                        (long_case.text, case.target_true)]).tolist()
            short_scores = score_cases(editor.handle, [case]).cases[0]
            editor.revert()
            if result.details.get("noop"):
                print(f"case {case.id}: target already answered at {length} tokens (no-op)", file=sys.stderr)
            row = {"case_id": case.id, "target_length": length, "tokens": tokens, "seconds": seconds,
                   "value_steps": result.details.get("value_steps"),
                   "efficacy_long_prompt": float(new > true), "efficacy_plain_prompt": short_scores.efficacy,
                   "paraphrase": short_scores.paraphrase}
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)

    summary = {"model": args.model, "hparams": hparams, "n": len(cases), "by_length": {}}
    for length in lengths:
        mine = [r for r in rows if r["target_length"] == length]
        summary["by_length"][length] = {
            "tokens_median": statistics.median(r["tokens"] for r in mine),
            "seconds_median": statistics.median(r["seconds"] for r in mine),
            "efficacy_long_prompt": sum(r["efficacy_long_prompt"] for r in mine) / len(mine),
            "efficacy_plain_prompt": sum(r["efficacy_plain_prompt"] for r in mine) / len(mine),
        }
    shortest, longest = min(lengths), max(lengths)
    summary["cost_ratio"] = (summary["by_length"][longest]["seconds_median"]
                             / summary["by_length"][shortest]["seconds_median"])
    print(json.dumps(summary, indent=1))
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump({"summary": summary, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
