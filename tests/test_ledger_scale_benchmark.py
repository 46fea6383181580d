"""benchmarks/ledger_scale.py on a tiny model: the summed update scaled and restored exactly, scale 0 is the
unedited model and scale 1 the session as it is."""

import argparse
import sys
from pathlib import Path

import torch
from test_memit import BASE, OBJECTIVE, REQUESTS
from tiny import tiny_model

from suture.editor import Editor

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import ledger_scale  # noqa: E402


def test_scales_run_from_the_unedited_model_to_the_session_and_leave_the_weights_as_they_were():
    editor = Editor.from_model(*tiny_model("llama"))
    case = REQUESTS[0]
    editor.apply([case], method="memit", keep_failed=True, force=True,
                 **{"layers": [0, 1], "objective": OBJECTIVE, **BASE})
    before = {k: v.clone() for k, v in editor.model.state_dict().items()}
    with ledger_scale.scaled_update(editor, 0.0):
        with editor.weights.base_weights():
            base = {k: v.clone() for k, v in editor.model.state_dict().items()}
        assert all(torch.equal(v, base[k]) for k, v in editor.model.state_dict().items())
    with ledger_scale.scaled_update(editor, 0.5):
        key = editor.weights.touched[0]
        module, _, name = key.rpartition(".")
        half = getattr(editor.model.get_submodule(module), name)
        assert torch.allclose(half, (before[key] + base[key]) / 2, atol=1e-6)
    assert all(torch.equal(v, before[k]) for k, v in editor.model.state_dict().items())

    generated = argparse.Namespace(generation={"answer_tokens": 2, "neighbor_tokens": 2, "generation_prompts": 0},
                                   answers=None, generated_sample=1)
    case = case.model_copy(update={"paraphrases": [case.text], "neighbors": ["The capital of Spain is"]})
    rows = list(ledger_scale.scale_rows(editor, [case], [0.0, 1.0], generated=generated))
    assert [r["scale"] for r in rows] == [0.0, 1.0]
    assert rows[0]["drift_kl"] < 1e-9 and rows[1]["drift_kl"] > 0
    assert all(r["facts"] <= 1 and 0 <= r["lapsed_old_preferred"] <= r["facts"] for r in rows)
    assert all(0 <= r["lapsed_not_greedy"] <= r["facts"] for r in rows)
    assert [r["gen_cases"] for r in rows] == [1, 1] and rows[0]["gen_locality"] == 1.0  # scale 0: nothing moved
    assert all(torch.equal(v, before[k]) for k, v in editor.model.state_dict().items())
