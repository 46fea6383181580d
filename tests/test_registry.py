"""The open method registry: a method defined here joins through `register_method` and runs like ROME."""

from __future__ import annotations

import json
from importlib import metadata

import pytest
import torch
from fake_plugins import install_fake_distribution, run_json
from pydantic import BaseModel, Field
from tiny import tiny_model

import suture.methods as methods
from suture.editor import (
    EditContext,
    EditMethod,
    Editor,
    EditRequest,
    InvalidHyperparametersError,
    MethodOutput,
    UnknownMethodError,
    WeightDelta,
    get_method,
    register_method,
)
from suture.editor.fingerprint import weights_fingerprint
from suture.editor.registry import ENTRY_POINT_GROUP

REQUEST = EditRequest(prompt="The capital of {} is", subject="Italy", target_new="London")


class ScaleHParams(BaseModel):
    factor: float = Field(2.0, gt=0)
    layer: int = 0


@register_method
class ScaleMethod(EditMethod):
    """Scales one MLP output projection by `factor` (a dense delta of (factor - 1) · W)."""

    name = "test-scale"
    hparams_model = ScaleHParams

    def check_hparams(self, handle, hparams: ScaleHParams) -> None:
        if not 0 <= hparams.layer < handle.n_layers:
            raise InvalidHyperparametersError(f"test-scale: hyperparameter 'layer': {hparams.layer} out of range")

    def compute(self, ctx: EditContext, requests: list[EditRequest], hparams: ScaleHParams) -> MethodOutput:
        path = ctx.handle.sites.mlp_out_path(hparams.layer)
        weight = ctx.handle.model.get_submodule(path).weight
        return MethodOutput([WeightDelta(module=path, dense=(hparams.factor - 1.0) * weight.detach().clone())],
                            {"factor": hparams.factor, "n_requests": len(requests)})


def snapshot(model) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


def test_registered_method_is_available():
    assert "test-scale" in methods.available()
    assert "rome" in methods.available()
    assert methods.available() == sorted(methods.available())
    assert isinstance(get_method("test-scale"), ScaleMethod)


def test_rome_is_an_entry_point():
    entry_points = metadata.entry_points(group=ENTRY_POINT_GROUP)
    assert ENTRY_POINT_GROUP == "suture.methods"
    assert "rome" in entry_points.names
    assert entry_points["rome"].value == "suture.methods.rome"
    module = entry_points["rome"].load()
    assert module.Rome.name == "rome"
    assert type(get_method("rome")) is module.Rome


def test_registration_needs_name_and_hparams():
    class Nameless(EditMethod):
        hparams_model = ScaleHParams

        def compute(self, ctx, requests, hparams):
            raise AssertionError("never called")

    with pytest.raises(TypeError, match="name"):
        register_method(Nameless)
    assert "Nameless" not in methods.available()


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_apply_and_revert_a_registered_method(family):
    model, tok = tiny_model(family)
    base = snapshot(model)
    ed = Editor.from_model(model, tok)
    path = ed.handle.sites.mlp_out_path(1)
    key = f"{path}.weight"

    result = ed.apply([REQUEST, REQUEST.model_copy(update={"subject": "France"})], method="test-scale",
                      factor=2.0, layer=1)
    assert result.method == "test-scale"
    assert result.hparams == {"factor": 2.0, "layer": 1}
    assert [(d.module, d.param, d.rank) for d in result.deltas] == [(path, "weight", None)]
    # Not one-request-at-a-time: a single compute saw both requests.
    assert result.details == {"factor": [2.0], "n_requests": [2]}
    current = model.state_dict()
    assert torch.equal(current[key], 2.0 * base[key])  # w + w is exact in floating point
    assert [n for n in base if not torch.equal(current[n], base[n])] == [key]

    ed.apply([REQUEST], method="test-scale", factor=0.5, layer=1)
    assert torch.equal(model.state_dict()[key], base[key])  # 2w + (-0.5)(2w) = w exactly

    undone = ed.revert(2)
    assert [r.method for r in undone] == ["test-scale", "test-scale"]
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, base[name]), name


