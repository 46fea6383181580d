"""What null-space editing (AlphaEdit, Fang et al. 2025, arXiv 2410.02355) preserves, computed once per
editor instead of once per edit, so that the time of an edit does not grow with the number of earlier edits:

- the projector onto the null space of the key covariance C (an eigendecomposition of a d_in x d_in
  matrix, 2.7 s for SmolLM2's 1,536 dimensions on one loaded core), kept per covariance and threshold;
- K_p K_pᵀ over the keys every earlier edit wrote at a layer, kept as a running sum that adds only the
  entries appended since the last call, and summed again from the ledger when the ledger is not an
  extension of what was summed (after a revert);
- less the keys of requests the edit being applied writes again (`EditContext.released`, a refresh of
  requests later edits undid): holding them would hold the output the refresh must change.
"""

from __future__ import annotations

import torch

from suture.editor import EditContext
from suture.editor.ledger import InProgressEntry
from suture.methods.shared.least_squares import NullSpace, null_space_projector


def cached_projector(ctx: EditContext, layer: int, mom2: torch.Tensor, space: NullSpace) -> torch.Tensor:
    """`null_space_projector(mom2, ...)` [d_in, d_in], float64, computed once per covariance tensor."""
    key = ("null_space_projector", layer, space.threshold, space.energy)
    held = ctx.memo.get(key)
    if held is None or held[0] is not mom2:  # the context keeps one tensor per covariance: identity is enough
        held = (mom2, null_space_projector(mom2, space.threshold, space.energy))
        ctx.memo[key] = held
    return held[1]


def _written_keys(ctx: EditContext, layer: int) -> list[tuple[tuple[str, int], torch.Tensor, bool]]:
    """(entry id, group index), keys [n, d_in] and whether the entry is settled in the ledger, for every
    earlier entry that kept keys at `layer`; the last may be an edit still being applied (earlier groups
    of the same call)."""
    out = []
    for entry in ctx.history():
        kept = entry.artifacts.get("keys")
        groups = kept if isinstance(kept, list) else [kept] if kept is not None else []
        settled = not isinstance(entry, InProgressEntry)
        out += [((entry.id, i), group[layer], settled) for i, group in enumerate(groups) if layer in group]
    return out


def earlier_keys_gram(ctx: EditContext, layer: int) -> torch.Tensor | None:
    """K_p K_pᵀ [d_in, d_in] (float64) over the keys earlier edits wrote at `layer`, or None if there are none.
    The running sum covers settled ledger entries only, so an edit rolled back mid-way costs no re-sum."""
    written = _written_keys(ctx, layer)
    settled = [(ident, keys) for ident, keys, done in written if done]
    ids = [ident for ident, _ in settled]
    key = ("earlier_keys_gram", layer)
    summed_ids, gram = ctx.memo.get(key, ([], None))
    if ids[: len(summed_ids)] != summed_ids:  # an entry was reverted or changed: sum again from the ledger
        summed_ids, gram = [], None
    for _, keys in settled[len(summed_ids):]:
        gram = _add_gram(gram, keys)
    ctx.memo[key] = (ids, gram)
    for _, keys, done in written:
        if not done:  # added to a copy: the in-progress edit may still be rolled back
            gram = _add_gram(gram, keys)
    for keys in _released_keys(ctx, layer) if gram is not None else []:
        k = keys.double().to(gram.device)
        gram = gram - k.T @ k  # a new tensor: the running sum keeps every settled key
    return gram


def _released_keys(ctx: EditContext, layer: int) -> list[torch.Tensor]:
    """Rows [m, d_in] of settled entries' keys at `layer` that belong to released requests. A group's rows are
    its requests' in order (`request_positions`, one list per compute call); a group whose rows are not one
    per request is released whole when any of its requests is (its rows are the keys the refresh writes at)."""
    if not ctx.released:
        return []
    out = []
    for entry in ctx.history():
        if isinstance(entry, InProgressEntry) or not any(ident == entry.id for ident, _ in ctx.released):
            continue
        kept = entry.artifacts.get("keys")
        groups = kept if isinstance(kept, list) else [kept] if kept is not None else []
        positions = entry.artifacts.get("request_positions")
        if positions is None and len(groups) == 1:  # saved before positions were kept: one call, all requests
            positions = [list(range(len(entry.requests)))]
        for group, members in zip(groups, positions or [], strict=False):
            if layer not in group:
                continue
            rows = [j for j, p in enumerate(members) if (entry.id, p) in ctx.released]
            if rows:
                keys = group[layer]
                out.append(keys[rows] if keys.shape[0] == len(members) else keys)
    return out


def _add_gram(gram: torch.Tensor | None, keys: torch.Tensor) -> torch.Tensor:
    k = keys.double()
    return k.T @ k if gram is None else gram + k.T.to(gram.device) @ k.to(gram.device)


def sum_grams(*grams: torch.Tensor | None) -> torch.Tensor | None:
    """The sum of the preserved-key grams [d_in, d_in] that are given, on the first one's device and in its
    dtype (None when none is): the ledger's grams live where its kept keys do, the word keys' where the model
    runs."""
    given = [g for g in grams if g is not None]
    if not given:
        return None
    total = given[0]
    for gram in given[1:]:
        total = total + gram.to(total.device, total.dtype)
    return total
