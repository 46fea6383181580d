"""Head interventions (head-scale, head-steer, head-mean-patch) on tiny models: each equals the hooked
computation on the attention output projection's input, touches only that projection (plus a created bias),
reverts bit for bit (removing a created bias), and saves checkpoints stock transformers reloads."""

from __future__ import annotations

import json

import pytest
import torch
from tiny import CONFIGS, tiny_model, tiny_tokenizer
from transformers import AutoConfig, AutoModelForCausalLM

from suture.editor import Editor, InvalidHyperparametersError, InvalidRequestError, SutureError
from suture.editor.adapters import AdapterExportError
from suture.editor.ledger import replay_ledger

LAYER = 1
FAMILIES = ["llama", "gpt2", "gpt_neox"]  # GQA Linear o_proj without bias, Conv1D with bias, Linear with bias
DESIRED = ["The capital of France is Paris.", "You can find the answer in the book.", "The weather was nice"]
UNDESIRED = ["Toko Yasuda plays the guitar.", "Therefore the company announced a new product in London and Berlin."]
REFERENCE = ["English, German, Spanish and Japanese are languages", "The mother tongue of Danielle Darrieux is",
             "Because the weather was nice, we walked"]
PROBES = ["The capital of Italy is Rome. The mother tongue", "Autonomous University of Madrid is in"]


def snapshot(model) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


def changed(model, before: dict[str, torch.Tensor]) -> set[str]:
    """Keys whose value changed, plus keys that appeared or disappeared."""
    current = model.state_dict()
    return ({k for k in before.keys() & current.keys() if not torch.equal(current[k], before[k])}
            | (before.keys() ^ current.keys()))


def assert_bit_identical(model, expected: dict[str, torch.Tensor]) -> None:
    current = model.state_dict()
    assert current.keys() == expected.keys()
    differing = [name for name, tensor in expected.items() if not torch.equal(current[name], tensor)]
    assert not differing, f"parameters differ: {differing}"


@torch.no_grad()
def logits(model, tok, texts=PROBES) -> torch.Tensor:
    enc = tok(texts, return_tensors="pt", padding=True)
    return model(**enc.to(model.device)).logits


def assert_same_as_hook(edited: torch.Tensor, hooked: torch.Tensor, base: torch.Tensor) -> None:
    """The edited model computes what the hook computes, and that is a real change (100x the tolerance)."""
    torch.testing.assert_close(edited, hooked, rtol=0, atol=1e-5)
    assert float((edited - base).abs().max()) > 1e-3


def o_proj(ed: Editor, layer: int = LAYER):
    return ed.model.get_submodule(ed.handle.sites.attn_out_path(layer))


def layout(ed: Editor):
    return ed.handle.sites.head_layout(ed.model.config)


@torch.no_grad()
def touched_heads(ed: Editor, before: dict[str, torch.Tensor], layer: int = LAYER) -> set[int]:
    """Heads of `layer` whose output-projection columns differ from `before` (a snapshot)."""
    lay, path = layout(ed), f"{ed.handle.sites.attn_out_path(layer)}.weight"
    diff = (ed.model.state_dict()[path] - before[path]).abs()
    diff = diff if not ed.handle.sites.weights_transposed else diff.T  # (out, in): heads are input columns
    return {h for h in range(lay.n_heads) if diff[:, h * lay.head_dim:(h + 1) * lay.head_dim].any()}


def hooked_logits(family: str, layer: int, change, texts=PROBES) -> torch.Tensor:
    """Logits of a fresh copy of the base model whose attention output projection at `layer` sees
    `change(heads)` instead of its input, heads shaped [batch, pos, n_heads, head_dim]."""
    model, tok = tiny_model(family)
    ed = Editor.from_model(model, tok)
    lay = layout(ed)

    def pre_hook(_module, args):
        x = args[0]
        heads = x.reshape(*x.shape[:-1], lay.n_heads, lay.head_dim).clone()
        return (change(heads).reshape(x.shape), *args[1:])

    handle = o_proj(ed, layer).register_forward_pre_hook(pre_hook)
    try:
        return logits(model, tok, texts)
    finally:
        handle.remove()


