"""The corpus mean key (editor/kv/key_mean.py) and MEMIT holding it (preserve_mean_key) on tiny models."""

import pytest
import torch
from tiny import tiny_model

from suture.editor import Editor, EditRequest
from suture.editor.errors import InvalidHyperparametersError
from suture.editor.handle import ModelHandle
from suture.editor.kv import CorpusSpec
from suture.editor.kv.corpus import load_corpus
from suture.editor.kv.key_mean import mean_key
from suture.editor.sites import linear_weight_as_out_in

SPEC = CorpusSpec(n_samples=24, max_tokens=16)
BASE = {"corpus": {"n_samples": 24, "max_tokens": 16}, "templates": {"groups": [[5, 2]]}}
OBJECTIVE = {"steps": 8, "lr": 0.05, "weight_decay": 0.0, "clamp_norm_factor": 200.0}
REQUESTS = [
    EditRequest(prompt="The capital of {} is", subject="Italy", target_new="London"),
    EditRequest(prompt="The mother tongue of {} is", subject="Danielle Darrieux", target_new="English"),
]
LAYERS = [1, 2]


def test_the_mean_key_leaves_out_each_texts_first_position_whatever_the_padding():
    model, tok = tiny_model("llama")
    handle = ModelHandle(model=model, tokenizer=tok, ref="tiny-llama")
    texts = load_corpus(handle, SPEC)[:10]
    module = model.get_submodule(handle.sites.mlp_out_path(1))
    rows = []
    hook = module.register_forward_hook(lambda _m, args, _o: rows.append(args[0][0, 1:].double()))
    with torch.no_grad():
        for text in texts:  # one text at a time: no padding
            model(**tok(text, return_tensors="pt", truncation=True, max_length=SPEC.max_tokens))
    hook.remove()
    expected = torch.cat(rows).mean(0).float()
    got = mean_key(handle, [1], SPEC, n_texts=10)[1]
    assert got.shape == expected.shape
    assert torch.allclose(got, expected, atol=1e-5)
    again = mean_key(handle, [1], SPEC, n_texts=10)[1]  # from the disk cache
    assert torch.equal(again.cpu(), got.cpu())


def _mean_shift(editor: Editor, mu: dict) -> float:
    """Σ over the edited layers of ‖ΔW μ‖ for the editor's current update."""
    total = 0.0
    for entry in editor.ledger:
        for delta in entry.deltas:
            layer = next(layer for layer in LAYERS if editor.handle.sites.mlp_out_path(layer) == delta.module)
            weight = linear_weight_as_out_in(delta.materialize().float(), editor.handle.sites.weights_transposed)
            total += float((weight @ mu[layer].float()).norm())
    return total


def test_holding_the_mean_key_shrinks_the_shift_every_position_receives():
    shifts, residuals = {}, {}
    for weight in (None, 100.0):
        model, tok = tiny_model("llama")
        editor = Editor.from_model(model, tok)
        extra = {} if weight is None else {"preserve_mean_key": weight}
        result = editor.apply(REQUESTS, method="memit", layers=LAYERS, objective=OBJECTIVE, **BASE, **extra)
        mu = mean_key(editor.handle, LAYERS, CorpusSpec(**BASE["corpus"]))
        shifts[weight], residuals[weight] = _mean_shift(editor, mu), result.details["residual_left"][0]
    assert shifts[100.0] < 0.1 * shifts[None]
    assert residuals[100.0] < 0.8  # the edit is still written: the keys are not the mean key


def test_bad_preserve_mean_key_is_refused():
    model, tok = tiny_model("llama")
    editor = Editor.from_model(model, tok)
    with pytest.raises(InvalidHyperparametersError, match="preserve_mean_key"):
        editor.apply(REQUESTS, method="memit", layers=LAYERS, preserve_mean_key=-1.0, **BASE)
    with pytest.raises(InvalidHyperparametersError, match="preserve_mean_key.*null_space"):
        editor.apply(REQUESTS, method="memit", layers=LAYERS, preserve_mean_key=1.0, null_space={}, **BASE)
