"""MEMIT's group_size: many facts in one call written as sequential edits of a few each."""

import torch
from tiny import tiny_model

from suture.editor import Editor, EditRequest

HPARAMS = {"layers": [1, 2], "preserve_earlier": 1.0, "corpus": {"n_samples": 40, "max_tokens": 32},
           "templates": {"groups": [[5, 2]]}, "objective": {"steps": 8, "lr": 0.05, "weight_decay": 0.0}}
REQUESTS = [
    EditRequest(prompt="The capital of {} is", subject="Italy", target_new="London"),
    EditRequest(prompt="The mother tongue of {} is", subject="Danielle Darrieux", target_new="English"),
    EditRequest(prompt="{} plays the", subject="Toko Yasuda", target_new="guitar"),
]


def _weights(editor):
    return {k: v.detach().clone() for k, v in editor.model.state_dict().items()}


def test_groups_are_the_sequential_edits_of_their_members():
    """One call with group_size 2 writes what two calls (requests 0-1, then 2) write: the second group's values
    are optimized on the first group's weights and its solves hold the first group's keys, which it finds in
    the context's history while the edit is still being applied."""
    model, tok = tiny_model("llama")
    editor = Editor.from_model(model, tok)
    base = _weights(editor)
    editor.apply(REQUESTS[:2], method="memit", keep_failed=True, **HPARAMS)
    editor.apply(REQUESTS[2:], method="memit", keep_failed=True, **HPARAMS)
    sequential = _weights(editor)
    editor.revert(2)
    seen = []
    result = editor.apply(REQUESTS, method="memit", keep_failed=True, group_size=2, **HPARAMS,
                          progress=lambda stage, fraction: seen.append((stage, fraction)))
    grouped = _weights(editor)
    assert all(torch.allclose(sequential[k], grouped[k], atol=1e-6) for k in base)
    assert any(not torch.equal(base[k], grouped[k]) for k in base)
    assert len(result.details["residual_left"]) == 2  # one entry per group
    keys = editor.ledger[-1].artifacts["keys"]
    assert [len(group[1]) for group in keys] == [2, 1]  # the keys each group wrote, held by later edits
    values = [(stage, f) for stage, f in seen if stage.startswith("value")]
    assert {stage for stage, _ in values} == {"value (group 1/2)", "value (group 2/2)"}
    fractions = [f for _, f in values]
    assert fractions == sorted(fractions) and 0 < fractions[0] <= 2 / 3 and fractions[-1] == 1.0  # one bar
    editor.revert()
    assert all(torch.equal(base[k], v) for k, v in editor.model.state_dict().items())


def test_without_preserve_a_later_group_may_overwrite_an_earlier_groups_keys():
    """The held keys come from preserve_earlier: without it the second group's solve does not hold the first
    group's keys, so the weights differ from the held run's (the option does what it says, not more)."""
    model, tok = tiny_model("llama")
    editor = Editor.from_model(model, tok)
    editor.apply(REQUESTS, method="memit", keep_failed=True, group_size=2, **HPARAMS)
    held = _weights(editor)
    editor.revert()
    loose = {k: v for k, v in HPARAMS.items() if k != "preserve_earlier"}
    editor.apply(REQUESTS, method="memit", keep_failed=True, group_size=2, **loose)
    assert any(not torch.allclose(held[k], v) for k, v in editor.model.state_dict().items())
