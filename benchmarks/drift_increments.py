"""Which edits of a sequential run move the drift: reads `sequential.py --drift-rows` (drift on the
reference text after every apply) and reports how the run's KL is shared among the edits.

    python benchmarks/drift_increments.py /work/runs/until_drift_rows.jsonl --top 15

An edit's increment is the mean KL after it minus the mean KL before it (it can be negative: a later
edit can undo part of an earlier one's drift). Printed as JSON lines: the share of the final KL that the
largest increments account for (top 1%, 5%, 10%, 25% of the edits), the largest increments with the
reference positions each moved most
(KL increment, the text up to the position, the token it predicts), and the KL per window of edits.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def rows_problem(rows: list[dict], positions: int) -> str | None:
    """Why `rows` are not one run from the unedited model that this tokenizer's reference positions name
    (--drift-rows appends: a rerun or a resumed run adds a second sequence), or None."""
    if not rows:
        return "no rows"
    for line, (before, row) in enumerate(zip([{"edits": 0}] + rows, rows), start=1):
        if row["edits"] <= before["edits"]:
            return (f"line {line}: edits {row['edits']} after {before['edits']}: not one run from the unedited "
                    "model (rows of several runs appended?)")
        if len(row["kl_per_position"]) != positions:
            return (f"line {line}: {len(row['kl_per_position'])} positions, but --model's tokenizer makes "
                    f"{positions} of the reference text")
    if rows[-1]["drift_kl"] <= 0:
        return "the final drift is 0: no increments to share out"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("rows", help="JSONL of sequential.py --drift-rows")
    parser.add_argument("--top", type=int, default=15, help="largest increments to list")
    parser.add_argument("--window", type=int, default=50, help="edits per window of the KL curve")
    parser.add_argument("--model", default="smollm2-135m", help="whose tokenizer names the positions")
    args = parser.parse_args(argv)
    from drift_positions import reference_positions
    from transformers import AutoTokenizer

    from suture.editor.zoo import resolve_zoo

    where, _ = reference_positions(AutoTokenizer.from_pretrained(resolve_zoo(args.model, progress=False)))
    rows = [json.loads(line) for line in Path(args.rows).read_text().splitlines() if line.strip()]
    problem = rows_problem(rows, len(where))
    if problem:
        print(f"{args.rows}: {problem}", file=sys.stderr)
        return 2
    before = [0.0] * len(rows[0]["kl_per_position"])
    steps = []
    last = 0.0
    for row in rows:
        after = row["kl_per_position"]
        moved = sorted(range(len(after)), key=lambda p: after[p] - before[p], reverse=True)[:3]
        steps.append({"edits": row["edits"], "cases": row["cases"], "increment": row["drift_kl"] - last,
                      "positions": [[round(after[p] - before[p], 4), *where[p]] for p in moved]})
        before, last = after, row["drift_kl"]
    final = rows[-1]["drift_kl"]
    ranked = sorted(steps, key=lambda s: s["increment"], reverse=True)
    shares = {}
    for fraction in (0.01, 0.05, 0.10, 0.25):
        count = max(1, round(fraction * len(steps)))
        shares[f"top_{fraction:g}"] = round(sum(s["increment"] for s in ranked[:count]) / final, 3)
    print(json.dumps({"edits": rows[-1]["edits"], "final_kl": final, "share_of_final_kl": shares,
                      "negative_increments": sum(s["increment"] < 0 for s in steps)}))
    for step in ranked[: args.top]:
        print(json.dumps(step))
    for start in range(0, len(rows), args.window):
        window = rows[start: start + args.window]
        print(json.dumps({"window": [window[0]["edits"], window[-1]["edits"]], "kl_end": window[-1]["drift_kl"],
                          "top1_end": window[-1]["top1_agreement"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
