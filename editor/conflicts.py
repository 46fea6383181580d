"""Requests in one call that cannot all hold: the same subject in the same prompt with different targets.

Two such requests share their key (the key is read at the subject's last token, so it depends only on the
subject and the text before it), so a single edit can make at most one of them true: batch methods would
average them and report half an edit. They are refused, naming both positions. Exact duplicates (same
prompt, subject and target_new) are refused too, rather than merged, so that positions in the call map
one to one onto the ledger and the per-request results. Requests are compared after validation, so two
that differ only in the whitespace the policy normalizes (see `prompt_template.py`), or in whitespace
around target_new, are the same request.
"""

from __future__ import annotations

from dataclasses import dataclass

from suture.editor.requests import EditRequest, InvalidRequestError


@dataclass(frozen=True)
class Clash:
    """Requests `first` < `second` (positions in the call) edit the same subject in the same prompt."""

    first: int
    second: int
    duplicate: bool  # same target_new too

    def message(self, requests: list[EditRequest]) -> str:
        a, b = requests[self.first], requests[self.second]
        where = f"requests {self.first} and {self.second}: field 'target_new': "
        if self.duplicate:
            return (where + f"the same edit twice (prompt {a.prompt!r}, subject {a.subject!r}, target_new "
                    f"{a.target_new.strip()!r}); give it once")
        return (where + f"conflicting targets {a.target_new!r} and {b.target_new!r} for the same subject "
                f"{a.subject!r} in the same prompt {a.prompt!r}; one edit cannot make both true, keep one")


def find_clashes(requests: list[EditRequest]) -> list[Clash]:
    """Every later request that repeats or contradicts an earlier one, paired with the first it meets."""
    first_of: dict[tuple[str, str], int] = {}
    clashes = []
    for i, request in enumerate(requests):
        key = (request.prompt, request.subject)
        if key in first_of:
            j = first_of[key]
            clashes.append(Clash(j, i, requests[j].target_new.strip() == request.target_new.strip()))
        else:
            first_of[key] = i
    return clashes


# Clashes named one by one in an error; past them a count. A file of 7,000 repeated requests made an error
# of 10 MB (and the service's 422 echoed it twice).
NAMED_CLASHES = 10


def describe_clashes(clashes: list[Clash], requests: list[EditRequest]) -> str:
    """The first NAMED_CLASHES clashes, each naming both positions, then how many more there are."""
    named = "; ".join(c.message(requests) for c in clashes[:NAMED_CLASHES])
    more = len(clashes) - NAMED_CLASHES
    return named + (f"; and {more} more clash(es) of repeated subject and prompt" if more > 0 else "")


def refuse_clashes(requests: list[EditRequest]) -> None:
    """Raise InvalidRequestError naming both positions of the clashes (conflicts or duplicates)."""
    clashes = find_clashes(requests)
    if clashes:
        raise InvalidRequestError(describe_clashes(clashes, requests))


def without_clashes(requests: list[EditRequest]) -> tuple[list[EditRequest], list[Clash]]:
    """The requests with every later member of a clash left out (for benchmark files that hold some),
    and the clashes that were left out."""
    clashes = find_clashes(requests)
    dropped = {c.second for c in clashes}
    return [r for i, r in enumerate(requests) if i not in dropped], clashes