def test_registered_method_hyperparameters_are_validated():
    model, tok = tiny_model("llama")
    base = snapshot(model)
    ed = Editor.from_model(model, tok)
    with pytest.raises(InvalidHyperparametersError, match="test-scale: hyperparameter 'factor': .*greater than 0"):
        ed.apply([REQUEST], method="test-scale", factor=-1.0)
    with pytest.raises(InvalidHyperparametersError, match="'layer'"):
        ed.apply([REQUEST], method="test-scale", layer=7)
    assert ed.ledger == []
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, base[name]), name


def test_checkpoint_records_the_fingerprint_of_the_unedited_weights(tmp_path):
    """The manifest's base fingerprint must describe the weights before any edit, whatever the method
    (this one never touches the statistics/template caches that happen to compute it under ROME)."""
    model, tok = tiny_model("llama")
    expected = weights_fingerprint(model)
    ed = Editor.from_model(model, tok)
    ed.apply([REQUEST], method="test-scale", factor=2.0, layer=1)
    assert weights_fingerprint(model) != expected
    out = ed.save(tmp_path / "ckpt")
    manifest = json.loads((out / "suture.json").read_text())
    assert [e["method"] for e in manifest["edits"]] == ["test-scale"]
    assert manifest["base_model"]["fingerprint_sha256"] == expected


def test_a_name_another_class_holds_is_refused_naming_both():
    from suture.editor import DuplicateRegistrationError

    class Impostor(ScaleMethod):
        name = "rome"

    with pytest.raises(DuplicateRegistrationError) as info:
        register_method(Impostor)
    message = str(info.value)
    assert "'rome'" in message and "suture.methods.rome.method.Rome" in message and "Impostor" in message
    assert type(get_method("rome")).__name__ == "Rome"
    register_method(type(get_method("rome")))  # the holder itself may register again (a re-import)


BROKEN_PLUGIN = """\
[suture.methods]
broken-plugin = suture_broken_plugin_that_does_not_exist.method
half-plugin = json
"""


def test_a_broken_entry_point_is_reported_and_the_others_still_load(tmp_path):
    """Each entry point loads on its own; one that fails to import (or registers nothing) is reported with its
    error through the registry's API, and every built-in method stays available."""
    install_fake_distribution(tmp_path, "suture-broken-plugin", BROKEN_PLUGIN)
    report = run_json(tmp_path, "import json; import suture.methods as m; "
                                "print(json.dumps({'available': m.available(), 'errors': m.load_errors()}))")
    builtin = {name for name in metadata.entry_points(group=ENTRY_POINT_GROUP).names
               if name not in ("broken-plugin", "half-plugin")}
    assert builtin >= {"rome", "memit", "head-scale", "head-steer", "head-mean-patch", "head-remap"}
    assert builtin <= set(report["available"])
    assert set(report["errors"]) == {"broken-plugin", "half-plugin"}
    assert "ModuleNotFoundError" in report["errors"]["broken-plugin"]
    assert "suture_broken_plugin_that_does_not_exist" in report["errors"]["broken-plugin"]
    assert "registered no method named 'half-plugin'" in report["errors"]["half-plugin"]


def test_asking_for_a_broken_method_says_why():
    from suture.editor import registry

    registry._LOAD_ERRORS["from-a-broken-plugin"] = "entry point from-a-broken-plugin = 'x' failed to load: boom"
    try:
        with pytest.raises(UnknownMethodError, match="failed to load: boom"):
            get_method("from-a-broken-plugin")
    finally:
        del registry._LOAD_ERRORS["from-a-broken-plugin"]


def register_dense_change(name: str, change) -> None:
    """Register a method `name` that adds `change(weight)` to one MLP output projection."""

    class DenseChange(EditMethod):
        hparams_model = ScaleHParams

        def compute(self, ctx: EditContext, requests: list[EditRequest], hparams: ScaleHParams) -> MethodOutput:
            path = ctx.handle.sites.mlp_out_path(hparams.layer)
            weight = ctx.handle.model.get_submodule(path).weight.detach()
            return MethodOutput([WeightDelta(module=path, dense=change(weight))])

    DenseChange.name = name
    register_method(DenseChange)