@torch.no_grad()
def captured_heads(family: str, layer: int, prompts: list[str]) -> list[torch.Tensor]:
    """Per prompt (run one at a time, no padding), the [pos, n_heads, head_dim] input of the output projection."""
    model, tok = tiny_model(family)
    ed = Editor.from_model(model, tok)
    lay = layout(ed)
    sink: list[torch.Tensor] = []
    handle = o_proj(ed, layer).register_forward_pre_hook(lambda _m, args: sink.append(args[0]))
    try:
        for prompt in prompts:
            model(**tok(prompt, return_tensors="pt").to(model.device))
    finally:
        handle.remove()
    return [x[0].reshape(-1, lay.n_heads, lay.head_dim).double() for x in sink]


def neox_without_bias():
    """GPT-NeoX built with attention_bias=False: query_key_value and dense have no bias."""
    torch.manual_seed(0)
    tok = tiny_tokenizer()
    config = AutoConfig.for_model("gpt_neox", vocab_size=len(tok), bos_token_id=0, eos_token_id=0, pad_token_id=0,
                                  attention_bias=False, **CONFIGS["gpt_neox"])
    return AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval(), tok


# --------------------------------------------------------------------------- head-scale


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("factor", [0.0, 2.5])
def test_head_scale_equals_scaling_the_head_outputs(family, factor):
    model, tok = tiny_model(family)
    base = snapshot(model)
    base_logits = logits(model, tok)
    ed = Editor.from_model(model, tok)
    heads = [0, 3] if family == "llama" else [2]
    result = ed.apply(method="head-scale", layer=LAYER, heads=heads, factor=factor)
    path = ed.handle.sites.attn_out_path(LAYER)
    assert changed(model, base) == {f"{path}.weight"}
    assert [(d.module, d.param) for d in result.deltas] == [(path, "weight")]
    assert result.requests == [] and result.details["factor"] == [factor]  # details are per group

    lay = layout(ed)

    def scale(h):
        h[..., heads, :] *= factor
        return h

    assert_same_as_hook(logits(model, tok), hooked_logits(family, LAYER, scale), base_logits)

    weight = o_proj(ed).weight if not ed.handle.sites.weights_transposed else o_proj(ed).weight.T
    before = base[f"{path}.weight"] if not ed.handle.sites.weights_transposed else base[f"{path}.weight"].T
    for h in range(lay.n_heads):
        cols = slice(h * lay.head_dim, (h + 1) * lay.head_dim)
        if h not in heads:
            assert torch.equal(weight[:, cols], before[:, cols])
        elif factor == 0.0:
            assert torch.equal(weight[:, cols], torch.zeros_like(weight[:, cols]))  # ablation is exact

    ed.revert()
    assert_bit_identical(model, base)


def test_head_scale_uses_query_heads_under_gqa():
    """Tiny llama has 4 query heads sharing 2 key/value heads: every query head is addressable on its own."""
    model, tok = tiny_model("llama")
    ed = Editor.from_model(model, tok)
    lay = layout(ed)
    assert (lay.n_heads, lay.n_kv_heads) == (4, 2)
    assert o_proj(ed).weight.shape[1] == lay.n_heads * lay.head_dim
    before = o_proj(ed).weight.detach().clone()
    ed.apply(method="head-scale", layer=LAYER, heads=[3], factor=0.0)
    weight = o_proj(ed).weight
    assert torch.equal(weight[:, : 3 * lay.head_dim], before[:, : 3 * lay.head_dim])
    assert not weight[:, 3 * lay.head_dim:].any()


# --------------------------------------------------------------------------- head-steer


