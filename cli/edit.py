"""`suture edit`: apply the requests of a JSONL file to a model as one edit, show the answers before and
after, and optionally save the edited checkpoint."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

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
    says,
    short,
)

if TYPE_CHECKING:
    from suture.editor import EditRequest, Gate

EPILOG = """\
FILE.jsonl holds one edit request per line (blank lines are skipped), for example:
  {"prompt": "The capital of {} is", "subject": "France", "target_new": "Rome", "target_true": "Paris"}
Fields: prompt (with one '{}' for the subject), subject, target_new, and optionally target_true,
paraphrases, neighbors (lists of prompts) and id.

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
    parser.set_defaults(run=run)
    return parser


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


# --- requests --------------------------------------------------------------------------------------------

def read_requests(path: Path) -> list[EditRequest]:
    """EditRequests from a JSONL file; a bad line raises InvalidRequestError naming `FILE:LINE` and the field."""
    from suture.evaluation import load_requests_jsonl

    if not path.is_file():
        raise CliError(f"--requests: {path} does not exist or is not a file")
    return load_requests_jsonl(path)


def _check_out(out: str | None) -> Path | None:
    """Refuse an unusable --out before minutes are spent editing."""
    if out is None:
        return None
    path = Path(out).expanduser()
    if path.exists() and not path.is_dir():
        raise CliError(f"--out: {path} exists and is not a directory")
    if path.is_dir() and any(path.iterdir()):
        raise CliError(f"--out: {path} exists and is not empty; choose a new output directory")
    return path


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
    out = _check_out(args.out)
    check_device(args.device)
    pick_dtype(args.dtype, None)  # an unknown --dtype fails here, naming the choices, not after loading
    gate = gate_from_args(args)
    if args.max_new_tokens < 1:
        raise CliError("--max-new-tokens must be at least 1")
    print(f"{len(requests)} edit request(s) from {args.requests}; method {args.method}")

    timer = Timer()
    editor, timer.seconds["load"] = load_editor(args.model, args.device, args.dtype)
    method.resolve_hparams(editor.handle, hparams)  # bad hyperparameters fail before any generation

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
        with timer("save"):
            saved = editor.save(out, gate=gate)
        print(f"saved the edited checkpoint to {saved} (manifest {saved / 'suture.json'})")
    total = sum(timer.seconds.values())
    print(f"timing: {timer.summary()} (total {format_seconds(total)})")
    return EXIT_OK