def _with_a_nan(weight: torch.Tensor) -> torch.Tensor:
    change = torch.zeros_like(weight)
    change[0, 0] = float("nan")  # what a diverged optimization or a 'NaN' factor gives
    return change


def _large_noise(weight: torch.Tensor) -> torch.Tensor:  # an edit that changes the model's other answers
    noise = torch.randn(weight.shape, generator=torch.Generator().manual_seed(0)).to(weight.device)
    noise = noise * 50 * weight.abs().max()
    return noise.to(weight.dtype)


register_dense_change("test-non-finite", _with_a_nan)
register_dense_change("test-scramble", _large_noise)


@pytest.mark.parametrize("value", ["NaN", "inf", "-Infinity", "1e400", float("nan")])
def test_non_finite_hyperparameters_are_refused_naming_the_field(value):
    model, tok = tiny_model("llama")
    editor = Editor.from_model(model, tok)
    with pytest.raises(InvalidHyperparametersError, match="hyperparameter 'factor'"):
        editor.apply([REQUEST], method="test-scale", factor=value, force=True)
    assert not editor.ledger


def test_a_non_finite_change_is_never_written():
    model, tok = tiny_model("llama")
    editor = Editor.from_model(model, tok)
    before = snapshot(model)
    with pytest.raises(Exception, match="NaN or infinite"):
        editor.apply([REQUEST], method="test-non-finite", force=True)
    assert not editor.ledger
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_an_error_while_checking_the_verdicts_rolls_the_edit_back(monkeypatch):
    """Anything that stops the post-edit check (out of memory, a tokenizer error) leaves the weights as
    the ledger says: an edit nobody checked must not stay in a model that later jobs reuse."""
    import suture.editor.verdicts as verdicts

    model, tok = tiny_model("llama")
    editor = Editor.from_model(model, tok)
    before = snapshot(model)

    def out_of_memory(*_args, **_kwargs):
        raise RuntimeError("CUDA out of memory (simulated)")

    monkeypatch.setattr(verdicts, "check_requests", out_of_memory)
    with pytest.raises(RuntimeError, match="out of memory"):
        editor.apply([REQUEST], method="test-scale", force=True)
    assert not editor.ledger
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_reset_also_undoes_a_change_outside_the_ledger():
    model, tok = tiny_model("llama")
    editor = Editor.from_model(model, tok)
    before = snapshot(model)
    editor.apply([REQUEST], method="test-scale", force=True)
    path = editor.handle.sites.mlp_out_path(1)
    editor.weights.apply([WeightDelta(module=path, dense=torch.ones_like(model.get_submodule(path).weight))])
    editor.reset()
    assert not editor.ledger
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_a_no_op_the_edit_breaks_fails_it():
    """A request left out because the model already says its target is checked again after the others'
    edit: broken, it is named (rolled back by default, 'partial' with keep_failed)."""
    from suture.editor.noop import greedy_answers
    from suture.editor.verdicts import EditRequestsFailedError

    model, tok = tiny_model("llama")
    editor = Editor.from_model(model, tok)
    said = greedy_answers(editor.handle, [REQUEST])[0].split()[0]
    already = EditRequest(prompt="The capital of {} is", subject="Italy", target_new=said)
    other = EditRequest(prompt="The mother tongue of {} is", subject="Danielle Darrieux", target_new="French")
    with pytest.raises(EditRequestsFailedError, match="before the edit"):
        editor.apply([already, other], method="test-scramble", keep_failed=False)
    assert not editor.ledger
    kept = editor.apply([already, other], method="test-scramble", keep_failed=True)
    assert kept.status == "partial" and kept.details["noop"][0]["request"] == 0
    assert kept.details["noop_broken"][0]["request"] == already.label


def test_a_union_field_is_named_once_without_pydantic_member_tags():
    from suture.editor.errors import InvalidHyperparametersError
    from suture.editor.registry import get_method

    editor = Editor.from_model(*tiny_model("llama"))
    with pytest.raises(InvalidHyperparametersError) as info:
        get_method("rome").resolve_hparams(editor.handle, {"layer": "x"})
    message = str(info.value)
    assert message.count("hyperparameter 'layer'") == 1 and "'auto'" in message
    assert "layer.int" not in message and "literal[" not in message
