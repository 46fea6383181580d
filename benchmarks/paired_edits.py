"""Does a setting make the next edit of a long run drift less? A paired comparison from one saved session:
each of the next records is edited once per arm from the same weights, each arm the session's own MEMIT
hyperparameters with its overrides, and undone after each. Whole sequential runs drift apart after their
first differing edit by more than the effects sought (BENCHMARKS.md, "The covariance of the model as
edited"); this holds everything else fixed.

    python benchmarks/paired_edits.py --data ../shared/data/counterfact_rome_format_1000.json \\
        --session /work/runs/state_250.pt --n 30 --out paired_250.jsonl \\
        --arm base_covariance='{"running_covariance": null}' \\
        --arm running_covariance='{"running_covariance": {"texts": 64}}'

The session is one `sequential.py --state` saved (its hyperparameters are read from it); the records are
those that follow the ones it edited. The first arm is the reference. One JSON line per record and arm: the
edit's own drift (mean KL from the session's model to the edited one on the reference text, per token,
nats), the drift from the base model after it, its verdict and write scale, the details named by
`--details`, and with `--held` how many of the session's facts lapsed (the old answer preferred again) after
it; then a summary line per arm, with its paired own-drift ratio against the reference.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bench_common import benchmark_parser, json_object, load_editor, ready, session_cases


def _kl(reference, edited, mask) -> float:
    """Mean over real tokens of KL(reference ‖ edited), nats."""
    from suture.evaluation.drift import token_kl

    return float(token_kl(reference, edited)[mask].mean())


def _lapsed(editor, facts: list) -> int:
    from suture.editor.refresh import lapsed_requests

    return sum(lapsed_requests(editor, facts, "old_preferred")) if facts else 0


def paired_rows(editor, cases, hparams: dict, arms: dict[str, dict], texts: list[str],
                details: tuple[str, ...] = ("write_scale",), held: bool = False):
    """Per case and arm (in `arms`' order; each arm's overrides merged over `hparams`), from the editor's
    current weights: the row described in the module docstring. The editor is left as it was."""
    from suture.editor.refresh import held_facts
    from suture.evaluation.drift import token_log_probs

    enc = editor.tokenizer(texts, return_tensors="pt", padding=True).to(editor.handle.device)
    start = token_log_probs(editor, enc)
    mask = enc["attention_mask"].bool()
    with editor.weights.base_weights():
        base = token_log_probs(editor, enc)
    facts = held_facts(editor.ledger) if held else []
    lapsed_before = _lapsed(editor, facts) if held else None
    for record, case in enumerate(cases):
        for arm, overrides in arms.items():
            entries = len(editor.ledger)
            try:  # force: a request the model already answers is edited too, so every record makes an entry
                result = editor.apply([case], method="memit", keep_failed=True, force=True,
                                      **{**hparams, **overrides})
                edited = token_log_probs(editor, enc)
                lapsed = _lapsed(editor, facts) if held else None
            finally:
                if len(editor.ledger) > entries:
                    editor.revert()
            row = {"record": record, "case": case.id, "arm": arm, "own_kl": _kl(start, edited, mask),
                   "kl_from_base": _kl(base, edited, mask),
                   "passed": bool(result.verdicts and result.verdicts[0].passed)}
            row.update({key: (result.details.get(key) or [None])[0] for key in details})
            if held:
                row.update({"facts": len(facts), "lapsed_before": lapsed_before, "lapsed_after": lapsed})
            yield row


def summary(rows: list[dict]) -> list[dict]:
    """Per arm, in the rows' order: records, mean own KL, KL from base, verdicts passed, write scale and
    (with --held) facts lapsed after the edit; for every arm after the first, the paired ratio of own KL
    against the first arm and on how many records it is higher."""
    arms = list(dict.fromkeys(row["arm"] for row in rows))
    by_record: dict = {}
    for row in rows:
        by_record.setdefault(row["record"], {})[row["arm"]] = row
    pairs = [mine for mine in by_record.values() if len(mine) == len(arms)]
    out = []
    for arm in arms:
        mine = [row for row in rows if row["arm"] == arm]
        line = {"arm": arm, "records": len(mine)}
        for key in ("own_kl", "kl_from_base", "passed", "write_scale", "lapsed_after"):
            values = [row.get(key) for row in mine if row.get(key) is not None]
            line[key] = sum(values) / len(values) if values else None
        if arm != arms[0] and pairs:
            line["paired_records"] = len(pairs)
            line["own_kl_ratio"] = (sum(p[arm]["own_kl"] for p in pairs)
                                    / sum(p[arms[0]]["own_kl"] for p in pairs))
            line["higher"] = sum(p[arm]["own_kl"] > p[arms[0]]["own_kl"] for p in pairs)
        out.append(line)
    return out


def _arm(text: str) -> tuple[str, dict]:
    """argparse type of --arm NAME=JSON."""
    name, sep, overrides = text.partition("=")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError("must be NAME=JSON, e.g. wide='{\"layers\": [1, 2, 3, 4, 5]}'")
    return name.strip(), json_object(overrides)


def main(argv: list[str] | None = None) -> int:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--session", type=Path, required=True, help="a session file saved by sequential.py --state")
    parser.add_argument("--n", type=int, default=40, help="records after the session's (default 40)")
    parser.add_argument("--offset", type=int, default=0, help="the session run's --offset (default 0)")
    parser.add_argument("--arm", type=_arm, action="append", required=True,
                        help="NAME=JSON overrides of the session's MEMIT hyperparameters, each top-level key "
                        "replacing the session's (a nested object whole); give two or more, the first is the "
                        "reference")
    parser.add_argument("--details", default="write_scale",
                        help="comma-separated keys of the edit result's details to keep (first entry each)")
    parser.add_argument("--held", action="store_true",
                        help="also count the session's facts lapsed after each edit (one pass over them)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    arms = dict(args.arm)
    if len(arms) < 2 or len(arms) != len(args.arm):
        parser.error("--arm: give at least two arms, each with its own name")
    if not ready(args):
        return 2
    from suture.evaluation.drift import default_reference_texts

    editor = load_editor(args)
    saved = editor.restore_session(args.session)
    hparams = json.loads(saved["run"]["hparams"])
    applied = saved["applied"]
    cases = session_cases(args.data, saved, args.offset, after=args.n)[applied:]
    details = tuple(key for key in args.details.split(",") if key)
    rows = []
    with args.out.open("w") as out:
        for row in paired_rows(editor, cases, hparams, arms, default_reference_texts(), details, args.held):
            rows.append(row)
            out.write(json.dumps({**row, "session_edits": applied}) + "\n")
            out.flush()
            print(json.dumps(row), flush=True)
        for line in summary(rows):
            out.write(json.dumps({**line, "session_edits": applied, "overrides": arms[line["arm"]]}) + "\n")
            print(json.dumps(line), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
