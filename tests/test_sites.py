"""Site maps: every tiny family resolves to module paths that exist and have the shapes methods assume."""

from __future__ import annotations

import pytest
import torch
from fake_plugins import install_fake_distribution, run_json
from tiny import CONFIGS, FAMILIES, tiny_model, tiny_tokenizer
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM

from suture.editor import Editor, UnsupportedArchitectureError
from suture.editor.kv.capture import capture_input, capture_output, hooks
from suture.editor.sites import HeadLayout, linear_weight_as_out_in, site_map_for, supported_model_types
from suture.editor.sites.base import text_config

GQA = {"llama", "mistral", "qwen2", "gemma", "gemma2", "gemma3_text", "gemma3"}
EXPECTED_FAMILY = {"gemma2": "gemma", "gemma3_text": "gemma", "gemma3": "gemma"}


@pytest.fixture(scope="module", params=FAMILIES)
def tiny(request):
    model, tok = tiny_model(request.param)
    return request.param, model, tok


def test_every_tiny_family_is_supported():
    assert set(FAMILIES) <= set(supported_model_types())


def test_every_registered_model_type_has_a_tiny_model():
    """A site map is only trusted for the model types a tiny model of that type exercises."""
    assert set(supported_model_types()) <= set(FAMILIES)


def test_site_map_is_found_by_model_type(tiny):
    family, model, _ = tiny
    sites = site_map_for(model.config)
    assert sites.family == EXPECTED_FAMILY.get(family, family)
    assert model.config.model_type in sites.model_types


def test_site_paths_exist(tiny):
    family, model, _ = tiny
    sites = site_map_for(model.config)
    layers = sites.layer_modules(model)
    assert isinstance(layers, nn.ModuleList)
    assert sites.n_layers(model) == len(layers) == text_config(model.config).num_hidden_layers == 4
    hidden = text_config(model.config).hidden_size
    for layer in range(len(layers)):
        mlp_out = model.get_submodule(sites.mlp_out_path(layer))
        attn_out = model.get_submodule(sites.attn_out_path(layer))
        assert mlp_out is layers[layer].get_submodule(sites.mlp_out)
        assert attn_out is layers[layer].get_submodule(sites.attn_out)
        for module in (mlp_out, attn_out):
            assert isinstance(module.weight, nn.Parameter)
            assert linear_weight_as_out_in(module.weight, sites.weights_transposed).shape[0] == hidden
    assert sites.mlp_out_path(2) == f"{sites.layers}.2.{sites.mlp_out}"
    final_norm = model.get_submodule(sites.final_norm)
    assert "norm" in type(final_norm).__name__.lower()
    unembed = model.get_submodule(sites.unembed)
    assert unembed is model.get_output_embeddings()
    assert tuple(unembed.weight.shape) == (text_config(model.config).vocab_size, hidden)


def test_mlp_out_orientation_matches_the_data_flowing_through_it(tiny):
    """The transposed flag is right iff the module's input is its weight's in-dimension (as out, in)."""
    _, model, tok = tiny
    sites = site_map_for(model.config)
    module = model.get_submodule(sites.mlp_out_path(1))
    inputs, outputs = [], []
    with hooks(capture_input(module, inputs), capture_output(module, outputs)), torch.no_grad():
        model(**tok(["The capital of France is"], return_tensors="pt").to(model.device))
    out_features, in_features = linear_weight_as_out_in(module.weight, sites.weights_transposed).shape
    assert inputs[0].shape[-1] == in_features
    assert outputs[0].shape[-1] == out_features == text_config(model.config).hidden_size
    assert in_features != out_features  # otherwise the check above could not tell the orientations apart


def test_head_layout(tiny):
    family, model, _ = tiny
    layout = site_map_for(model.config).head_layout(model.config)
    expected_kv = 2 if family in GQA else 4
    assert layout == HeadLayout(n_heads=4, head_dim=8, n_kv_heads=expected_kv)
    assert layout.group_size == (2 if family in GQA else 1)
    attn_out = model.get_submodule(site_map_for(model.config).attn_out_path(0))
    transposed = site_map_for(model.config).weights_transposed
    assert linear_weight_as_out_in(attn_out.weight, transposed).shape[1] == layout.n_heads * layout.head_dim
    if family in GQA:
        attention = model.get_submodule(f"{site_map_for(model.config).layers}.0.self_attn")
        assert attention.k_proj.out_features == layout.n_kv_heads * layout.head_dim
        assert attention.q_proj.out_features == layout.n_heads * layout.head_dim


def test_llama_group_size_is_two():
    model, _ = tiny_model("llama")
    layout = site_map_for(model.config).head_layout(model.config)
    assert (layout.n_heads, layout.n_kv_heads, layout.group_size) == (4, 2, 2)


