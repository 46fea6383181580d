"""Lifelong editing: earlier edits that later edits undid, found and written again (`Editor.refresh`).

Over hundreds of sequential edits some earlier facts stop holding: a later update, written at keys that
resemble an earlier subject's, moves that subject's answer back. In the 1,000-edit run of the best
sequential variant, efficacy fell from 0.980 at 250 edits to 0.946 at 1,000 while the edits themselves still
took when made (BENCHMARKS.md, "The least write that still takes"). A refresh checks a window of the
ledger's requests, round robin, each in one teacher-forced pass, and writes again, as a new ledger entry with
the original entry's method and hyperparameters, each request that was written when made (every target
token the greedy choice, its verdict's `token_greedy`) and no longer is. While it is written the original
entries' keys for that request are released (`EditContext.released`): methods that hold earlier edits'
keys fixed (`preserve_earlier`, `null_space`) would otherwise hold the very output the refresh must change.

What is checked: the latest ledger entry of each (prompt, subject); an older entry of the same key with
another target was superseded by the user, and is never written back. Requests whose edit never took are
not candidates (writing them again would fail again). The cost per call is the window's one batched pass
plus one edit per lapsed request, so a caller refreshing a fixed window after each edit keeps the time of an
edit flat while the ledger grows.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Literal, get_args

from pydantic import BaseModel, Field

from suture.editor.errors import InvalidInputError
from suture.editor.ledger import EditResult, LedgerEntry
from suture.editor.verdicts import EditRequestsFailedError, target_token_checks

if TYPE_CHECKING:
    from suture.editor.editor import Editor


class RefreshReport(BaseModel):
    """What one `Editor.refresh` call checked and wrote."""

    checked: list[str] = Field(default_factory=list, description="labels of the requests checked, in order")
    lapsed: list[str] = Field(default_factory=list, description="those found lapsed (`lapsed_when`)")
    rewritten: list[EditResult] = Field(default_factory=list, description="the new ledger entries, one per "
                                        "lapsed request written again")
    failed: list[str] = Field(default_factory=list, description="lapsed requests whose rewrite failed its "
                              "verdict and was rolled back, with the reason")
    held: list[str] = Field(default_factory=list, description="lapsed by the token check but still the greedy "
                            "answer when generated (left alone: apply found nothing to change)")


def refresh_candidates(ledger: list[LedgerEntry]) -> list[tuple[LedgerEntry, int]]:
    """(entry, request position) of every request that is the latest word on its (prompt, subject) and was
    written when made, in ledger order (by its latest entry)."""
    latest: dict[tuple[str, str], tuple[LedgerEntry, int]] = {}
    for entry in ledger:
        for position, request in enumerate(entry.requests):
            key = (request.prompt, request.subject)
            latest.pop(key, None)  # re-inserted last: ordered by the latest write
            latest[key] = (entry, position)
    return [(entry, position) for entry, position in latest.values() if _written_when_made(entry, position)]


def held_facts(ledger: list[LedgerEntry]) -> list:
    """The requests of `refresh_candidates`: what the ledger still asks the model to hold."""
    return [entry.requests[position] for entry, position in refresh_candidates(ledger)]


def _written_when_made(entry: LedgerEntry, position: int) -> bool:
    if len(entry.verdicts) != len(entry.requests):  # applied without verification: nothing known
        return False
    return all(entry.verdicts[position].token_greedy)


def _sharing_key(ledger: list[LedgerEntry], entry: LedgerEntry, position: int) -> frozenset[tuple[str, int]]:
    """(entry id, position) of every ledger request on the same (prompt, subject): all of them wrote at
    the key the refresh writes at again."""
    request = entry.requests[position]
    return frozenset((e.id, p) for e in ledger for p, r in enumerate(e.requests)
                     if (r.prompt, r.subject) == (request.prompt, request.subject))


# When a candidate counts as lapsed. "not_greedy": some target token is no longer the greedy choice (what the
# verdict asks; any loss of the exact answer). "old_preferred": the model again gives the old answer at least
# the new one's probability, summed log P over each answer's tokens on the rewrite prompt (CounterFact's
# efficacy test; requests without target_true fall back to "not_greedy"). The second writes again only
# facts that went back, so fewer rewrites spend less drift (BENCHMARKS.md, "Earlier edits written again").
LapsedWhen = Literal["not_greedy", "old_preferred"]


def lapsed_requests(editor: Editor, requests: list, lapsed_when: LapsedWhen) -> list[bool]:
    """Per request, whether it counts as lapsed on the editor's current weights (`LapsedWhen`); one batched
    teacher-forced pass over the new answers and, for "old_preferred", the old ones."""
    known = [] if lapsed_when == "not_greedy" else [
        i for i, r in enumerate(requests) if r.target_true and r.target_true.strip() != r.target_new.strip()]
    # The old answer is spelled by the rule, as CounterFact's efficacy spells it: a request's target_space
    # says how its new answer follows the prompt, not the old one.
    old = [requests[i].model_copy(update={"target_new": requests[i].target_true, "target_space": None})
           for i in known]
    probs, greedy = target_token_checks(editor.handle, requests + old)  # one pass: new answers, then old ones
    lapsed = [not all(tokens) for tokens in greedy[: len(requests)]]
    for i, p_old in zip(known, probs[len(requests):], strict=True):
        lapsed[i] = _logp(p_old) >= _logp(probs[i])
    return lapsed


def _logp(token_probs: list[float]) -> float:
    return sum(math.log(max(p, 1e-45)) for p in token_probs)


def refresh_lapsed(editor: Editor, window: int, start: int, keep_failed: bool = False,
                   lapsed_when: LapsedWhen = "not_greedy") -> tuple[RefreshReport, int]:
    """Check `window` candidates from position `start` (mod their number, wrapping) and write each lapsed
    one again (`lapsed_when`: see `LapsedWhen`). Returns the report and the position to start from next time.

    Raises InvalidInputError for a window below 1 or an unknown `lapsed_when`. An error while writing one
    request again (other than a failed verdict) propagates; that request's edit is then rolled back and the
    ledger keeps what was written before it."""
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise InvalidInputError(f"window: must be a whole number of requests >= 1, got {window!r}")
    if lapsed_when not in get_args(LapsedWhen):
        raise InvalidInputError(f"lapsed_when: must be 'not_greedy' or 'old_preferred', got {lapsed_when!r}")
    candidates = refresh_candidates(editor.ledger)
    if not candidates:
        return RefreshReport(), 0
    begin = start % len(candidates)
    picked = [candidates[(begin + i) % len(candidates)] for i in range(min(window, len(candidates)))]
    requests = [entry.requests[position] for entry, position in picked]
    report = RefreshReport(checked=[r.label for r in requests])
    for (entry, position), request, lapsed in zip(picked, requests, lapsed_requests(editor, requests, lapsed_when),
                                                  strict=True):
        if not lapsed:
            continue
        report.lapsed.append(request.label)
        editor.context.released = _sharing_key(editor.ledger, entry, position)
        try:
            result = editor.apply([request], method=entry.method, keep_failed=keep_failed, **entry.hparams)
        except EditRequestsFailedError as failed:
            report.failed.append(f"{request.label}: {failed.verdicts[0].reason}")
            continue
        finally:
            editor.context.released = frozenset()
        if not result.requests:  # apply's no-op check: the generated answer still names the target
            report.held.append(request.label)
            continue
        editor.ledger[-1].details["refreshes"] = {"entry": entry.id, "request": position}
        report.rewritten.append(EditResult.from_entry(editor.ledger[-1]))
    return report, begin + len(picked)
