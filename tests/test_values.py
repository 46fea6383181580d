"""The value objective: requests optimized together equal requests optimized apart, now that each
request stops on its own test and settled requests leave the replayed batch."""

import pytest
import torch
from tiny import tiny_model

from editor import Editor, EditRequest
from editor.kv import ValueObjective, optimize_values

REQUESTS = [
    EditRequest(prompt="The capital of {} is", subject="Italy", target_new="London"),
    EditRequest(prompt="The mother tongue of {} is", subject="Danielle Darrieux", target_new="English"),
    EditRequest(prompt="{} plays the", subject="Toko Yasuda", target_new="guitar"),
    EditRequest(prompt="{} is located in", subject="Autonomous University of Madrid", target_new="Berlin"),
]
TEMPLATES = ["{}", "Because the weather was nice. {}", "You can find the answer. {}"]


@pytest.mark.parametrize(("family", "through_update"), [("llama", False), ("llama", True), ("gemma3_text", False)])
def test_requests_together_equal_requests_apart(family, through_update):
    model, tok = tiny_model(family)
    handle = Editor.from_model(model, tok).handle
    # A threshold the requests cross at different steps, so some settle while others go on.
    objective = ValueObjective(lr=0.01, steps=12, early_stop_nll=6.0, weight_decay=0.0, clamp_norm_factor=1000.0)
    direction = (lambda keys: keys / keys.pow(2).sum(1, keepdim=True)) if through_update else None
    together = optimize_values(handle, 1, REQUESTS, TEMPLATES, objective, read_direction=direction)
    apart = [optimize_values(handle, 1, [r], TEMPLATES, objective, read_direction=direction) for r in REQUESTS]
    assert len({s.steps for s in apart}) > 1, "the test needs requests that stop at different steps"
    assert together.steps == max(s.steps for s in apart)
    for i, alone in enumerate(apart):
        torch.testing.assert_close(together.deltas[i], alone.deltas[0], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(together.target_prob[i], alone.target_prob[0], rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(together.keys[i], alone.keys[0], rtol=1e-5, atol=1e-6)
