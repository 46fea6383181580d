"""Save and restore an editing session: the ledger with every delta, so that a long run of edits (months of
corrections, or a 1,000-edit benchmark split over several sittings) continues where it stopped, bit for bit.

The file holds plain containers, strings, numbers and tensors only (requests and verdicts as their JSON
form), written with `torch.save` and read with `weights_only=True`: loading a session file runs no code
from it. Whatever a later edit reads from earlier ones (ROME / MEMIT keys for null-space preservation, the
deltas for norm growth) is in the entries, so the restored editor edits exactly as the original would.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from suture.editor.deltas import WeightDelta
from suture.editor.errors import SutureError
from suture.editor.ledger import LedgerEntry
from suture.editor.requests import EditRequest
from suture.editor.verdicts import RequestVerdict

FORMAT = "suture-session/1"
_DELTA_FIELDS = ("module", "param", "left", "right", "dense", "create")


def _entry_state(entry: LedgerEntry) -> dict[str, Any]:
    return {"id": entry.id, "method": entry.method, "hparams": entry.hparams, "seconds": entry.seconds,
            "created": entry.created, "details": _plain(entry.details), "artifacts": _plain(entry.artifacts),
            "requests": [r.model_dump(mode="json") for r in entry.requests],
            "verdicts": [v.model_dump(mode="json") for v in entry.verdicts],
            "deltas": [{f: getattr(d, f) for f in _DELTA_FIELDS} for d in entry.deltas]}


def _entry(state: dict[str, Any]) -> LedgerEntry:
    return LedgerEntry(method=state["method"], hparams=state["hparams"],
                       requests=[EditRequest.model_validate(r) for r in state["requests"]],
                       deltas=[WeightDelta(**d) for d in state["deltas"]], seconds=state["seconds"],
                       details=state["details"], artifacts=state["artifacts"],
                       verdicts=[RequestVerdict.model_validate(v) for v in state["verdicts"]],
                       id=state["id"], created=state["created"])


def _plain(value: Any) -> Any:
    """`value` with only what `weights_only` loading accepts: containers, str, numbers, None, tensors (CPU).
    Anything else (an enum, a numpy scalar) becomes its str or number."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {k if isinstance(k, (str, int)) else str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)


def write_session(ledger: list[LedgerEntry], base_fingerprint: str, path: str | Path,
                  extra: dict[str, Any] | None = None, editor_state: dict[str, Any] | None = None) -> Path:
    """Write `ledger` (every entry with its deltas) to `path`, atomically: a run stopped while writing leaves
    the previous file. `extra` (plain values and tensors) travels with it, e.g. a benchmark's progress;
    `editor_state` is the editor's own (where its next refresh starts)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {"format": FORMAT, "base_fingerprint_sha256": base_fingerprint,
             "entries": [_entry_state(e) for e in ledger], "extra": _plain(extra or {}),
             "editor": _plain(editor_state or {})}
    partial = path.with_name(path.name + ".partial")
    torch.save(state, partial)
    os.replace(partial, path)
    return path


def read_session(path: str | Path, base_fingerprint: str,
                 ) -> tuple[list[LedgerEntry], dict[str, Any], dict[str, Any]]:
    """The ledger entries, `extra` and the editor's own state saved at `path` (empty in older files).

    Raises SutureError when the file is not a session, or was saved on another base model (or dtype).
    """
    try:
        state = torch.load(Path(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling refused, or not a torch file: name the file, not the unpickler
        raise SutureError(f"session {path}: not a suture session file ({type(exc).__name__}: {exc})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise SutureError(f"session {path}: not a {FORMAT} file")
    if state["base_fingerprint_sha256"] != base_fingerprint:
        raise SutureError(f"session {path}: saved on base model {state['base_fingerprint_sha256'][:16]}…, but "
                          f"this model is {base_fingerprint[:16]}… (another model, or another dtype)")
    return [_entry(e) for e in state["entries"]], state["extra"], state.get("editor", {})
