"""The value objective: requests optimized together equal requests optimized apart, now that each
request stops on its own test and settled requests leave the replayed batch."""

import pytest
import torch
from tiny import FAMILIES, tiny_model

from suture.editor import Editor, EditRequest
from suture.editor.kv import ValueObjective, optimize_values

REQUESTS = [
    EditRequest(prompt="The capital of {} is", subject="Italy", target_new="London"),
    EditRequest(prompt="The mother tongue of {} is", subject="Danielle Darrieux", target_new="English"),
    EditRequest(prompt="{} plays the", subject="Toko Yasuda", target_new="guitar"),
    EditRequest(prompt="{} is located in", subject="Autonomous University of Madrid", target_new="Berlin"),
]
TEMPLATES = ["{}", "Because the weather was nice. {}", "You can find the answer. {}"]


@pytest.mark.parametrize(("family", "through_update", "word_boundary", "echo_factor"),
                         [("llama", False, False, 0.0), ("llama", True, False, 0.0), ("gemma3_text", False, False, 0.0),
                          ("llama", True, True, 0.0), ("llama", True, True, 1.0), ("llama", False, False, 1.0)])
def test_requests_together_equal_requests_apart(family, through_update, word_boundary, echo_factor):
    model, tok = tiny_model(family)
    handle = Editor.from_model(model, tok).handle
    # A threshold the requests cross at different steps, so some settle while others go on.
    objective = ValueObjective(lr=0.01, steps=12, early_stop_nll=6.0, weight_decay=0.0, clamp_norm_factor=1000.0,
                               word_boundary=word_boundary, echo_factor=echo_factor)
    direction = (lambda keys: keys / keys.pow(2).sum(1, keepdim=True)) if through_update else None
    together = optimize_values(handle, 1, REQUESTS, TEMPLATES, objective, read_direction=direction)
    apart = [optimize_values(handle, 1, [r], TEMPLATES, objective, read_direction=direction) for r in REQUESTS]
    assert len({s.steps for s in apart}) > 1, "the test needs requests that stop at different steps"
    assert together.steps == max(s.steps for s in apart)
    for i, alone in enumerate(apart):
        torch.testing.assert_close(together.deltas[i], alone.deltas[0], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(together.target_prob[i], alone.target_prob[0], rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(together.keys[i], alone.keys[0], rtol=1e-5, atol=1e-6)


def _replay_case(family):
    """(handle, value batch of REQUESTS × TEMPLATES, a random δ per row [rows, d], its replay at layer 1)."""
    from suture.editor.kv.prefix_replay import PrefixReplay
    from suture.editor.kv.value_layout import value_layout

    model, tok = tiny_model(family)
    handle = Editor.from_model(model, tok).handle
    batch, _ = value_layout(tok, REQUESTS, TEMPLATES, "{} is a")
    batch = batch.to(model.device)
    torch.manual_seed(0)
    d_model = model.get_input_embeddings().weight.shape[1]
    delta = torch.randn(batch.input_ids.shape[0], d_model, device=model.device) * 0.5
    return handle, batch, delta, PrefixReplay(handle, 1, batch, n_buckets=3)


@pytest.mark.parametrize("family", FAMILIES)
def test_prefix_replay_equals_a_full_pass_with_delta_at_the_subject(family):
    from suture.editor.kv.capture import edit_output, hooks
    from suture.editor.kv.readout import final_hidden

    handle, batch, delta, replay = _replay_case(family)
    model = handle.model
    assert len(set(replay.splits.tolist())) > 1  # rows really split at different positions
    assert len({b.width for b in replay.buckets}) > 1  # and buckets replay suffixes of different lengths
    normed = replay.run(lambda rows: delta[rows])
    replay.run(lambda rows: 2 * delta[rows])  # replays share the prefix caches and leave them as they were
    trained = delta.clone().requires_grad_(True)  # as the value optimization runs them: with gradients
    replay.run(lambda rows: trained[rows]).sum().backward()
    torch.testing.assert_close(replay.run(lambda rows: delta[rows]), normed, rtol=0, atol=0)

    def add(output):
        output = output.clone()
        output[torch.arange(len(output)), batch.subject_last] += delta
        return output

    with hooks(edit_output(model.get_submodule(handle.sites.mlp_out_path(1)), add)):
        full = final_hidden(handle, batch.input_ids, batch.attention_mask)
    for row in range(batch.input_ids.shape[0]):
        first, last = int(batch.subject_last[row]), int(batch.lengths[row])
        torch.testing.assert_close(normed[row, first:last], full[row, first:last], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_a_narrowed_replay_equals_a_replay_built_for_the_kept_rows(family):
    from suture.editor.kv.prefix_replay import PrefixReplay

    handle, batch, delta, replay = _replay_case(family)
    before = replay.run(lambda rows: delta[rows])
    kept = torch.tensor([11, 0, 7, 3, 14, 5], device=handle.device)  # out of order, from several buckets
    narrowed = replay.narrow(kept)
    fresh = PrefixReplay(handle, 1, batch.select(kept), n_buckets=3)
    got = narrowed.run(lambda rows: delta[kept[rows]])
    want = fresh.run(lambda rows: delta[kept[rows]])
    for local, row in enumerate(kept.tolist()):
        first, last = int(batch.subject_last[row]), int(batch.lengths[row])
        torch.testing.assert_close(got[local, first:last], want[local, first:last], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(replay.run(lambda rows: delta[rows]), before, rtol=0, atol=0)  # caches untouched
    # With a margin each row still splits where it did: a narrowed replay is a fresh one there too.
    d_in = replay.first_pass()[0].shape[1]  # the width of the edited layer's keys
    direction = torch.randn(batch.input_ids.shape[0], d_in, device=handle.device) * 0.1
    got = PrefixReplay(handle, 1, batch, margin=2, n_buckets=3).narrow(kept).run_rank_one(
        lambda rows: direction[kept[rows]], lambda rows: delta[kept[rows]])
    want = PrefixReplay(handle, 1, batch.select(kept), margin=2, n_buckets=3).run_rank_one(
        lambda rows: direction[kept[rows]], lambda rows: delta[kept[rows]])
    for local, row in enumerate(kept.tolist()):
        first, last = max(0, int(batch.subject_last[row]) - 2), int(batch.lengths[row])
        torch.testing.assert_close(got[local, first:last], want[local, first:last], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("steps", [2, 4])
def test_normalized_gradient_steps_have_length_lr_times_the_initial_value(steps):
    """Each normalized step moves δ by lr·‖v₀‖ (before the clamp): after one step ‖δ‖ is exactly that, and
    k steps never take it farther than k of them; Adam's first step moves every coordinate by lr instead."""
    model, tok = tiny_model("llama")
    handle = Editor.from_model(model, tok).handle
    request = [REQUESTS[0]]
    normalized = ValueObjective(optimizer="normalized_gradient", lr=0.3, steps=steps, early_stop_nll=0.0,
                                clamp_norm_factor=1000.0)
    found = optimize_values(handle, 1, request, TEMPLATES, normalized)
    length = 0.3 * float(found.init_values[0].norm())
    assert found.steps == steps
    if steps == 2:
        assert float(found.deltas[0].norm()) == pytest.approx(length, rel=1e-4)
    assert float(found.deltas[0].norm()) <= (steps - 1) * length * (1 + 1e-4)
    adam = optimize_values(handle, 1, request, TEMPLATES, ValueObjective(lr=0.3, steps=2, early_stop_nll=0.0,
                                                                         clamp_norm_factor=1000.0))
    width = found.init_values.shape[1]
    assert float(adam.deltas[0].norm()) == pytest.approx(0.3 * width ** 0.5, rel=1e-2)


def test_an_unknown_optimizer_is_refused_by_name():
    with pytest.raises(ValueError, match="optimizer"):
        ValueObjective(optimizer="lbfgs")
