"""Lifelong editing: the ledger's summed fact edits shrunk to the least scale at which its facts still hold
(`Editor.consolidate`).

Each edit is written when made at a little more than the least scale that takes it (`least_write`'s
headroom), so that later edits do not undo it; many later edits add to some facts' margins and take from
others'. A drift of ordinary text grows about as the square of the summed update, so giving back the
headroom the ledger as a whole no longer needs is drift removed at a price the caller sets: the summed
update of the fact edits, ΔW = W - W₀ over every entry that wrote requests, becomes s·ΔW for the least
scale s (in `step`s down from 1, not below `min_scale`) at which at most a share `max_lapsed` of the
ledger's facts that held at full scale count as lapsed (`refresh.LapsedWhen`, on each fact's rewrite
prompt: its paraphrases and neighbors are left to evaluation). It is written as one ledger entry with dense
deltas (s - 1)·ΔW, so it is reverted, saved and restored like an edit; a ledger export replays it at its
recorded scale, and a later consolidation scales what is in force. Entries
without requests (head interventions) are left as they are: no fact test guards them.
"""

from __future__ import annotations

import math
import time
import uuid
from typing import TYPE_CHECKING, Any, get_args

from pydantic import BaseModel, Field

from suture.editor.deltas import WeightDelta
from suture.editor.errors import InvalidInputError
from suture.editor.ledger import CONSOLIDATION, EditResult, LedgerEntry
from suture.editor.refresh import LapsedWhen, held_facts, lapsed_requests

if TYPE_CHECKING:
    from suture.editor.editor import Editor


class ConsolidationReport(BaseModel):
    """What one `Editor.consolidate` call measured and wrote."""

    scale: float = Field(description="the scale of the fact edits' summed update now (1.0: nothing written)")
    facts: int = Field(description="facts checked: the latest word on each (prompt, subject), written when made")
    lapsed_before: int = Field(description="facts lapsed before the call")
    lapsed_after: int = Field(description="facts lapsed at the scale written")
    tried: list[tuple[float, int]] = Field(default_factory=list, description="(scale, facts lapsed) per scale "
                                           "checked, from 1 down")
    entry: EditResult | None = Field(None, description="the ledger entry written, if any")


def _in_scope(entry: LedgerEntry) -> bool:
    return bool(entry.requests) or entry.method == CONSOLIDATION


def summed_update(ledger: list[LedgerEntry]) -> list[WeightDelta]:
    """One dense delta per parameter: the sum of every fact edit's (and earlier consolidation's) deltas."""
    sums: dict[str, WeightDelta] = {}
    for entry in filter(_in_scope, ledger):
        for delta in entry.deltas:
            change = delta.materialize().float()
            held = sums.get(delta.key)
            if held is None:
                sums[delta.key] = WeightDelta(delta.module, delta.param, dense=change.clone(), create=delta.create)
            else:
                held.dense += change.to(held.dense.device)
                held.create = held.create or delta.create
    return list(sums.values())


def check_settings(max_lapsed: float, step: float, min_scale: float, lapsed_when: str) -> None:
    """InvalidInputError naming the first setting of `Editor.consolidate` out of range."""
    if not 0 <= max_lapsed <= 1:
        raise InvalidInputError(f"max_lapsed: a share of the facts in [0, 1], got {max_lapsed}")
    if not 0.001 <= step <= 0.5:
        raise InvalidInputError(f"step: in [0.001, 0.5], got {step}")
    if not 0 <= min_scale < 1:
        raise InvalidInputError(f"min_scale: in [0, 1), got {min_scale}")
    if lapsed_when not in get_args(LapsedWhen):
        raise InvalidInputError(f"lapsed_when: must be 'not_greedy' or 'old_preferred', got {lapsed_when!r}")


def write_scaled(editor: Editor, scale: float, hparams: dict[str, Any], details: dict[str, Any],
                 started: float | None = None) -> EditResult:
    """Scale the fact edits' summed update by `scale` now, as one ledger entry (also how a ledger export's
    consolidation is replayed: with its recorded scale, not searched again). InvalidInputError for a scale
    outside [0, 1]."""
    if not 0 <= scale <= 1:
        raise InvalidInputError(f"scale: in [0, 1], got {scale}")
    started = time.perf_counter() if started is None else started
    deltas = [d.scaled(scale - 1.0) for d in summed_update(editor.ledger)]
    editor.weights.apply(deltas)
    entry = LedgerEntry(method=CONSOLIDATION, hparams={**hparams, "scale": scale}, requests=[], deltas=deltas,
                        seconds=time.perf_counter() - started, id=uuid.uuid4().hex[:12],
                        details={"scale": scale, **details})
    editor.ledger.append(entry)
    # What methods keep between edits and measured on the weights (a running covariance) is stale now.
    editor.context.memo.clear()
    return EditResult.from_entry(entry)


def consolidate_ledger(editor: Editor, max_lapsed: float = 0.01, step: float = 0.02, min_scale: float = 0.5,
                       lapsed_when: LapsedWhen = "old_preferred") -> ConsolidationReport:
    """Shrink the fact edits' summed update (module docstring). `max_lapsed` is a share of the facts checked:
    at most that many facts that held at full scale may lapse at the scale written. Raises InvalidInputError
    for `max_lapsed` outside [0, 1], `step` outside [0.001, 0.5], `min_scale` outside [0, 1) or an unknown
    `lapsed_when`. Writes nothing when no scale below 1 passes or nothing is in scope."""
    check_settings(max_lapsed, step, min_scale, lapsed_when)
    started = time.perf_counter()
    facts = held_facts(editor.ledger)
    update = summed_update(editor.ledger)

    def lapsed() -> list[bool]:
        return lapsed_requests(editor, facts, lapsed_when) if facts else []

    before = lapsed()
    report = ConsolidationReport(scale=1.0, facts=len(facts), lapsed_before=sum(before),
                                 lapsed_after=sum(before), tried=[(1.0, sum(before))])
    if not facts or not update:
        return report
    allowed = math.floor(max_lapsed * len(facts) + 1e-9)  # newly lapsed facts, not the net count
    scale = 1.0
    for k in range(1, math.floor((1.0 - min_scale) / step + 1e-9) + 1):
        trying = round(1.0 - k * step, 9)
        with editor.weights.trial() as book:
            book.apply([d.scaled(trying - 1.0) for d in update])
            now = lapsed()
        report.tried.append((trying, sum(now)))
        if sum(n and not b for n, b in zip(now, before, strict=True)) > allowed:
            break
        scale, report.lapsed_after = trying, sum(now)
    if scale == 1.0:
        return report
    hparams = {"max_lapsed": max_lapsed, "step": step, "min_scale": min_scale, "lapsed_when": lapsed_when}
    report.scale = scale
    report.entry = write_scaled(editor, scale, hparams, {"facts": len(facts), "lapsed_before": report.lapsed_before,
                                                         "lapsed_after": report.lapsed_after,
                                                         "tried": report.tried}, started)
    return report
