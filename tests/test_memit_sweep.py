"""benchmarks/memit_sweep.py on a tiny model: one value optimization serves every setting, and a setting
served from the reused values writes what a fresh MEMIT call with that setting writes."""

import json
import sys
from pathlib import Path

import pytest
import torch
from test_memit import BASE, OBJECTIVE, REQUESTS, out_in
from tiny import tiny_model

from suture.editor import Editor
from suture.methods.memit import Memit

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import memit_sweep  # noqa: E402


def test_one_value_optimization_serves_every_setting(monkeypatch):
    model, tok = tiny_model("llama")
    editor = Editor.from_model(model, tok)
    cases = [r.model_copy(update={"target_true": r.target_true or "Paris", "paraphrases": [r.text],
                                  "neighbors": ["The capital of Spain is"]}) for r in REQUESTS[:2]]
    original = Memit.target_deltas
    calls = []

    def counted(*args):
        calls.append(1)
        return original(*args)

    monkeypatch.setattr(Memit, "target_deltas", counted)
    written = []
    rows = memit_sweep.sweep(editor, cases, [[2, 3], [1, 2, 3]], [1.0, 0.5], objective=OBJECTIVE,
                             on_row=lambda row: written.append(out_in(editor, 2)), rounds=[1, 2], **BASE)
    assert len(calls) == 1
    assert [r["setting"] for r in rows] == [{"layers": layers, "mom2_weight_per_dim": weight, "rounds": rounds}
                                           for layers in ([2, 3], [1, 2, 3]) for weight in (1.0, 0.5)
                                           for rounds in (1, 2)]
    assert len({json.dumps(r["residual_left"]) for r in rows}) == 8  # the settings really differ
    assert Memit.target_deltas is counted and not editor.ledger  # the patch is undone, every edit reverted

    editor.apply(cases, method="memit", keep_failed=True, layers=[1, 2, 3], mom2_weight_per_dim=0.5, rounds=2,
                 objective=OBJECTIVE, **BASE)
    torch.testing.assert_close(out_in(editor, 2), written[7], rtol=1e-5, atol=1e-6)


def test_values_file_lets_a_second_sweep_skip_the_value_optimization(monkeypatch, tmp_path):
    model, tok = tiny_model("llama")
    editor = Editor.from_model(model, tok)
    cases = [r.model_copy(update={"target_true": r.target_true or "Paris", "paraphrases": [r.text],
                                  "neighbors": ["The capital of Spain is"]}) for r in REQUESTS[:2]]
    values = tmp_path / "values.pt"
    first = memit_sweep.sweep(editor, cases, [[2, 3]], [1.0], objective=OBJECTIVE, values=values, **BASE)
    assert values.is_file()

    def never(*args):
        raise AssertionError("the values should come from the file")

    monkeypatch.setattr(Memit, "target_deltas", never)
    second = memit_sweep.sweep(editor, cases, [[2, 3]], [1.0], objective=OBJECTIVE, values=values, **BASE)
    assert second[0]["residual_left"] == first[0]["residual_left"]
    with pytest.raises(AssertionError, match="from the file"):  # another objective is another key
        memit_sweep.sweep(editor, cases, [[2, 3]], [1.0], objective={**OBJECTIVE, "lr": 0.025}, values=values,
                          **BASE)
