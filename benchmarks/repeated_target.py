"""Rewrite and paraphrase answers that say the new target and then say it again at once
(" midfielder midfielder midfielder"), read from stored answers (no model run).

The judge counts such an answer as naming the target; the per-request verdict fails it
(`suture.editor.judge.stutters`). This counts them in earlier runs, per file:

    python benchmarks/repeated_target.py --data ../shared/data/counterfact_rome_format_1000.json \\
        docs/bench/generated_rome_500_wb.jsonl docs/bench/generated_rome_550_wb.jsonl

Input: rows of benchmarks/generated.py (--rows). The first 1 + len(paraphrase_prompts) answers of a row are
its rewrite and paraphrase answers; targets come from the CounterFact file by case id.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def stutter_counts(rows: list[dict], records: dict[str, dict]) -> dict:
    """{answers, stuttering, cases, cases_stuttering, examples} over the rows' rewrite/paraphrase answers."""
    from suture.editor.judge import stutters

    answers = stuttering = 0
    cases: set[str] = set()
    examples = []
    for row in rows:
        record = records[str(row["case"])]
        target = record["requested_rewrite"]["target_new"]["str"]
        for answer in row["answers"][: 1 + len(record.get("paraphrase_prompts", []))]:
            answers += 1
            if stutters(answer["text"], target):
                stuttering += 1
                cases.add(str(row["case"]))
                examples.append([row["case"], answer["text"][:80]])
    return {"answers": answers, "stuttering": stuttering, "share": stuttering / max(answers, 1),
            "cases": len(rows), "cases_stuttering": len(cases), "examples": examples[:5]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="+")
    parser.add_argument("--data", required=True, help="the CounterFact file the rows were made from")
    args = parser.parse_args(argv)
    records = {str(r["case_id"]): r for r in json.loads(Path(args.data).read_text())}
    for path in args.files:
        rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
        rows = [r for r in rows if "case" in r and "answers" in r]
        print(json.dumps({"file": path, **stutter_counts(rows, records)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
