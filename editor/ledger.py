"""The ordered record of every edit applied in a session."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel

from suture.editor.deltas import WeightDelta
from suture.editor.requests import EditRequest
from suture.editor.verdicts import RequestVerdict

# The method field of the editor's own consolidation entries (editor/consolidate.py): not a registered method.
CONSOLIDATION = "consolidate"


@dataclass
class LedgerEntry:
    method: str
    hparams: dict[str, Any]
    requests: list[EditRequest]
    deltas: list[WeightDelta]
    seconds: float
    details: dict[str, Any] = field(default_factory=dict)
    artifacts: dict[str, Any] = field(default_factory=dict)
    verdicts: list[RequestVerdict] = field(default_factory=list)
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    created: float = field(default_factory=time.time)


@dataclass
class InProgressEntry:
    """What the earlier `compute` calls of an edit still being applied kept: its later calls see it as the
    ledger's last entry (the keys earlier groups wrote, to hold them), under the id the entry will get."""

    id: str
    artifacts: dict[str, Any]


class DeltaSummary(BaseModel):
    module: str
    param: str
    rank: int | None
    norm: float


class EditResult(BaseModel):
    """What `Editor.apply` returns: the ledger entry's id and a summary of what changed."""

    id: str
    method: str
    hparams: dict[str, Any]
    requests: list[EditRequest]
    deltas: list[DeltaSummary]
    seconds: float
    details: dict[str, Any] = {}
    verdicts: list[RequestVerdict] = []  # one per request, in order (empty when verification was off)
    status: Literal["succeeded", "partial", "unverified"] = "succeeded"

    @property
    def failed(self) -> list[RequestVerdict]:
        """The verdicts of requests that failed (kept only with `keep_failed=True`)."""
        return [v for v in self.verdicts if not v.passed]

    @classmethod
    def from_entry(cls, entry: LedgerEntry) -> EditResult:
        return cls(
            id=entry.id, method=entry.method, hparams=entry.hparams, requests=entry.requests,
            deltas=[DeltaSummary(module=d.module, param=d.param, rank=d.rank, norm=d.norm()) for d in entry.deltas],
            seconds=entry.seconds, details=entry.details, verdicts=entry.verdicts,
            status=_status(entry),
        )


def _status(entry: LedgerEntry) -> str:
    if not entry.requests:
        return "succeeded"
    if not entry.verdicts:
        return "unverified"
    if entry.details.get("noop_broken"):  # a request the model already answered no longer is
        return "partial"
    return "succeeded" if all(v.passed for v in entry.verdicts) else "partial"


def ledger_base_fingerprint(data: dict[str, Any]) -> str | None:
    """The base fingerprint a ledger export or a checkpoint manifest was made on."""
    return data.get("base_fingerprint_sha256") or (data.get("base_model") or {}).get("fingerprint_sha256")


def replay_ledger(editor: Any, data: dict[str, Any]) -> list[EditResult]:
    """Re-apply the edits of a ledger export (`Editor.ledger_json()`) or of a checkpoint manifest, in
    order, by recomputing each with its recorded method and hyperparameters."""
    from suture.editor.errors import SutureError

    edits = data.get("edits")
    if not isinstance(edits, list):
        raise SutureError("ledger: field 'edits' missing or not a list")
    recorded = ledger_base_fingerprint(data)
    if recorded and recorded != editor.handle.base_fingerprint:
        dtype = str(editor.handle.dtype).removeprefix("torch.")
        raise SutureError(f"ledger: made on base model {recorded[:16]}…, but this model is "
                          f"{editor.handle.base_fingerprint[:16]}…; refusing to apply its edits to another model "
                          f"(or to the same model loaded in another dtype: this one is {dtype})")
    results = []
    for position, edit in enumerate(edits):
        if not isinstance(edit, dict) or "method" not in edit or "requests" not in edit:
            raise SutureError(f"ledger: edit {position}: fields 'method' and 'requests' are required")
        if edit["method"] == CONSOLIDATION:  # the editor's own entry, not a method: its recorded scale again
            results.append(_replay_consolidation(editor, edit, position))
            continue
        # Methods that take no requests (head interventions) record an empty list; apply() validates.
        # The recorded requests were applied, so they are applied again even if one is now a no-op; a replay
        # reproduces what was recorded, failed requests kept with keep_failed included (their verdicts are
        # in the results).
        results.append(editor.apply(edit["requests"] or None, method=edit["method"], force=True, keep_failed=True,
                                    **edit.get("hparams", {})))
    return results


def _replay_consolidation(editor: Any, edit: dict[str, Any], position: int) -> EditResult:
    from suture.editor.consolidate import write_scaled
    from suture.editor.errors import InvalidInputError, SutureError

    hparams = edit.get("hparams") or {}
    scale = hparams.get("scale", (edit.get("details") or {}).get("scale"))
    if isinstance(scale, bool) or not isinstance(scale, (int, float)):
        raise SutureError(f"ledger: edit {position}: a consolidation needs its scale (hparams.scale), got {scale!r}")
    try:
        return write_scaled(editor, float(scale), hparams, {"replayed": True})
    except InvalidInputError as exc:
        raise SutureError(f"ledger: edit {position}: {exc}") from None
