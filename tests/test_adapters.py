"""PEFT LoRA export of edits on tiny models: a fresh base model plus the adapter reproduces the edited model
(logits and merged weights), ranks are exact, adapters of separate edits stack, and deltas LoRA cannot
carry fail with a clear error and write nothing."""

from __future__ import annotations

import copy
import json
from types import SimpleNamespace

import pytest
import torch
from peft import PeftConfig, PeftModel
from safetensors.torch import load_file
from tiny import tiny_model

from suture.editor import AdapterExportError, Editor, EditRequest, LedgerEntry, WeightDelta, export_lora

LAYER = 1
# test_tiny_edits' effective hyperparameters with a tighter clamp: the edits still move the logits by 0.1-0.4,
# while the edited weights stay below ~1.3, where float32 spacing (<= 2.4e-7) leaves the 1e-6 tolerance of the
# merged-weight comparison several ulps of room (with clamp 200 the weights reach ~4 and 1 ulp is 4.8e-7).
HP = {"layer": LAYER, "corpus": {"n_samples": 40, "max_tokens": 32}, "templates": {"groups": [[5, 2]]},
      "objective": {"steps": 8, "lr": 0.05, "weight_decay": 0.0, "clamp_norm_factor": 10.0}}
FIRST = EditRequest(prompt="The capital of {} is", subject="Italy", target_new="London", target_true="Rome")
SECOND = EditRequest(prompt="The mother tongue of {} is", subject="Danielle Darrieux", target_new="English",
                     target_true="French")
THIRD = EditRequest(prompt="{} plays the", subject="Toko Yasuda", target_new="guitar")
TEXTS = ["The capital of Italy is", "The mother tongue of Danielle Darrieux is French.",
         "Toko Yasuda plays the guitar."]
FAMILIES = ["llama", "gpt2", "gpt_neox"]


@torch.no_grad()
def logits(model, tok) -> torch.Tensor:
    batch = tok(TEXTS, return_tensors="pt", padding=True)
    return model(**batch.to(model.device)).logits.float()


def weight_of(model, key: str) -> torch.Tensor:
    return model.state_dict()[key].detach().clone()


def adapter_config(path) -> dict:
    return json.loads((path / "adapter_config.json").read_text())


def load_peft(base, adapters: dict[str, object]) -> PeftModel:
    """A fresh copy of `base` with the adapters {name: dir} loaded, all of them active."""
    names = list(adapters)
    model = PeftModel.from_pretrained(copy.deepcopy(base), adapters[names[0]], adapter_name=names[0])
    for name in names[1:]:
        model.load_adapter(adapters[name], adapter_name=name)
    model.base_model.set_adapter(names, inference_mode=True)  # PeftModel.set_adapter takes one name only
    return model.eval()


def manual_entry(deltas: list[WeightDelta]) -> LedgerEntry:
    return LedgerEntry(method="manual", hparams={}, requests=[FIRST], deltas=deltas, seconds=0.0)


@pytest.fixture(scope="module", params=FAMILIES)
def exported(request, tmp_path_factory):
    """Two ROME edits on one family, with the adapters exported after the first and after the second."""
    family = request.param
    out = tmp_path_factory.mktemp(f"adapters-{family}")
    with pytest.MonkeyPatch.context() as mp:  # same cache home as conftest's function-scoped fixture
        mp.setenv("SUTURE_HOME", str(tmp_path_factory.getbasetemp() / "suture-home"))
        model, tok = tiny_model(family)
        base = copy.deepcopy(model)
        ed = Editor.from_model(model, tok)
        key = f"{ed.handle.sites.mlp_out_path(LAYER)}.weight"
        first = ed.apply([FIRST], method="rome", **HP)
        one = ed.export_adapter(out / "one")
        after_one = SimpleNamespace(logits=logits(model, tok), weight=weight_of(model, key))
        second = ed.apply([SECOND], method="rome", **HP)
        dirs = {"a": export_lora(ed, out / "a", entries=[first.id]), "b": export_lora(ed, out / "b", [second.id]),
                "both": ed.export_adapter(out / "both")}
        after_two = SimpleNamespace(logits=logits(model, tok), weight=weight_of(model, key))
    return SimpleNamespace(family=family, base=base, tok=tok, ed=ed, key=key, module=key[:-len(".weight")],
                           ids=(first.id, second.id), one=one, dirs=dirs, after_one=after_one, after_two=after_two)


# --------------------------------------------------------------------------- one edit