@pytest.mark.parametrize("family", FAMILIES)
def test_head_steer_direction_is_the_mean_difference_and_matches_the_hook(family):
    model, tok = tiny_model(family)
    base = snapshot(model)
    base_logits = logits(model, tok)
    ed = Editor.from_model(model, tok)
    heads, alpha = [1, 2], 3.0
    result = ed.apply(method="head-steer", layer=LAYER, heads=heads, alpha=alpha, desired=DESIRED,
                      undesired=UNDESIRED)
    path = ed.handle.sites.attn_out_path(LAYER)
    assert changed(model, base) == {f"{path}.bias"}
    [delta] = ed.ledger[-1].deltas
    assert (delta.param, delta.create) == ("bias", True)

    # The direction: mean last-token head output over the desired prompts minus the undesired ones.
    desired = torch.stack([h[-1] for h in captured_heads(family, LAYER, DESIRED)]).mean(0)
    undesired = torch.stack([h[-1] for h in captured_heads(family, LAYER, UNDESIRED)]).mean(0)
    directions = ed.ledger[-1].artifacts["directions"][0]
    assert sorted(directions) == heads
    for h in heads:
        torch.testing.assert_close(directions[h].double(), desired[h] - undesired[h], rtol=1e-5, atol=1e-6)
        assert result.details["direction_norms"][0][h] == pytest.approx(float((desired[h] - undesired[h]).norm()),
                                                                     rel=1e-5)

    def steer(x):
        for h in heads:
            x[..., h, :] += alpha * directions[h].to(x.dtype)
        return x

    assert_same_as_hook(logits(model, tok), hooked_logits(family, LAYER, steer), base_logits)

    module = o_proj(ed)
    ed.revert()
    assert_bit_identical(model, base)
    if family == "llama":  # the bias was created by the edit and is gone again
        assert module.bias is None and "bias" in module._parameters
        assert ed.weights.created == []


@pytest.mark.parametrize("family", FAMILIES)
def test_head_steer_with_explicit_directions(family):
    model, tok = tiny_model(family)
    base_logits = logits(model, tok)
    ed = Editor.from_model(model, tok)
    lay = layout(ed)
    gen = torch.Generator().manual_seed(1)
    direction = torch.randn(lay.head_dim, generator=gen)
    ed.apply(method="head-steer", layer=2, heads=[3], alpha=-0.5, directions=[direction.tolist()])

    def steer(x):
        x[..., 3, :] += -0.5 * direction.to(x.device)
        return x

    assert_same_as_hook(logits(model, tok), hooked_logits(family, 2, steer), base_logits)


def test_head_steer_normalize_gives_unit_directions():
    model, tok = tiny_model("llama")
    ed = Editor.from_model(model, tok)
    ed.apply(method="head-steer", layer=LAYER, heads=[0, 1], desired=DESIRED, undesired=UNDESIRED, normalize=True)
    for d in ed.ledger[-1].artifacts["directions"][0].values():
        assert float(d.norm()) == pytest.approx(1.0, abs=1e-6)


# --------------------------------------------------------------------------- head-mean-patch


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("position", ["all", "last"])
def test_head_mean_patch_replaces_the_head_by_its_mean(family, position):
    model, tok = tiny_model(family)
    base = snapshot(model)
    base_logits = logits(model, tok)
    ed = Editor.from_model(model, tok)
    heads = [0, 2]
    ed.apply(method="head-mean-patch", layer=LAYER, heads=heads, reference=REFERENCE, position=position)
    path = ed.handle.sites.attn_out_path(LAYER)
    assert changed(model, base) == {f"{path}.weight", f"{path}.bias"}
    assert [(d.param, d.create) for d in ed.ledger[-1].deltas] == [("weight", False), ("bias", True)]

    per_prompt = captured_heads(family, LAYER, REFERENCE)
    rows = torch.cat(per_prompt) if position == "all" else torch.stack([h[-1] for h in per_prompt])
    means = rows.mean(0)
    for h in heads:
        torch.testing.assert_close(ed.ledger[-1].artifacts["means"][0][h].double(), means[h], rtol=1e-5, atol=1e-6)

    def patch(x):
        for h in heads:
            x[..., h, :] = means[h].to(x.dtype)
        return x

    assert_same_as_hook(logits(model, tok), hooked_logits(family, LAYER, patch), base_logits)
    ed.revert()
    assert_bit_identical(model, base)