def test_head_dim_comes_from_config_when_set():
    config = AutoConfig.for_model("gemma2", **{**CONFIGS["gemma2"], "head_dim": 16})
    layout = site_map_for(config).head_layout(config)
    assert layout == HeadLayout(n_heads=4, head_dim=16, n_kv_heads=2)


def test_only_gpt2_is_transposed():
    for family in FAMILIES:
        config = AutoConfig.for_model(family, **CONFIGS[family])
        assert site_map_for(config).weights_transposed is (family == "gpt2"), family


def test_logit_softcap():
    gemma2 = AutoConfig.for_model("gemma2", **CONFIGS["gemma2"], final_logit_softcapping=30.0)
    assert site_map_for(gemma2).logit_softcap(gemma2) == 30.0
    llama = AutoConfig.for_model("llama", **CONFIGS["llama"])
    assert site_map_for(llama).logit_softcap(llama) is None


def test_handle_carries_the_site_map():
    model, tok = tiny_model("gpt2")
    editor = Editor.from_model(model, tok)
    assert editor.handle.sites.family == "gpt2"
    assert editor.handle.n_layers == 4


def _assert_lists_supported(exc: UnsupportedArchitectureError, model_type: str) -> None:
    message = str(exc)
    assert exc.model_type == model_type
    assert repr(model_type) in message
    assert sorted(exc.supported) == supported_model_types()
    for supported in supported_model_types():
        assert supported in message


def test_unsupported_config_lists_supported_types():
    config = AutoConfig.for_model("bloom", vocab_size=400, hidden_size=32, n_layer=2, n_head=4)
    with pytest.raises(UnsupportedArchitectureError) as info:
        site_map_for(config)
    _assert_lists_supported(info.value, "bloom")


def test_unsupported_model_cannot_be_edited():
    tok = tiny_tokenizer()
    config = AutoConfig.for_model("opt", vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, ffn_dim=64,
                                  num_attention_heads=4, word_embed_proj_dim=32, max_position_embeddings=64)
    model = AutoModelForCausalLM.from_config(config)
    with pytest.raises(UnsupportedArchitectureError) as info:
        Editor.from_model(model, tok)
    _assert_lists_supported(info.value, "opt")


def test_gemma1_adds_mlp_outputs_to_the_residual_stream_and_gemma2_3_do_not():
    """Gemma 1 has no post-feedforward norm (multi-layer MEMIT applies); Gemma 2 and 3 have one."""
    for model_type in ("gemma", "gemma2", "gemma3_text", "gemma3"):
        model, _ = tiny_model(model_type)
        has_post_norm = any("post_feedforward_layernorm" in name for name, _ in model.named_modules())
        assert site_map_for(model.config).mlp_out_adds_to_residual is not has_post_norm, model_type


def test_a_model_class_laid_out_unlike_its_site_map_is_refused_naming_the_class():
    """A text-only class under a multimodal model_type: refused at load, naming the class, not a deep error."""
    model, tok = tiny_model("gemma3_text")
    model.config.model_type = "gemma3"  # as a checkpoint whose config and class disagree would present it
    expected = "Gemma3ForCausalLM has no layers at 'model.language_model.layers'"
    with pytest.raises(UnsupportedArchitectureError, match=expected):
        Editor.from_model(model, tok)


def test_registering_a_claimed_model_type_is_refused_naming_both():
    from suture.editor import DuplicateRegistrationError
    from suture.editor.sites import SiteMap, register_site_map

    intruder = SiteMap(family="intruder", model_types=("llama",), layers="model.layers", mlp_out="mlp.down_proj",
                       attn_out="self_attn.o_proj", final_norm="model.norm", unembed="lm_head")
    with pytest.raises(DuplicateRegistrationError, match="'llama' is already registered by family 'llama'.*'intruder'"):
        register_site_map(intruder)
    assert site_map_for(tiny_model("llama")[0].config).family == "llama"
    register_site_map(site_map_for(tiny_model("llama")[0].config))  # the same map again is fine


def test_a_broken_site_map_entry_point_is_reported_and_the_built_in_families_remain(tmp_path):
    install_fake_distribution(tmp_path, "suture-broken-family",
                              "[suture.site_maps]\nbroken-family = suture_no_such_family_module\n")
    report = run_json(tmp_path, "import json; from suture.editor import sites; print(json.dumps("
                                "{'types': sites.supported_model_types(), 'errors': sites.site_map_load_errors()}))")
    assert set(FAMILIES) <= set(report["types"])
    assert list(report["errors"]) == ["broken-family"]
    assert "ModuleNotFoundError" in report["errors"]["broken-family"]
