"""`suture edit`: apply the requests of a JSONL file to a model as one edit, show the answers before and
after, and optionally save the edited checkpoint."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Literal, get_args

from suture.cli.common import (
    EXIT_OK,
    CliError,
    Timer,
    add_hparams_argument,
    add_model_arguments,
    check_device,
    edit_progress,
    format_seconds,
    load_editor,
    load_hparams,
    load_json_object,
    output_dir,
    says,
    short,
)

if TYPE_CHECKING:
    from suture.editor import EditRequest, Gate
    from suture.editor.refresh import RefreshReport

EPILOG = """\
FILE.jsonl holds one edit request per line (blank lines are skipped), for example:
  {"prompt": "The capital of {} is", "subject": "France", "target_new": "Rome", "target_true": "Paris"}
Fields: prompt (with one '{}' for the subject), subject, target_new, and optionally target_true,
paraphrases, neighbors (lists of prompts) and id.

Many edits over time: --session FILE keeps every edit so far; each call continues it and saves it again
only when its edit succeeded. With --refresh W the call also writes again up to W earlier edits that later
ones undid, for example:
  suture edit --model M --requests monday.jsonl --session fixes.pt
  suture edit --model M --requests tuesday.jsonl --session fixes.pt --refresh 8 --out patched/

Exit codes: 0 success, 2 bad input or any suture error (the message says what and where)."""


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "edit", help="apply edit requests from a JSONL file to a model",
        description="Apply the edit requests of a JSONL file to a model as one edit (one ledger entry),\n"
                    "print each request's greedy answer before and after, and optionally save the edited\n"
                    "checkpoint.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(parser)
    parser.add_argument("--requests", required=True, metavar="FILE.jsonl", help="edit requests, one JSON object a line")
    parser.add_argument("--method", default="rome", help="editing method (default: rome)")
    parser.add_argument("--out", default=None, metavar="DIR",
                        help="save the edited model here (save_pretrained layout plus suture.json); "
                             "DIR must not exist or be empty")
    add_hparams_argument(parser)
    parser.add_argument("--keep-failed", action="store_true",
                        help="keep the edit even when a request fails its post-edit verdict (its target is not "
                             "the greedy answer); by default such an edit is rolled back and the command fails")
    parser.add_argument("--max-new-tokens", type=int, default=8, metavar="N",
                        help="tokens generated for the before/after answers (default: 8)")
    add_gate_arguments(parser)
    add_session_arguments(parser)
    parser.set_defaults(run=run)
    return parser


# The choices of Editor.refresh's lapsed_when (editor/refresh.py), without importing torch for --help.
LapsedWhen = Literal["not_greedy", "old_preferred"]


# --- a session: edits that go on over many calls --------------------------------------------------------
# A year of corrections is many `suture edit` calls on one model. --session keeps the ledger (every delta) in a
# file: each call restores it, adds its edit, and writes it back atomically only once the call succeeded, so a
# rolled-back edit or a failed gate leaves the session as it was. --refresh then writes again earlier edits that
# later ones undid (Editor.refresh; BENCHMARKS.md, "Earlier edits written again").

def add_session_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--session", default=None, metavar="FILE",
                        help="continue the edits saved in FILE (same base model) and save them there after this "
                             "edit; FILE is created when missing")
    parser.add_argument("--refresh", type=int, default=None, metavar="W",
                        help="after the edit, check W earlier requests of the session (round robin) and write "
                             "again those later edits undid; needs --session")
    parser.add_argument("--lapsed-when", choices=list(get_args(LapsedWhen)), default=None,
                        help="with --refresh, what counts as undone: not_greedy (the new target is no longer the "
                             "greedy answer; the default) or old_preferred (the old answer, target_true, is again at "
                             "least as likely: fewer rewrites, less drift)")


def _check_session(args: argparse.Namespace) -> Path | None:
    """Refuse an unusable --session or --refresh before the model is loaded."""
    if args.lapsed_when is not None and args.refresh is None:
        raise CliError("--lapsed-when needs --refresh")
    if args.refresh is not None:
        if args.session is None:
            raise CliError("--refresh needs --session: it writes again earlier edits kept in the session")
        if args.refresh < 1:
            raise CliError(f"--refresh must be at least 1, got {args.refresh}")
    if args.session is None:
        return None
    path = Path(args.session).expanduser()
    if path.exists() and not path.is_file():
        raise CliError(f"--session: {path} exists and is not a file")
    if not path.parent.is_dir():
        raise CliError(f"--session: the folder {path.parent} does not exist")
    return path


def _report_refresh(report: RefreshReport) -> None:
    print(f"refresh: checked {len(report.checked)} earlier request(s), {len(report.lapsed)} lapsed, "
          f"{len(report.rewritten)} written again")
    for entry in report.rewritten:
        print(f"  written again as edit {entry.id}: {', '.join(r.label for r in entry.requests)}")
    for reason in report.failed:
        print(f"  NOT written again: {reason}")


# --- deployment gate ------------------------------------------------------------------------------------
# `run` builds the gate before loading the model (a bad policy fails fast) and hands it to `Editor.save`,
# which writes nothing unless the gate passes and otherwise raises GateFailedError, reported like every
# SutureError (the failed thresholds on stderr, exit code 2).

def add_gate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--gate", default=None, metavar="POLICY",
                        help="deployment gate for --out: a GatePolicy as a JSON object or .json file, e.g. "
                             "'{\"min_efficacy\": 1.0, \"max_drift_kl\": 0.01}'; nothing is saved unless it passes")


def gate_from_args(args: argparse.Namespace) -> Gate | None:
    """The gate a checkpoint must pass before --out writes it; None saves unconditionally."""
    if args.gate is None:
        return None
    if args.out is None:
        raise CliError("--gate needs --out: the gate decides whether the checkpoint is written")
    from pydantic import ValidationError

    from suture.evaluation import GatePolicy

    try:
        return GatePolicy.model_validate(load_json_object(args.gate, "--gate"))
    except ValidationError as exc:
        problems = "; ".join(f"field '{'.'.join(map(str, e['loc']))}': {e['msg']}" for e in exc.errors())
        raise CliError(f"--gate: {problems}") from None


def _gate_line(decision: dict) -> str:
    """What the gate measured when it passed (the whole evaluation is in the manifest)."""
    report = decision.get("report") or {}
    post, drift, generated = report.get("post") or {}, report.get("drift") or {}, report.get("generated") or {}
    measured = [("efficacy", post.get("efficacy")), ("paraphrase", post.get("paraphrase")),
                ("neighborhood drop", report.get("neighborhood_drop")), ("drift KL", drift.get("mean_kl")),
                ("generated efficacy", generated.get("efficacy"))]
    values = ", ".join(f"{name} {value:.4g}" for name, value in measured if isinstance(value, int | float))
    unjudged = f"; not measured: {', '.join(decision['not_measured'])}" if decision.get("not_measured") else ""
    return f"gate passed: {values}{unjudged}"


# --- requests --------------------------------------------------------------------------------------------

def read_requests(path: Path) -> list[EditRequest]:
    """EditRequests from a JSONL file; a bad line raises InvalidRequestError naming `FILE:LINE` and the field."""
    from suture.evaluation import load_requests_jsonl

    if not path.is_file():
        raise CliError(f"--requests: {path} does not exist or is not a file")
    return load_requests_jsonl(path)


# --- the command -----------------------------------------------------------------------------------------

def run(args: argparse.Namespace) -> int:
    from suture.editor.conflicts import refuse_clashes
    from suture.editor.device import pick_dtype
    from suture.editor.registry import get_method

    # Everything that can be checked without the model is checked first.
    requests = read_requests(Path(args.requests))
    hparams = load_hparams(args.hparams)
    method = get_method(args.method)
    if method.takes_requests:
        refuse_clashes(requests)  # conflicting or duplicate requests, before minutes of loading
    out = output_dir("--out", args.out)
    check_device(args.device)
    pick_dtype(args.dtype, None)  # an unknown --dtype fails here, naming the choices, not after loading
    gate = gate_from_args(args)
    session = _check_session(args)
    if args.max_new_tokens < 1:
        raise CliError("--max-new-tokens must be at least 1")
    print(f"{len(requests)} edit request(s) from {args.requests}; method {args.method}")

    timer = Timer()
    editor, timer.seconds["load"] = load_editor(args.model, args.device, args.dtype)
    method.resolve_hparams(editor.handle, hparams)  # bad hyperparameters fail before any generation
    if session is not None and session.is_file():
        with timer("session load"):
            editor.restore_session(session)
        print(f"continuing {len(editor.ledger)} earlier edit(s) from {session}")

    prompts = [r.text for r in requests]
    with timer("answers before"):
        before = editor.generate(prompts, max_new_tokens=args.max_new_tokens)

    with timer("edit"), edit_progress(desc=f"{args.method}") as progress:
        result = editor.apply(requests, method=args.method, progress=progress,
                              keep_failed=True if args.keep_failed else None, **hparams)
    print(f"edit {result.id} ({result.method}) applied in {format_seconds(result.seconds)}: "
          f"{len(result.deltas)} weight delta(s), status {result.status}")
    for verdict in result.failed:
        print(f"  FAILED (kept: --keep-failed) {verdict.request}: {verdict.reason}")
    for delta in result.deltas:
        rank = "dense" if delta.rank is None else f"rank {delta.rank}"
        print(f"  {delta.module}.{delta.param}: {rank}, norm {delta.norm:.4g}")

    if args.refresh is not None:
        with timer("refresh"):
            lapsed_when = {"lapsed_when": args.lapsed_when} if args.lapsed_when else {}
            _report_refresh(editor.refresh(args.refresh, keep_failed=args.keep_failed, **lapsed_when))

    with timer("answers after"):
        after = editor.generate(prompts, max_new_tokens=args.max_new_tokens)
    hits = 0
    for i, (request, old, new) in enumerate(zip(requests, before, after, strict=True), 1):
        hit = says(new, request.target_new)
        hits += hit
        name = f" ({request.id})" if request.id else ""
        print(f"[{i}]{name} {request.text} -> {request.target_new!r}: before {short(old)!r}, "
              f"after {short(new)!r} [{'ok' if hit else 'missed'}]")
    print(f"{hits}/{len(requests)} request(s) now answered with their new target")

    if out is not None:
        with timer("save" if gate is None else "gate and save"):
            saved = editor.save(out, gate=gate)
        if gate is not None:
            print(_gate_line(json.loads((saved / "suture.json").read_text())["gate"]))
        print(f"saved the edited checkpoint to {saved} (manifest {saved / 'suture.json'})")
    if session is not None:  # last: a failed gate leaves the session as it was, like a failed edit
        with timer("session save"):
            editor.save_session(session)
        print(f"saved the session ({len(editor.ledger)} edit(s)) to {session}")
    total = sum(timer.seconds.values())
    print(f"timing: {timer.summary()} (total {format_seconds(total)})")
    return EXIT_OK
