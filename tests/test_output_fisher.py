"""The output-Fisher metric of an MLP output, and MEMIT value steps taken in it (value_metric)."""

import pytest
import torch
import torch.nn.functional as F
from tiny import tiny_model

from suture.editor import Editor, EditRequest
from suture.editor.errors import InvalidHyperparametersError
from suture.editor.handle import ModelHandle
from suture.editor.kv import CorpusSpec
from suture.editor.kv.corpus import load_corpus
from suture.editor.kv.output_fisher import natural_step, output_fisher

SPEC = CorpusSpec(n_samples=24, max_tokens=16)
LAYER = 1


def _kl_of_one_position(handle: ModelHandle, text: str, direction: torch.Tensor, eps: float) -> list[float]:
    """Per position t: KL summed over every next-token distribution of the text when ε·direction is added
    to the layer's MLP output at t alone."""
    enc = handle.tokenizer(text, return_tensors="pt", truncation=True, max_length=SPEC.max_tokens)
    module = handle.model.get_submodule(handle.sites.mlp_out_path(LAYER))
    with torch.no_grad():
        base = F.log_softmax(handle.model(**enc).logits.float(), -1)
        out = []
        for t in range(enc["input_ids"].shape[1]):
            def shift(_m, _a, output, t=t):
                output = output.clone()
                output[:, t] += eps * direction
                return output
            hook = module.register_forward_hook(shift)
            try:
                moved = F.log_softmax(handle.model(**enc).logits.float(), -1)
            finally:
                hook.remove()
            out.append(float(F.kl_div(moved, base, log_target=True, reduction="sum")))
    return out


def test_fisher_predicts_the_kl_of_a_small_change_of_the_mlp_output():
    """uᵀ G u ≈ 2 KL / ε² for a change ε·u of the MLP output at one position, averaged over positions."""
    model, tok = tiny_model("llama")
    handle = ModelHandle(model=model, tokenizer=tok, ref="tiny-llama")
    fisher = output_fisher(handle, [LAYER], SPEC, n_texts=24)[LAYER]
    assert fisher.shape == (model.config.hidden_size,) * 2
    assert torch.allclose(fisher, fisher.T, atol=1e-6)
    eigenvalues, vectors = torch.linalg.eigh(fisher.double())
    assert eigenvalues.min() > -1e-6  # positive semidefinite
    texts = load_corpus(handle, SPEC)[:24]
    for u in (vectors[:, -1].float(), torch.nn.functional.normalize(torch.randn(fisher.shape[0]), dim=0)):
        eps = 0.05 / float(u @ fisher @ u) ** 0.5  # KL of about 1e-3 nats: second order holds
        kls = [kl for text in texts for kl in _kl_of_one_position(handle, text, u, eps)]
        measured = 2 * sum(kls) / len(kls) / eps**2
        predicted = float(u @ fisher @ u)
        assert measured == pytest.approx(predicted, rel=0.35)


def test_fisher_is_cached_on_disk_under_what_it_was_computed_from():
    model, tok = tiny_model("llama")
    handle = ModelHandle(model=model, tokenizer=tok, ref="tiny-llama")
    first = output_fisher(handle, [LAYER], SPEC, n_texts=8)[LAYER]
    again = output_fisher(handle, [LAYER], SPEC, n_texts=8)[LAYER]
    assert torch.equal(first, again)
    other = output_fisher(handle, [LAYER], SPEC, n_texts=12)[LAYER]  # other texts: computed, not loaded
    assert not torch.equal(first, other)


def test_natural_step_with_large_damping_is_a_plain_step():
    fisher = torch.diag(torch.tensor([4.0, 1.0, 0.01]))
    g = torch.tensor([1.0, 1.0, 1.0])
    plain = g @ natural_step(fisher, 1e6)
    assert torch.allclose(plain / plain.norm(), g / g.norm(), atol=1e-4)
    trusting = g @ natural_step(fisher, 1e-3)
    assert trusting.argmax() == 2  # the direction the metric calls cheap gets most of the step


REQUEST = EditRequest(prompt="The capital of {} is", subject="Italy", target_new="London", target_true="Rome")
BASE = {"layers": [1, 2], "corpus": {"n_samples": 24, "max_tokens": 16}, "templates": {"groups": [[5, 2]]}}
NGD = {"optimizer": "normalized_gradient", "lr": 0.25, "steps": 10, "weight_decay": 0.0, "clamp_norm_factor": 200.0}


def test_metric_steps_find_a_value_the_metric_calls_cheaper():
    """Steps in the metric end on a δ whose Rayleigh quotient δᵀGδ/δᵀδ is well below plain steps' δ (0.53
    against 0.95 when written)."""
    from suture.editor.kv import ValueObjective, optimize_values

    model, tok = tiny_model("llama")
    handle = ModelHandle(model=model, tokenizer=tok, ref="tiny-llama")
    fisher = output_fisher(handle, [2], SPEC, n_texts=16)[2]
    objective = ValueObjective(optimizer="normalized_gradient", lr=0.25, steps=10, early_stop_nll=0.0,
                               weight_decay=0.0, kl_factor=0.0, clamp_norm_factor=200.0)
    plain = optimize_values(handle, 2, [REQUEST], ["{}"], objective).deltas[0]
    cheap = optimize_values(handle, 2, [REQUEST], ["{}"], objective,
                            step_metric=natural_step(fisher, 0.1)).deltas[0]

    def quotient(d):
        return float(d @ fisher @ d / (d @ d))

    assert quotient(cheap) < 0.65 * quotient(plain)


def test_memit_value_metric_writes_its_layers():
    model, tok = tiny_model("llama")
    editor = Editor.from_model(model, tok)
    result = editor.apply([REQUEST], method="memit", objective=NGD, value_metric={"damping": 0.1, "n_texts": 16},
                          **BASE)
    assert {d.module for d in result.deltas} == {editor.handle.sites.mlp_out_path(layer) for layer in BASE["layers"]}
    assert result.details["residual_left"][0] < 0.6


def test_memit_value_metric_refuses_adam():
    model, tok = tiny_model("llama")
    editor = Editor.from_model(model, tok)
    with pytest.raises(InvalidHyperparametersError, match="value_metric"):
        editor.apply([REQUEST], method="memit", objective={"optimizer": "adam"}, value_metric={}, **BASE)
