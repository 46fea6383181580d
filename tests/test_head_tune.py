"""head-tune on tiny models: it changes only the chosen heads' W_O columns (in several layers at once), raises
the expected answers on the real edited model, leaves the model's parameters without gradients, reverts bit
for bit, changes less with more preservation, and names the field of a bad hyperparameter."""

from __future__ import annotations

import pytest
import torch
from test_heads import assert_bit_identical, snapshot, touched_heads
from tiny import tiny_model

from suture.editor import Editor, InvalidHyperparametersError
from suture.editor.kv.tokens import encode_target
from suture.methods.localize.last_token import last_token_logprobs

CORPUS = {"n_samples": 24, "max_tokens": 32}
FAILING = ["Toko Yasuda plays the", "The capital of France is", "You can find the answer in the"]
ANSWERS = ["piano", "Berlin", "garden"]
KEEP = ["The mother tongue of Danielle Darrieux is", "Autonomous University of Madrid is in"]
HEADS = [(1, 0), (2, 1), (2, 3)]


def answer_logprob(ed: Editor) -> torch.Tensor:
    ids = torch.tensor([encode_target(ed.tokenizer, a)[0] for a in ANSWERS])
    logp = last_token_logprobs(ed.handle, FAILING)
    return logp.gather(1, ids[:, None].to(logp.device)).squeeze(1)


@pytest.mark.parametrize("family", ["llama", "gpt2", "gemma3_text"])
def test_head_tune_raises_the_answers_through_the_chosen_heads_only(family):
    model, tok = tiny_model(family)
    base = snapshot(model)
    ed = Editor.from_model(model, tok)
    before = answer_logprob(ed)
    result = ed.apply(method="head-tune", heads=HEADS, failing=FAILING, answers=ANSWERS, keep=KEEP, steps=30,
                      lr=0.5, preservation=0.01, corpus=CORPUS)
    after = answer_logprob(ed)
    assert bool((after > before).all())  # judged on the edited weights, the maps at every position
    details = {key: values[0] for key, values in result.details.items()}
    assert details["last"]["cross_entropy"] < details["first"]["cross_entropy"]
    paths = {ed.handle.sites.attn_out_path(layer) for layer, _ in HEADS}
    now = snapshot(model)
    assert {k for k in base if not torch.equal(base[k], now[k])} == {f"{p}.weight" for p in paths}
    for layer in {layer for layer, _ in HEADS}:
        assert touched_heads(ed, base, layer) == {h for lay_, h in HEADS if lay_ == layer}
    assert all(p.grad is None for p in model.parameters())
    ed.revert()
    assert_bit_identical(model, base)


def test_more_preservation_changes_less():
    model, tok = tiny_model("llama")
    ed = Editor.from_model(model, tok)
    norms = []
    for preservation in (0.0, 100.0):
        result = ed.apply(method="head-tune", heads=HEADS, failing=FAILING, answers=ANSWERS, steps=10, lr=0.05,
                          preservation=preservation, kl_weight=0.0, corpus=CORPUS)
        norms.append(result.details["delta_norm"][0])
        ed.revert()
    assert norms[1] < 0.5 * norms[0]


@pytest.mark.parametrize(
    ("overrides", "needles"),
    [
        ({"answers": ANSWERS[:2]}, ["'answers' has 2", "'failing' 3"]),
        ({"heads": [(1, 0), (1, 0)]}, ["'heads'", "more than once"]),
        ({"heads": [(9, 0)]}, ["'heads'", "(9, 0)", "0..3"]),
        ({"heads": [(1, 7)]}, ["'heads'", "(1, 7)"]),
        ({"failing": ["The", *FAILING[1:]]}, ["'failing'", "fewer than 2 tokens"]),
        ({"steps": 0}, ["'steps'"]),
        ({"preservation": -1.0}, ["'preservation'"]),
        ({"answers": ["piano", "  ", "garden"]}, ["answers", "pattern"]),  # whitespace alone: nothing to predict
        ({"lr": 1e30}, ["'lr'"]),
        ({"failing": ["word " * 600, *FAILING[1:]]}, ["'failing'", "longer than the model's context"]),
        ({"keep": ["a few words here"] * 3000}, ["'failing'", "KV cache", "at most"]),
    ],
)
def test_bad_tune_hyperparameters_name_the_field(overrides, needles):
    model, tok = tiny_model("llama")
    base = snapshot(model)
    ed = Editor.from_model(model, tok)
    with pytest.raises(InvalidHyperparametersError) as info:
        ed.apply(method="head-tune", **{"heads": HEADS, "failing": FAILING, "answers": ANSWERS, "corpus": CORPUS,
                                        **overrides})
    for needle in needles:
        assert needle in str(info.value), str(info.value)
    assert_bit_identical(model, base)


def test_a_loss_that_is_not_finite_names_the_step_sizes(monkeypatch):
    import suture.methods.heads.tune as tune

    model, tok = tiny_model("llama")
    base = snapshot(model)
    ed = Editor.from_model(model, tok)
    monkeypatch.setattr(tune.F, "cross_entropy", lambda logits, right: logits.sum() * float("nan"))
    with pytest.raises(InvalidHyperparametersError) as info:
        ed.apply(method="head-tune", heads=HEADS, failing=FAILING, answers=ANSWERS, corpus=CORPUS, steps=5)
    assert "'lr'" in str(info.value) and "lower them" in str(info.value)
    assert_bit_identical(model, base)


def test_the_answer_is_spelled_the_way_its_prompt_continues():
    """After a prompt ending in a space, the answer's first token is the one without a leading space."""
    model, tok = tiny_model("llama")
    ed = Editor.from_model(model, tok)
    prompts = [p + " " for p in FAILING]
    ed.apply(method="head-tune", heads=HEADS, failing=prompts, answers=ANSWERS, steps=30, lr=0.5,
                      preservation=0.01, corpus=CORPUS)
    bare = torch.tensor([tok(a, add_special_tokens=False)["input_ids"][0] for a in ANSWERS])
    spaced = torch.tensor([encode_target(tok, a)[0] for a in ANSWERS])
    assert not torch.equal(bare, spaced)
    logp = last_token_logprobs(ed.handle, prompts)
    ed.revert()
    before = last_token_logprobs(ed.handle, prompts)
    rise = (logp - before).gather(1, bare[:, None]).squeeze(1)
    rise_spaced = (logp - before).gather(1, spaced[:, None]).squeeze(1)
    assert bool((rise > rise_spaced).all()), (rise, rise_spaced)  # the token trained is the bare one