def test_one_rome_edit_is_a_rank_one_adapter(exported):
    path, module = exported.one, exported.module
    assert sorted(p.name for p in path.iterdir()) == ["adapter_config.json", "adapter_model.safetensors",
                                                      "suture-adapter.json"]
    assert not list(path.parent.glob(".one.partial-*"))
    config = adapter_config(path)
    assert config["peft_type"] == "LORA" and config["task_type"] == "CAUSAL_LM"
    assert config["r"] == 1 and config["lora_alpha"] == 1
    assert config["rank_pattern"] == {} and config["alpha_pattern"] == {}
    assert config["target_modules"] == [module]
    assert config["lora_dropout"] == 0.0 and config["bias"] == "none"
    assert config["fan_in_fan_out"] is (exported.family == "gpt2")
    assert config["base_model_name_or_path"] == exported.ed.handle.ref
    weight = exported.base.get_submodule(module).weight
    out_features, in_features = weight.shape[::-1] if exported.family == "gpt2" else weight.shape
    tensors = load_file(path / "adapter_model.safetensors")
    assert {k: tuple(v.shape) for k, v in tensors.items()} == {
        f"base_model.model.{module}.lora_A.weight": (1, in_features),
        f"base_model.model.{module}.lora_B.weight": (out_features, 1),
    }
    # entries=[first id] after the second edit exports the same tensors
    again = load_file(exported.dirs["a"] / "adapter_model.safetensors")
    assert all(torch.equal(tensors[k], again[k]) for k in tensors)


def test_adapter_on_fresh_base_reproduces_edited_logits(exported):
    model = load_peft(exported.base, {"one": exported.one})
    got = logits(model, exported.tok)
    base = logits(exported.base, exported.tok)
    assert (exported.after_one.logits - base).abs().max() > 1e-4  # the edit does change the logits
    torch.testing.assert_close(got, exported.after_one.logits, rtol=0, atol=1e-5)


def test_merge_and_unload_gives_the_edited_weights(exported):
    merged = load_peft(exported.base, {"one": exported.one}).merge_and_unload()
    state, base = merged.state_dict(), exported.base.state_dict()
    assert state.keys() == base.keys()
    torch.testing.assert_close(state[exported.key], exported.after_one.weight, rtol=0, atol=1e-6)
    assert [k for k in base if k != exported.key and not torch.equal(state[k], base[k])] == []


def test_manifest_names_base_and_edits(exported):
    manifest = json.loads((exported.dirs["b"] / "suture-adapter.json").read_text())
    assert manifest["format"] == "suture-adapter/1"
    assert manifest["base_model"]["fingerprint_sha256"] == exported.ed.handle.base_fingerprint
    assert manifest["base_model"]["ref"] == exported.ed.handle.ref
    [edit] = manifest["edits"]
    assert edit["id"] == exported.ids[1] and edit["method"] == "rome" and edit["ledger_index"] == 1
    assert edit["requests"][0]["subject"] == SECOND.subject
    assert manifest["ledger_ids"] == list(exported.ids)
    assert manifest["adapter"]["modules"] == {exported.module: 1}
    both = json.loads((exported.dirs["both"] / "suture-adapter.json").read_text())
    assert [e["id"] for e in both["edits"]] == list(exported.ids)


# --------------------------------------------------------------------------- two edits


def test_two_adapters_active_together_reproduce_both_edits(exported):
    model = load_peft(exported.base, {"a": exported.dirs["a"], "b": exported.dirs["b"]})
    assert model.base_model.active_adapter == ["a", "b"]
    torch.testing.assert_close(logits(model, exported.tok), exported.after_two.logits, rtol=0, atol=1e-5)
    model.base_model.set_adapter("a", inference_mode=True)  # the first alone is the model after the first edit
    torch.testing.assert_close(logits(model, exported.tok), exported.after_one.logits, rtol=0, atol=1e-5)


def test_both_edits_in_one_adapter_have_rank_two(exported):
    path = exported.dirs["both"]
    config = adapter_config(path)
    assert config["r"] == 2 and config["lora_alpha"] == 2 and config["target_modules"] == [exported.module]
    model = load_peft(exported.base, {"both": path})
    torch.testing.assert_close(logits(model, exported.tok), exported.after_two.logits, rtol=0, atol=1e-5)
    merged = model.merge_and_unload().state_dict()[exported.key]
    torch.testing.assert_close(merged, exported.after_two.weight, rtol=0, atol=1e-6)


# --------------------------------------------------------------------------- ranks and dense deltas


def test_modules_of_different_rank_use_rank_pattern(tmp_path):
    model, tok = tiny_model("llama")
    base = copy.deepcopy(model)
    ed = Editor.from_model(model, tok)
    ed.apply([FIRST, SECOND], method="rome", **HP)  # two rank-one deltas on layer 1
    ed.apply([THIRD], method="rome", **{**HP, "layer": 2})
    low, high = ed.handle.sites.mlp_out_path(2), ed.handle.sites.mlp_out_path(LAYER)
    config = adapter_config(ed.export_adapter(tmp_path / "adapter"))
    assert config["r"] == 2 and config["lora_alpha"] == 2
    assert config["rank_pattern"] == {low: 1} and config["alpha_pattern"] == {low: 1}
    assert sorted(config["target_modules"]) == sorted([high, low])
    peft_model = load_peft(base, {"x": tmp_path / "adapter"})
    assert peft_model.base_model.model.get_submodule(low).r["x"] == 1
    assert peft_model.base_model.model.get_submodule(high).r["x"] == 2
    torch.testing.assert_close(logits(peft_model, tok), logits(model, tok), rtol=0, atol=1e-5)