# --------------------------------------------------------------------------- revert and sequences


def test_revert_removes_the_created_bias_and_restores_outputs_exactly():
    model, tok = tiny_model("llama")
    base, base_logits = snapshot(model), logits(model, tok)
    ed = Editor.from_model(model, tok)
    module = o_proj(ed)
    key = f"{ed.handle.sites.attn_out_path(LAYER)}.bias"

    ed.apply(method="head-steer", layer=LAYER, heads=[1], desired=DESIRED, undesired=UNDESIRED)
    after_steer = snapshot(model)
    assert key in after_steer and ed.weights.created == [key]
    with ed.weights.base_weights():  # statistics on the base model see no bias at all
        assert module.bias is None
        assert torch.equal(logits(model, tok), base_logits)
    assert_bit_identical(model, after_steer)

    ed.apply(method="head-mean-patch", layer=LAYER, heads=[2], reference=REFERENCE)  # adds to the created bias
    ed.apply(method="head-scale", layer=LAYER, heads=[0], factor=0.5)
    ed.revert(2)
    assert_bit_identical(model, after_steer)
    ed.revert()
    assert_bit_identical(model, base)
    assert module.bias is None and "bias" in module._parameters
    assert ed.weights.created == [] and key not in ed.weights.touched
    assert torch.equal(logits(model, tok), base_logits)


def test_head_edits_mix_with_rome_and_revert_exactly():
    model, tok = tiny_model("llama")
    base = snapshot(model)
    ed = Editor.from_model(model, tok)
    ed.apply(method="head-steer", layer=LAYER, heads=[1], desired=DESIRED, undesired=UNDESIRED)
    ed.apply({"prompt": "The capital of {} is", "subject": "Italy", "target_new": "London"}, method="rome",
             layer=2, corpus={"n_samples": 20, "max_tokens": 16}, templates={"groups": [[5, 1]]},
             objective={"steps": 2})
    ed.revert(2)
    assert_bit_identical(model, base)


def test_ledger_replay_reproduces_head_edits():
    model, tok = tiny_model("llama")
    ed = Editor.from_model(model, tok)
    ed.apply(method="head-steer", layer=LAYER, heads=[1, 3], alpha=2.0, desired=DESIRED, undesired=UNDESIRED)
    ed.apply(method="head-mean-patch", layer=2, heads=[0], reference=REFERENCE, position="last")
    ed.apply(method="head-scale", layer=0, heads=[2], factor=0.0)
    exported = json.loads(json.dumps(ed.ledger_json()))
    assert [e["requests"] for e in exported["edits"]] == [[], [], []]
    assert exported["edits"][0]["deltas"][0]["create"] is True

    fresh_model, _ = tiny_model("llama")
    fresh = Editor.from_model(fresh_model, tok)
    replay_ledger(fresh, exported)
    assert_bit_identical(fresh_model, snapshot(model))


# --------------------------------------------------------------------------- typed errors


