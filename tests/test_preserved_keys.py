"""Null-space editing's running state: K_pK_pᵀ kept as a running sum, recomputed after a revert, and the
projector computed once per covariance."""

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


def test_projector_is_computed_once_per_covariance():
    model, tok = tiny_model("llama")
    editor = Editor.from_model(model, tok)
    mom2 = torch.diag(torch.arange(1.0, 9.0))
    first = cached_projector(editor.context, 1, mom2, NullSpace(threshold=0.5))
    assert cached_projector(editor.context, 1, mom2, NullSpace(threshold=0.5)) is first
    assert cached_projector(editor.context, 1, mom2.clone(), NullSpace(threshold=0.5)) is not first
    assert cached_projector(editor.context, 1, mom2, NullSpace(threshold=0.6)) is not first
