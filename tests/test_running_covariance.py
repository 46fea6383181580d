"""The key covariance of the model as edited so far (running_covariance): C₀ plus the edits' shift, measured on
a few corpus texts every few ledger entries."""

import pytest
import torch
from tiny import tiny_model

from suture.editor import Editor, EditRequest
from suture.editor.errors import InvalidHyperparametersError
from suture.editor.kv.corpus import CorpusSpec, load_corpus
from suture.editor.kv.stats import measure_second_moment
from suture.methods.shared.running_covariance import RunningCovariance, running_second_moment

CORPUS = CorpusSpec(n_samples=24, max_tokens=16)
SETTINGS = {"layers": [1, 2], "corpus": CORPUS.model_dump(), "templates": {"groups": [[5, 2]]}}
LOW_EDIT = {**SETTINGS, "layers": [0]}  # moves the keys layers 1 and 2 read
REQUESTS = [EditRequest(prompt="The capital of {} is", subject=subject, target_new=target)
            for subject, target in [("Italy", "London"), ("Spain", "Paris"), ("Chile", "Oslo")]]


def _editor():
    model, tok = tiny_model("llama")
    return Editor.from_model(model, tok)


def _edit(editor, request, **settings):
    return editor.apply([request], method="memit", keep_failed=True, force=True, **{**LOW_EDIT, **settings})


def test_unedited_the_running_covariance_is_the_base_one_exactly():
    editor = _editor()
    current, details = running_second_moment(editor.context, [1, 2], CORPUS, RunningCovariance(texts=8))
    base = editor.context.second_moment([1, 2], CORPUS)
    assert all(torch.equal(current[layer], base[layer]) for layer in (1, 2))
    assert details == {"entries": 0, "change": {1: 0.0, 2: 0.0}, "trace": {1: 1.0, 2: 1.0}}


def test_after_a_lower_edit_it_is_the_base_covariance_plus_the_sample_shift():
    editor = _editor()
    ctx = editor.context
    base = ctx.second_moment([1, 2], CORPUS)
    texts = load_corpus(editor.handle, CORPUS)[:8]
    sample_base = measure_second_moment(editor.handle, "mlp_out", [1, 2], texts, CORPUS.max_tokens)[0]
    _edit(editor, REQUESTS[0])
    current, details = running_second_moment(ctx, [1, 2], CORPUS, RunningCovariance(every=1, texts=8))
    sample_now = measure_second_moment(editor.handle, "mlp_out", [1, 2], texts, CORPUS.max_tokens)[0]
    for layer in (1, 2):
        assert torch.allclose(current[layer], base[layer] + (sample_now[layer] - sample_base[layer]), atol=1e-6)
        assert details["change"][layer] > 0
    assert details["entries"] == 1


def test_the_whole_corpus_is_read_once_per_span_on_the_edited_weights_only(monkeypatch):
    from suture.methods.shared import running_covariance as module

    editor = _editor()
    editor.context.second_moment([1, 2], CORPUS)
    calls = []
    real = module.measure_second_moment
    monkeypatch.setattr(module, "measure_second_moment", lambda *a, **k: calls.append(len(a[3])) or real(*a, **k))
    running_second_moment(editor.context, [1, 2], CORPUS, RunningCovariance())
    assert calls == [CORPUS.n_samples]  # C₀ is the base side: no second pass on the base weights


def test_keep_trace_scales_the_moved_covariance_to_the_base_trace():
    editor = _editor()
    _edit(editor, REQUESTS[0])
    moved, details = running_second_moment(editor.context, [1, 2], CORPUS, RunningCovariance(texts=8))
    kept, _ = running_second_moment(editor.context, [1, 2], CORPUS, RunningCovariance(texts=8, keep_trace=True))
    base = editor.context.second_moment([1, 2], CORPUS)
    for layer in (1, 2):
        assert details["trace"][layer] != 1.0
        assert torch.allclose(kept[layer], moved[layer] / details["trace"][layer])
        assert float(kept[layer].trace()) == pytest.approx(float(base[layer].trace()), rel=1e-5)


@pytest.mark.parametrize("texts", [None, CORPUS.n_samples])  # None, the default: the whole corpus
def test_with_the_whole_corpus_it_is_the_edited_models_covariance(texts):
    editor = _editor()
    _edit(editor, REQUESTS[0])
    current, _ = running_second_moment(editor.context, [1, 2], CORPUS, RunningCovariance(texts=texts))
    texts = load_corpus(editor.handle, CORPUS)
    edited = measure_second_moment(editor.handle, "mlp_out", [1, 2], texts, CORPUS.max_tokens)[0]
    for layer in (1, 2):
        assert torch.allclose(current[layer], edited[layer], rtol=1e-4, atol=1e-5)


def test_measured_once_per_span_of_ledger_entries_and_again_when_the_ledger_is_replaced(monkeypatch):
    from suture.methods.shared import running_covariance as module

    editor = _editor()
    spec = RunningCovariance(every=2, texts=8)
    calls = []
    real = module.measure_second_moment
    monkeypatch.setattr(module, "measure_second_moment", lambda *a, **k: calls.append(1) or real(*a, **k))
    ctx = editor.context
    running_second_moment(ctx, [1, 2], CORPUS, spec)
    assert len(calls) == 2  # the sample on the base weights, then on the current ones
    _edit(editor, REQUESTS[0])
    running_second_moment(ctx, [1, 2], CORPUS, spec)
    assert len(calls) == 2  # one entry: still the first span
    _edit(editor, REQUESTS[1])
    first, _ = running_second_moment(ctx, [1, 2], CORPUS, spec)
    assert len(calls) == 3  # a new span: the current weights again, the base sample kept
    editor.revert(2)
    _edit(editor, REQUESTS[2])
    _edit(editor, REQUESTS[1])
    second, _ = running_second_moment(ctx, [1, 2], CORPUS, spec)
    assert len(calls) == 4  # the same span index, another ledger: measured again
    assert not torch.equal(first[2], second[2])


def test_memit_solves_against_the_running_covariance_and_reports_the_shift():
    plain, running = _editor(), _editor()
    for editor in (plain, running):
        _edit(editor, REQUESTS[0])
    _edit(plain, REQUESTS[1], layers=[1, 2])
    result = _edit(running, REQUESTS[1], layers=[1, 2], running_covariance={"every": 1, "texts": 8})
    shift = result.details["running_covariance"][0]
    assert shift["entries"] == 1 and shift["change"][1] > 0 and shift["change"][2] > 0
    written = [d.materialize() for d in running.ledger[-1].deltas]
    reference = [d.materialize() for d in plain.ledger[-1].deltas]
    assert not all(torch.allclose(a, b) for a, b in zip(written, reference, strict=True))
    # the first edit, on the unedited model, is the same with or without the option
    again = _editor()
    first = _edit(again, REQUESTS[0], running_covariance={"every": 1, "texts": 8})
    assert first.details["running_covariance"][0]["change"] == {0: 0.0}
    assert all(torch.equal(a.materialize(), b.materialize())
               for a, b in zip(again.ledger[0].deltas, plain.ledger[0].deltas, strict=True))


def test_more_texts_than_the_corpus_are_refused_with_the_field_named():
    with pytest.raises(InvalidHyperparametersError, match="running_covariance.texts"):
        _edit(_editor(), REQUESTS[0], running_covariance={"texts": 25})
    with pytest.raises(ValueError, match="every"):
        RunningCovariance(every=0)