@pytest.mark.parametrize(
    ("method", "overrides", "needles"),
    [
        ("head-scale", {"heads": [4]}, ["'heads'", "4", "0..3", "4 query heads", "2 key/value heads"]),
        ("head-scale", {"heads": [1, -1]}, ["'heads'", "-1", "0..3"]),
        ("head-scale", {"heads": [1, 1]}, ["'heads'", "more than once"]),
        ("head-scale", {"heads": []}, ["'heads'"]),
        ("head-scale", {"layer": 4}, ["'layer'", "0..3"]),
        ("head-scale", {"factr": 2.0}, ["'factr'"]),
        ("head-steer", {"heads": [5], "directions": [[0.0] * 8]}, ["'heads'", "5"]),
        ("head-steer", {}, ["'desired'"]),
        ("head-steer", {"desired": DESIRED}, ["'undesired'"]),
        ("head-steer", {"directions": [[0.0] * 7]}, ["'directions.0'", "7 values", "8 dimensions"]),
        ("head-steer", {"directions": [[0.0] * 8] * 2}, ["'directions'", "2 direction(s) for 1 head(s)"]),
        ("head-steer", {"directions": [[0.0] * 8], "desired": DESIRED}, ["'directions'", "not both"]),
        ("head-mean-patch", {"reference": []}, ["'reference'"]),
        ("head-mean-patch", {"reference": REFERENCE, "position": "first"}, ["'position'"]),
        ("head-mean-patch", {"reference": [""]}, ["'reference.0'"]),
    ],
)
def test_bad_hyperparameters_name_the_field(method, overrides, needles):
    model, tok = tiny_model("llama")
    base = snapshot(model)
    ed = Editor.from_model(model, tok)
    hparams = {"layer": LAYER, "heads": [1], **overrides}
    with pytest.raises(InvalidHyperparametersError) as info:
        ed.apply(method=method, **hparams)
    message = str(info.value)
    assert message.startswith(f"{method}: ")
    for needle in needles:
        assert needle in message, message
    assert ed.ledger == []
    assert_bit_identical(model, base)


def test_missing_layer_and_heads_are_named():
    model, tok = tiny_model("gpt2")
    ed = Editor.from_model(model, tok)
    with pytest.raises(InvalidHyperparametersError) as info:
        ed.apply(method="head-scale")
    assert "'layer'" in str(info.value) and "'heads'" in str(info.value)


def test_head_methods_refuse_edit_requests():
    model, tok = tiny_model("llama")
    ed = Editor.from_model(model, tok)
    with pytest.raises(InvalidRequestError, match="takes no edit requests"):
        ed.apply({"prompt": "The capital of {} is", "subject": "Italy", "target_new": "London"},
                 method="head-scale", layer=LAYER, heads=[0])
    with pytest.raises(InvalidRequestError, match="non-empty list"):  # request-driven methods still need them
        ed.apply(method="rome", layer=LAYER)


# --------------------------------------------------------------------------- checkpoints


def _reload_matches(ed: Editor, path) -> AutoModelForCausalLM:
    loaded = AutoModelForCausalLM.from_pretrained(path).to(ed.model.device).eval()
    torch.testing.assert_close(logits(loaded, ed.tokenizer), logits(ed.model, ed.tokenizer), rtol=0, atol=1e-5)
    return loaded


def test_llama_with_created_bias_saves_for_stock_transformers(tmp_path):
    model, tok = tiny_model("llama")
    ed = Editor.from_model(model, tok)
    ed.apply(method="head-steer", layer=LAYER, heads=[1, 3], alpha=4.0, desired=DESIRED, undesired=UNDESIRED)
    ed.apply(method="head-mean-patch", layer=2, heads=[0], reference=REFERENCE)
    state = snapshot(model)
    out = ed.save(tmp_path / "ckpt")

    config = json.loads((out / "config.json").read_text())
    assert config["attention_bias"] is True
    manifest = json.loads((out / "suture.json").read_text())
    adaptation = manifest["stock_adaptation"]
    assert adaptation["config"] == {"attention_bias": True}
    assert adaptation["created"] == [f"model.layers.{layer}.self_attn.o_proj.bias" for layer in (LAYER, 2)]
    assert len(adaptation["zero_filled"]) == 4 * 4 - 2  # q/k/v/o biases of 4 layers, but the 2 created ones

    loaded = _reload_matches(ed, out)
    loaded_state = loaded.state_dict()
    for key in adaptation["zero_filled"]:
        assert not loaded_state[key].any(), key
    for key in adaptation["created"]:
        assert torch.equal(loaded_state[key], state[key])

    # The live model and config are as before the save.
    assert model.config.attention_bias is False
    assert model.model.layers[0].self_attn.q_proj.bias is None
    assert_bit_identical(model, state)

    ed.revert(2)  # and the edits still revert to a bias-free model
    assert all(layer.self_attn.o_proj.bias is None for layer in model.model.layers)


