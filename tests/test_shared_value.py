"""Values kept orthogonal to the direction earlier edits' values share (orthogonal_to_shared_value)."""

from types import SimpleNamespace

import pytest
import torch
from tiny import tiny_model

from suture.editor import EditContext, Editor, EditRequest
from suture.editor.errors import InvalidHyperparametersError
from suture.methods.shared.shared_value import ARTIFACT, MIN_EARLIER, orthogonal_steps, shared_value_direction


def _context(*value_groups: torch.Tensor) -> EditContext:
    entries = [SimpleNamespace(artifacts={ARTIFACT: [group]}) for group in value_groups]
    return EditContext(handle=None, weights=None, history=lambda: entries)


def test_direction_is_the_mean_of_earlier_unit_values_once_there_are_enough():
    values = torch.nn.functional.normalize(torch.randn(MIN_EARLIER, 6) + torch.tensor([3.0, 0, 0, 0, 0, 0]), dim=1)
    assert shared_value_direction(_context(values[: MIN_EARLIER - 1])) is None
    direction = shared_value_direction(_context(values[:3], values[3:]))
    assert torch.allclose(direction, torch.nn.functional.normalize(values.sum(0), dim=0))
    assert direction[0] > 0.8  # the component every value shares


def test_orthogonal_steps_remove_the_direction_around_a_metric():
    s = torch.nn.functional.normalize(torch.tensor([1.0, 2.0, 0.5]), dim=0)
    g = torch.tensor([0.3, -1.0, 2.0])
    assert float(g @ orthogonal_steps(s) @ s) == pytest.approx(0.0, abs=1e-6)
    metric = torch.diag(torch.tensor([4.0, 1.0, 0.1]))
    assert float(g @ orthogonal_steps(s, metric) @ s) == pytest.approx(0.0, abs=1e-6)


NGD = {"optimizer": "normalized_gradient", "lr": 0.25, "steps": 5, "weight_decay": 0.0, "clamp_norm_factor": 200.0}
BASE = {"layers": [1, 2], "corpus": {"n_samples": 24, "max_tokens": 16}, "templates": {"groups": [[5, 2]]}}
SUBJECTS = ["Italy", "France", "Spain", "Peru", "Chile", "Japan", "Kenya", "Egypt", "Ghana", "Nepal"]


def test_memit_writes_values_orthogonal_to_the_earlier_mean_direction():
    model, tok = tiny_model("llama")
    editor = Editor.from_model(model, tok)
    for subject in SUBJECTS:
        before = shared_value_direction(editor.context)
        result = editor.apply([EditRequest(prompt="The capital of {} is", subject=subject, target_new="London")],
                              method="memit", objective=NGD, orthogonal_to_shared_value=True, keep_failed=True,
                              **BASE)
        assert result.details["shared_value_direction"] == [before is not None]
        written = editor.ledger[-1].artifacts[ARTIFACT][0]
        if before is not None:
            assert float(written[0] @ before) == pytest.approx(0.0, abs=1e-4)
    assert len(SUBJECTS) > MIN_EARLIER  # the projection was exercised


def test_orthogonal_to_shared_value_refuses_adam():
    model, tok = tiny_model("llama")
    editor = Editor.from_model(model, tok)
    with pytest.raises(InvalidHyperparametersError, match="orthogonal_to_shared_value"):
        editor.apply([EditRequest(prompt="The capital of {} is", subject="Italy", target_new="London")],
                     method="memit", objective={"optimizer": "adam"}, orthogonal_to_shared_value=True, **BASE)


def test_one_call_of_many_requests_keeps_later_chunks_orthogonal_to_the_earlier_chunks_mean():
    """The values of one call add up like sequential edits' do: with chunks of 3, the first chunks have too
    few values for a direction; each later chunk is optimized orthogonal to the mean of all before it."""
    model, tok = tiny_model("llama")
    editor = Editor.from_model(model, tok)
    requests = [EditRequest(prompt="The capital of {} is", subject=s, target_new="London") for s in SUBJECTS]
    result = editor.apply(requests, method="memit", objective=NGD, orthogonal_to_shared_value=True,
                          keep_failed=True, chunk_size=3, **BASE)
    units = editor.ledger[-1].artifacts[ARTIFACT]
    units = units[0] if isinstance(units, list) else units
    assert result.details["shared_value_direction"] == [False]
    assert result.details["shared_value_chunks"] == [1]  # chunks of 3: only the fourth follows 9 >= MIN_EARLIER
    before = torch.nn.functional.normalize(units[:9].sum(0), dim=0)
    assert torch.allclose(units[9:] @ before, torch.zeros(1), atol=1e-4)
