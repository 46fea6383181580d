"""Requests that share their key (same subject, same text before it) share one value, optimized on all
their targets, instead of being averaged into half of each."""

import pytest
import torch
from tiny import tiny_model

from suture.editor import Editor, EditRequest
from suture.editor.kv import ValueObjective, optimize_values
from suture.editor.kv.shared_keys import key_groups, packed_key_groups, value_slots

PLAYS = EditRequest(prompt="{} plays the", subject="Toko Yasuda", target_new="piano")
BORN = EditRequest(prompt="{} was born in", subject="Toko Yasuda", target_new="Berlin")
OTHER = EditRequest(prompt="The capital of {} is", subject="Italy", target_new="London")
TEMPLATES = ["{}", "Because the weather was nice. {}"]


def test_slots_follow_the_text_the_key_is_read_from():
    later = EditRequest(prompt="Today {} plays the", subject="Toko Yasuda", target_new="drums")
    spaced = EditRequest(prompt="{}  was born in", subject="Toko Yasuda", target_new="Paris")  # spacing after
    assert value_slots([PLAYS, OTHER, BORN, later, spaced]) == [0, 1, 0, 2, 0]
    assert key_groups([PLAYS, OTHER, BORN, later]) == [[0, 2], [1], [3]]


@pytest.mark.parametrize("through_update", [False, True])
def test_requests_that_share_a_key_get_one_value_from_both_targets(through_update):
    model, tok = tiny_model("llama")
    handle = Editor.from_model(model, tok).handle
    objective = ValueObjective(lr=0.05, steps=6, early_stop_nll=0.0, weight_decay=0.0)
    direction = (lambda keys: keys / keys.pow(2).sum(1, keepdim=True)) if through_update else None
    shared = optimize_values(handle, 1, [PLAYS, OTHER, BORN], TEMPLATES, objective, read_direction=direction)
    torch.testing.assert_close(shared.deltas[0], shared.deltas[2])
    torch.testing.assert_close(shared.keys[0], shared.keys[2])
    alone = optimize_values(handle, 1, [PLAYS], TEMPLATES, objective, read_direction=direction)
    assert not torch.allclose(shared.deltas[0], alone.deltas[0])  # BORN's target pulled on it too
    other = optimize_values(handle, 1, [OTHER], TEMPLATES, objective, read_direction=direction)
    torch.testing.assert_close(shared.deltas[1], other.deltas[0], rtol=1e-4, atol=1e-5)  # others unchanged


def test_rome_writes_one_update_for_requests_that_share_a_key():
    model, tok = tiny_model("llama")
    editor = Editor.from_model(model, tok)
    hparams = {"layer": 1, "corpus": {"n_samples": 40, "max_tokens": 32}, "templates": {"groups": [[5, 1]]},
               "objective": {"steps": 3}}
    result = editor.apply([PLAYS, OTHER, BORN], method="rome", force=True, **hparams)
    assert len(result.deltas) == 2  # one rank-one update per key, not per request
    assert len(result.verdicts) == 3  # each request still judged on its own target


def test_requests_sharing_a_key_stay_in_one_group():
    same = [EditRequest(prompt="{} plays the", subject="Toko Yasuda", target_new="guitar"),
            EditRequest(prompt="{} was born in", subject="Toko Yasuda", target_new="Paris")]
    other = [EditRequest(prompt="The capital of {} is", subject=s, target_new="Rome") for s in ("Chile", "Peru")]
    requests = [other[0], same[0], other[1], same[1]]
    assert packed_key_groups(requests, 2) == [[0], [1, 3], [2]]
    assert packed_key_groups(requests, 3) == [[0, 1, 3], [2]]
    assert packed_key_groups(requests, 1) == [[0], [1, 3], [2]]  # one key's requests are never split
    assert packed_key_groups(requests, 10) == [[0, 1, 3, 2]]
