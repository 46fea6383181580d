"""Null-space editing's running state: K_pK_pᵀ kept as a running sum, recomputed after a revert, and the
projector computed once per covariance."""

import pytest
import torch
from test_memit import BASE, OBJECTIVE, REQUESTS
from tiny import tiny_model

from suture.editor import Editor
from suture.methods.shared.least_squares import NullSpace
from suture.methods.shared.preserved_keys import cached_projector, earlier_keys_gram

SPACE = {"threshold": 0.5, "l2": 1e-4}


def gram_from_ledger(editor, layer):
    keys = [g[layer] for e in editor.ledger for g in e.artifacts["keys"] if layer in g]
    k = torch.cat(keys).double()
    return k.T @ k


def test_running_gram_equals_the_ledger_sum_and_follows_reverts():
    model, tok = tiny_model("llama")
    editor = Editor.from_model(model, tok)
    ctx = editor.context
    assert earlier_keys_gram(ctx, 2) is None
    for request in REQUESTS:
        editor.apply([request], method="memit", layers=[1, 2], null_space=SPACE, objective=OBJECTIVE,
                     keep_failed=True, **BASE)
        assert torch.allclose(earlier_keys_gram(ctx, 2), gram_from_ledger(editor, 2))
    editor.revert(2)  # the running sum holds three entries; the ledger now one
    assert torch.allclose(earlier_keys_gram(ctx, 2), gram_from_ledger(editor, 2))
    editor.apply([REQUESTS[2]], method="rome", layer=2, null_space=SPACE, objective=OBJECTIVE,
                 keep_failed=True, **BASE)  # ROME's keys count too (one-request groups)
    assert torch.allclose(earlier_keys_gram(ctx, 2), gram_from_ledger(editor, 2))
    editor.revert(2)
    assert earlier_keys_gram(ctx, 2) is None


def test_an_edit_rolled_back_mid_way_leaves_the_running_sum_on_the_ledger(monkeypatch):
    """Later groups of one call see the earlier groups' keys, but only settled ledger entries enter the running
    sum: a grouped edit interrupted (or rolled back after its verdicts) costs no re-sum of the ledger."""
    model, tok = tiny_model("llama")
    editor = Editor.from_model(model, tok)
    hparams = {"layers": [1, 2], "preserve_earlier": 1.0, "objective": OBJECTIVE, **BASE}
    editor.apply(REQUESTS[:1], method="memit", keep_failed=True, **hparams)
    seen = []
    original = earlier_keys_gram

    def watched(ctx, layer):
        gram = original(ctx, layer)
        if layer == 2:
            seen.append((len(ctx.memo[("earlier_keys_gram", layer)][0]), float(gram.trace())))
        return gram

    import suture.methods.memit.method as memit_method

    class Interrupted(Exception):
        pass

    def interrupt(stage, fraction):  # the second group's solves done: the edit is rolled back
        if stage.startswith("layers (request 2/2)") and fraction == 1.0:
            raise Interrupted

    monkeypatch.setattr(memit_method, "earlier_keys_gram", watched)
    with pytest.raises(Interrupted):
        editor.apply(REQUESTS[1:], method="memit", group_size=1, progress=interrupt, **hparams)
    monkeypatch.undo()
    assert len(editor.ledger) == 1
    summed = [count for count, _ in seen]
    assert set(summed) == {1}  # only the settled entry was ever summed
    assert len(seen) == 2 and seen[1][1] > seen[0][1]  # the second group also held the first group's keys
    assert editor.context.memo[("earlier_keys_gram", 2)][0] == [(editor.ledger[0].id, 0)]
    assert torch.allclose(earlier_keys_gram(editor.context, 2), gram_from_ledger(editor, 2))


def test_projector_is_computed_once_per_covariance():
    model, tok = tiny_model("llama")
    editor = Editor.from_model(model, tok)
    mom2 = torch.diag(torch.arange(1.0, 9.0))
    first = cached_projector(editor.context, 1, mom2, NullSpace(threshold=0.5))
    assert cached_projector(editor.context, 1, mom2, NullSpace(threshold=0.5)) is first
    assert cached_projector(editor.context, 1, mom2.clone(), NullSpace(threshold=0.5)) is not first
    assert cached_projector(editor.context, 1, mom2, NullSpace(threshold=0.6)) is not first
