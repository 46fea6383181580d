"""The least write that still takes (least_write): an edit scaled down to just above where it stops taking."""

import pytest
import torch
from tiny import tiny_model

from suture.editor import Editor, EditRequest
from suture.editor.deltas import WeightBook, WeightDelta
from suture.methods.shared.least_write import LeastWrite, least_written_scale


def test_scaled_delta_keeps_its_form():
    low = WeightDelta.low_rank("m", torch.ones(3, 1), torch.full((1, 2), 2.0))
    assert torch.equal(low.scaled(0.5).materialize(), 0.5 * low.materialize())
    assert low.scaled(0.5).rank == 1
    dense = WeightDelta("m", dense=torch.ones(2, 2), create=True)
    assert torch.equal(dense.scaled(-1.0).materialize(), -torch.ones(2, 2)) and dense.scaled(2.0).create


def _book_with_delta():
    model = torch.nn.Sequential(torch.nn.Linear(2, 3, bias=False))
    base = model[0].weight.detach().clone()
    delta = WeightDelta.low_rank("0", torch.ones(3, 1), torch.ones(1, 2))
    book = WeightBook(model)
    book.apply([delta])
    # the applied scale, read back from the weights: every entry of the delta is 1
    return book, delta, base, lambda: float((model[0].weight.detach() - base).mean())


def test_scale_falls_to_the_least_passing_one_then_adds_the_headroom():
    book, delta, base, applied = _book_with_delta()
    checked = []

    def written():
        checked.append(round(applied(), 4))
        return applied() >= 0.6 - 1e-6

    scale = least_written_scale(book, [delta], written, LeastWrite(step=0.1, floor=0.3, headroom=0.25))
    assert scale == pytest.approx(0.75)  # 0.6 passes, 0.5 does not: 0.6 x 1.25
    assert applied() == pytest.approx(0.75, abs=1e-6)  # the weights hold the returned scale
    assert checked == [1.0, 0.9, 0.8, 0.7, 0.6, 0.5]


def test_headroom_never_writes_more_than_the_edit_and_an_unwritten_edit_is_left_alone():
    book, delta, _, applied = _book_with_delta()
    assert least_written_scale(book, [delta], lambda: applied() >= 0.95, LeastWrite(step=0.1, headroom=1.0)) == 1.0
    assert applied() == pytest.approx(1.0, abs=1e-6)
    book, delta, _, applied = _book_with_delta()
    assert least_written_scale(book, [delta], lambda: False, LeastWrite()) == 1.0
    assert applied() == pytest.approx(1.0, abs=1e-6)


def test_floor_bounds_the_scale():
    book, delta, _, applied = _book_with_delta()
    scale = least_written_scale(book, [delta], lambda: True, LeastWrite(step=0.2, floor=0.5, headroom=0.0))
    assert scale == pytest.approx(0.6) and applied() == pytest.approx(0.6, abs=1e-6)  # 0.4 is under the floor


SETTINGS = {"layers": [1, 2], "corpus": {"n_samples": 24, "max_tokens": 16}, "templates": {"groups": [[5, 2]]}}
REQUEST = EditRequest(prompt="The capital of {} is", subject="Italy", target_new="London")


def _edit(**extra):
    model, tok = tiny_model("llama")
    editor = Editor.from_model(model, tok)
    result = editor.apply([REQUEST], method="memit", keep_failed=True, **SETTINGS, **extra)
    return editor, result


def test_memit_writes_its_update_at_the_least_passing_scale(monkeypatch):
    """MEMIT checks with the rounds' own test (every target the greedy answer, `target_token_checks`), made
    here to pass at scales 1 and 0.95 only: the tiny model cannot be made to say its targets."""
    from suture.methods.memit import method as memit_method

    plain, _ = _edit()
    calls = []
    monkeypatch.setattr(memit_method, "_all_written", lambda handle, requests: calls.append(1) or len(calls) <= 2)
    editor, result = _edit(least_write={"headroom": 0.0})
    assert result.details["write_scale"] == [pytest.approx(0.95)]
    assert len(calls) == 3  # at 1, 0.95, 0.9
    for full, written in zip(plain.ledger[-1].deltas, editor.ledger[-1].deltas, strict=True):
        assert torch.allclose(written.materialize(), 0.95 * full.materialize(), atol=1e-6)
    editor.revert()
    assert all(torch.equal(p, q) for p, q in zip(editor.handle.model.parameters(),
                                                 tiny_model("llama")[0].parameters(), strict=True))


def test_the_rounds_own_check_at_full_scale_is_not_repeated(monkeypatch):
    """When rounds_until_written has just found every target written (and stopped the rounds), the weights are
    those of scale 1: the search starts at 0.95 instead of checking scale 1 again."""
    from suture.methods.memit import method as memit_method

    calls = []
    monkeypatch.setattr(memit_method, "_all_written", lambda handle, requests: calls.append(1) or len(calls) <= 2)
    _, result = _edit(least_write={"headroom": 0.0}, rounds=2, rounds_until_written=True)
    assert result.details["rounds"] == [1] and result.details["write_scale"] == [pytest.approx(0.95)]
    assert len(calls) == 3  # the rounds' check (written: one round), then 0.95 (written) and 0.9 (not)


def test_requests_in_contexts_put_each_prompt_inside_each_template_bare_first():
    from suture.editor.kv.templates import requests_in_contexts

    _, tok = tiny_model("llama")
    braces = EditRequest(prompt="In {{set}} notation, {} is", subject="Italy", target_new="x")
    rows, owners = requests_in_contexts(tok, [REQUEST, braces], ["{}", "Once upon a time. {}"])
    assert owners == [0, 0, 1, 1]
    assert [r.text for r in rows] == ["The capital of Italy is", "Once upon a time. The capital of Italy is",
                                      "In {set} notation, Italy is", "Once upon a time. In {set} notation, Italy is"]
    assert all(r.target_new == q.target_new for r, q in zip(rows, [REQUEST, REQUEST, braces, braces], strict=True))


def test_contexts_keep_the_scale_where_every_context_the_full_edit_wrote_still_takes(monkeypatch):
    """With contexts, the rows are the rewrite prompt in each context template (here "{}" and two sampled);
    a context the full edit did not write does not hold the scale up, one it wrote and loses does."""
    from suture.methods.memit import method as memit_method

    answers = iter([[True, True, False],  # full scale: the third context never took
                    [True, True, False],  # 0.95: all that took still take
                    [True, False, False]])  # 0.9: the second context is lost
    sizes = []
    monkeypatch.setattr(memit_method, "_written_rows", lambda handle, rows: sizes.append(len(rows)) or next(answers))
    _, result = _edit(least_write={"headroom": 0.0, "contexts": True})
    assert result.details["write_scale"] == [pytest.approx(0.95)]
    assert sizes == [3, 3, 3]
