"""Does an edit get slower as the ledger grows? The same edits timed on an empty ledger and on a ledger of
`--ledger` earlier entries whose deltas are zero (so the weights, and with them every edit's value
optimization, are those of the unedited model): the difference is what the ledger itself costs an edit
(null-space keys summed, weights rebuilt, verdicts, bookkeeping), without the changed model that a real
run of as many edits would also bring.

    python benchmarks/ledger_overhead.py --data ../shared/data/counterfact_rome_format_1000.json \\
        --variant memit+null --ledger 1000 --edits 8 --threads 1

The earlier entries are copies of one real edit of the variant (its keys kept, its deltas zeroed), loaded
through `Editor.restore_session` as a continued run would load them.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

from bench_common import benchmark_parser, load_editor, ready
from sequential import VARIANTS


def timed_edits(editor, cases, method: str, hparams: dict) -> list[float]:
    """Seconds of each edit, applied one after another as a sequential run applies them (no revert in
    between: a revert makes the next null-space edit sum the earlier keys again, which a run never does)."""
    seconds = []
    for case in cases:
        started = time.perf_counter()
        editor.apply([case], method=method, keep_failed=True, **hparams)
        seconds.append(time.perf_counter() - started)
    return seconds


def zero_copies(entry, n: int) -> list:
    """`n` copies of a ledger entry with every delta zeroed and its own id."""
    def zeroed(delta):
        tensors = {f: None if getattr(delta, f) is None else getattr(delta, f).mul(0) for f in ("left", "dense")}
        return dataclasses.replace(delta, **tensors)
    return [dataclasses.replace(entry, id=uuid.uuid4().hex[:12], deltas=[zeroed(d) for d in entry.deltas])
            for _ in range(n)]


def main(argv: list[str] | None = None) -> int:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--variant", default="memit+null", choices=sorted(VARIANTS))
    parser.add_argument("--ledger", type=int, default=1000, help="earlier entries")
    parser.add_argument("--edits", type=int, default=8, help="edits timed on each ledger")
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    if not ready(args):
        return 2
    from suture.editor.session import write_session
    from suture.evaluation import load_counterfact

    method, hparams = VARIANTS[args.variant]
    editor = load_editor(args)
    cases = load_counterfact(args.data, limit=args.edits + 1)
    editor.apply([cases[0]], method=method, keep_failed=True, **hparams)  # the template entry
    template = editor.ledger[-1]
    editor.reset()

    empty = timed_edits(editor, cases[1:], method, hparams)
    editor.reset()
    with tempfile.TemporaryDirectory() as tmp:
        session = write_session(zero_copies(template, args.ledger), editor.handle.base_fingerprint,
                                Path(tmp) / "session.pt")
        started = time.perf_counter()
        editor.restore_session(session)
        restore_seconds = time.perf_counter() - started
    full = timed_edits(editor, cases[1:], method, hparams)
    editor.reset()
    row = {"variant": args.variant, "ledger": args.ledger, "edits": args.edits, "threads": args.threads,
           "seconds_empty": empty, "seconds_full": full,
           "median_empty": statistics.median(empty), "median_full": statistics.median(full),
           "ratio_of_medians": statistics.median(full) / statistics.median(empty),
           "restore_seconds": restore_seconds}
    print(json.dumps(row, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(row, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