def test_gpt_neox_without_attention_bias_saves_with_the_flag(tmp_path):
    model, tok = neox_without_bias()
    base_state = snapshot(model)
    ed = Editor.from_model(model, tok)
    ed.apply(method="head-steer", layer=LAYER, heads=[2], desired=DESIRED, undesired=UNDESIRED)
    path = ed.handle.sites.attn_out_path(LAYER)
    assert changed(model, base_state) == {f"{path}.bias"}
    out = ed.save(tmp_path / "ckpt")
    assert json.loads((out / "config.json").read_text())["attention_bias"] is True
    manifest = json.loads((out / "suture.json").read_text())
    assert f"gpt_neox.layers.{LAYER}.attention.query_key_value.bias" in manifest["stock_adaptation"]["zero_filled"]
    _reload_matches(ed, out)
    ed.revert()
    assert_bit_identical(model, base_state)


@pytest.mark.parametrize("family", ["gpt2", "gpt_neox"])
def test_families_with_an_output_bias_save_without_adaptation(family, tmp_path):
    model, tok = tiny_model(family)
    ed = Editor.from_model(model, tok)
    ed.apply(method="head-steer", layer=LAYER, heads=[0], desired=DESIRED, undesired=UNDESIRED)
    ed.apply(method="head-mean-patch", layer=2, heads=[1, 3], reference=REFERENCE)
    assert ed.weights.created == []
    out = ed.save(tmp_path / "ckpt")
    assert json.loads((out / "suture.json").read_text())["stock_adaptation"] is None
    _reload_matches(ed, out)


@pytest.mark.parametrize("family", ["gemma2", "gemma3_text"])
def test_gemma_with_created_bias_saves_for_stock_transformers(family, tmp_path):
    """Gemma builds its attention biases from the same `attention_bias` flag as Llama."""
    model, tok = tiny_model(family)
    base = snapshot(model)
    ed = Editor.from_model(model, tok)
    ed.apply(method="head-steer", layer=LAYER, heads=[2], alpha=4.0, desired=DESIRED, undesired=UNDESIRED)
    out = ed.save(tmp_path / "ckpt")
    assert json.loads((out / "config.json").read_text())["attention_bias"] is True
    _reload_matches(ed, out)
    ed.revert()
    assert_bit_identical(model, base)


@pytest.mark.parametrize("family", ["mistral", "qwen2", "gptj"])
def test_families_without_an_output_bias_flag_refuse_to_save_created_biases(family, tmp_path):
    model, tok = tiny_model(family)
    ed = Editor.from_model(model, tok)
    ed.apply(method="head-scale", layer=LAYER, heads=[0], factor=0.5)  # no bias: saves as usual
    _reload_matches(ed, ed.save(tmp_path / "scaled"))

    ed.apply(method="head-steer", layer=LAYER, heads=[0], desired=DESIRED, undesired=UNDESIRED)
    with pytest.raises(SutureError) as info:
        ed.save(tmp_path / "steered")
    message = str(info.value)
    assert f"{ed.handle.sites.attn_out_path(LAYER)}.bias" in message and family in message
    assert "revert" in message
    assert not (tmp_path / "steered").exists() and not list(tmp_path.glob(".steered*"))
    ed.revert()
    _reload_matches(ed, ed.save(tmp_path / "reverted"))


def test_adapter_export_takes_head_scale_and_refuses_created_biases(tmp_path):
    model, tok = tiny_model("llama")
    ed = Editor.from_model(model, tok)
    ed.apply(method="head-scale", layer=LAYER, heads=[1], factor=0.0)
    ed.export_adapter(tmp_path / "scale")
    ed.apply(method="head-steer", layer=LAYER, heads=[1], desired=DESIRED, undesired=UNDESIRED)
    with pytest.raises(AdapterExportError, match="bias"):
        ed.export_adapter(tmp_path / "steer")