@pytest.mark.parametrize(("family", "module"), [("llama", "model.layers.2.mlp.up_proj"),
                                                ("gpt2", "transformer.h.2.mlp.c_fc")])
def test_dense_weight_delta_is_factored_by_svd(family, module, tmp_path):
    """A dense rank-3 delta on a non-square projection (Conv1D for gpt2: stored (in, out))."""
    model, tok = tiny_model(family)
    base = copy.deepcopy(model)
    ed = Editor.from_model(model, tok)
    weight = model.get_submodule(module).weight
    torch.manual_seed(1)
    dense = 0.05 * torch.randn(weight.shape[0], 3) @ torch.randn(3, weight.shape[1])
    delta = WeightDelta(module=module, dense=dense)
    ed.weights.apply([delta])
    ed.ledger.append(manual_entry([delta]))
    path = ed.export_adapter(tmp_path / "dense")
    assert adapter_config(path)["r"] == 3
    peft_model = load_peft(base, {"d": path})
    torch.testing.assert_close(logits(peft_model, tok), logits(model, tok), rtol=0, atol=1e-5)
    merged = peft_model.merge_and_unload().state_dict()[f"{module}.weight"]
    torch.testing.assert_close(merged, weight.detach(), rtol=0, atol=1e-6)


# --------------------------------------------------------------------------- what LoRA cannot carry


def _llama_editor():
    model, tok = tiny_model("llama")
    return Editor.from_model(model, tok)


def test_bias_delta_raises_a_clear_error_and_writes_nothing(tmp_path):
    ed = _llama_editor()
    module = ed.handle.sites.mlp_out_path(LAYER)  # Llama's down_proj has no bias
    hidden = ed.model.get_submodule(module).weight.shape[0]
    ed.ledger.append(manual_entry([WeightDelta(module=module, param="bias", dense=torch.ones(hidden))]))
    with pytest.raises(AdapterExportError) as info:
        ed.export_adapter(tmp_path / "adapter")
    message = str(info.value)
    assert f"{module}.bias" in message and "bias-free projection" in message
    assert "LoRA carries weight deltas of Linear/Conv1D layers only" in message
    assert "save a full checkpoint instead" in message
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("family", "module", "needle"), [
    ("llama", "model.embed_tokens", "Embedding rather than a Linear/Conv1D layer"),
    ("gpt2", "lm_head", "tied to transformer.wte.weight"),
])
def test_other_unexportable_weights_raise(family, module, needle, tmp_path):
    model, tok = tiny_model(family)
    ed = Editor.from_model(model, tok)
    rows, cols = model.get_submodule(module).weight.shape
    delta = WeightDelta(module=module, left=torch.ones(rows, 1), right=torch.ones(1, cols))
    ed.ledger.append(manual_entry([delta]))
    with pytest.raises(AdapterExportError, match="save a full checkpoint") as info:
        ed.export_adapter(tmp_path / "adapter")
    assert needle in str(info.value) and module in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_refuses_a_non_empty_target_and_bad_selections(tmp_path):
    ed = _llama_editor()
    module = ed.handle.sites.mlp_out_path(LAYER)
    rows, cols = ed.model.get_submodule(module).weight.shape
    with pytest.raises(AdapterExportError, match="ledger is empty"):
        ed.export_adapter(tmp_path / "nothing")
    delta = WeightDelta(module=module, left=torch.ones(rows, 1), right=torch.ones(1, cols))
    ed.ledger.append(manual_entry([delta]))
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not empty"):
        ed.export_adapter(taken)
    assert [p.name for p in taken.iterdir()] == ["notes.txt"]
    with pytest.raises(FileExistsError):
        ed.export_adapter(taken / "notes.txt")
    with pytest.raises(AdapterExportError, match="unknown ledger entry id"):
        ed.export_adapter(tmp_path / "x", entries=["nope"])
    ed.ledger.append(manual_entry([WeightDelta(module=module, left=-torch.ones(rows, 1), right=torch.ones(1, cols))]))
    with pytest.raises(AdapterExportError, match="leave every weight unchanged"):
        ed.export_adapter(tmp_path / "x")  # the two deltas cancel
    empty = tmp_path / "empty"
    empty.mkdir()
    assert (ed.export_adapter(empty, entries=[ed.ledger[0].id]) / "adapter_config.json").is_file()
    assert PeftConfig.from_pretrained(str(empty)).r == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "taken"]
