"""Does solving against the edited model's key covariance make an edit drift less? A paired comparison from
one saved session: each of the next records is edited twice from the same weights, once with the session's
own hyperparameters and C₀ and once with `running_covariance` (methods/shared/running_covariance.py), and
undone after each. Where a sequential run's two arms drift apart after their first differing edit, this
holds everything else fixed.

    python benchmarks/covariance_paired.py --data ../shared/data/counterfact_rome_format_1000.json \\
        --session /work/runs/state_500.pt --n 40 --out paired_500.jsonl

The session is one `sequential.py --state` saved (its hyperparameters are read from it); the records are
those that follow the ones it edited. One JSON line per record and arm: the edit's own drift (mean KL from
the session's model to the edited one on the reference text, per token, nats), the drift from the base model
after it, its write scale and verdict, and for the running arm the covariance shift it solved against;
then a summary line per arm.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from bench_common import benchmark_parser, load_editor, ready

ARMS = ("base_covariance", "running_covariance")


def _kl(reference, edited, mask) -> float:
    """Mean over real tokens of KL(reference ‖ edited), nats."""
    from suture.evaluation.drift import token_kl

    return float(token_kl(reference, edited)[mask].mean())


def paired_rows(editor, cases, hparams: dict, running: dict, texts: list[str]):
    """Per case and arm (ARMS), from the editor's current weights: the row described in the module
    docstring; the editor is left as it was."""
    from suture.evaluation.drift import token_log_probs

    enc = editor.tokenizer(texts, return_tensors="pt", padding=True).to(editor.handle.device)
    start = token_log_probs(editor, enc)
    mask = enc["attention_mask"].bool()
    with editor.weights.base_weights():
        base = token_log_probs(editor, enc)
    settings = {"base_covariance": {**hparams, "running_covariance": None},
                "running_covariance": {**hparams, "running_covariance": running}}
    for record, case in enumerate(cases):
        for arm in ARMS:
            entries = len(editor.ledger)
            try:  # force: a request the model already answers is edited too, so every record makes an entry
                result = editor.apply([case], method="memit", keep_failed=True, force=True, **settings[arm])
                edited = token_log_probs(editor, enc)
            finally:
                if len(editor.ledger) > entries:
                    editor.revert()
            details = result.details
            yield {"record": record, "case": case.id, "arm": arm, "own_kl": _kl(start, edited, mask),
                   "kl_from_base": _kl(base, edited, mask),
                   "passed": bool(result.verdicts and result.verdicts[0].passed),
                   "write_scale": (details.get("write_scale") or [None])[0],
                   "covariance": (details.get("running_covariance") or [None])[0]}


def summary(rows: list[dict]) -> list[dict]:
    """Per arm: records, mean own KL and KL from base, verdicts passed, mean write scale; and the paired
    ratio of own KL (running over base) over the records both arms edited."""
    out = []
    by_case: dict = {}
    for row in rows:
        by_case.setdefault(row["record"], {})[row["arm"]] = row
    for arm in ARMS:
        mine = [row for row in rows if row["arm"] == arm]
        scales = [row["write_scale"] for row in mine if row["write_scale"] is not None]
        out.append({"arm": arm, "records": len(mine), "own_kl": sum(r["own_kl"] for r in mine) / len(mine),
                    "kl_from_base": sum(r["kl_from_base"] for r in mine) / len(mine),
                    "passed": sum(r["passed"] for r in mine) / len(mine),
                    "write_scale": sum(scales) / len(scales) if scales else None})
    pairs = [arms for arms in by_case.values() if len(arms) == len(ARMS)]
    ratio = sum(p["running_covariance"]["own_kl"] for p in pairs) / sum(p["base_covariance"]["own_kl"] for p in pairs)
    out.append({"paired_records": len(pairs), "own_kl_ratio": ratio})
    return out


def main(argv: list[str] | None = None) -> int:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--session", type=Path, required=True, help="a session file saved by sequential.py --state")
    parser.add_argument("--n", type=int, default=40, help="records after the session's (default 40)")
    parser.add_argument("--offset", type=int, default=0, help="the session run's --offset (default 0)")
    parser.add_argument("--every", type=int, default=50, help="running_covariance.every")
    parser.add_argument("--texts", type=int, help="running_covariance.texts (default: the whole corpus)")
    parser.add_argument("--keep-trace", action="store_true", help="running_covariance.keep_trace")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if not ready(args):
        return 2
    from suture.evaluation import load_counterfact
    from suture.evaluation.drift import default_reference_texts

    editor = load_editor(args)
    saved = editor.restore_session(args.session)
    hparams = json.loads(saved["run"]["hparams"])
    applied = saved["applied"]
    cases = load_counterfact(args.data, limit=applied + args.n, offset=args.offset)[applied:]
    rows = []
    with args.out.open("w") as out:
        running = {"every": args.every, "texts": args.texts, "keep_trace": args.keep_trace}
        for row in paired_rows(editor, cases, hparams, running, default_reference_texts()):
            rows.append(row)
            out.write(json.dumps({**row, "session_edits": applied}) + "\n")
            out.flush()
            print(json.dumps(row), flush=True)
        for line in summary(rows):
            out.write(json.dumps({**line, "session_edits": applied}) + "\n")
            print(json.dumps(line), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
