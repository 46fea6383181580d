"""ROME end to end on tiny random-weight models of every family: locality, the rank-one algebra, effect,
exact revert, checkpoint round trip, and typed errors."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from tiny import FAMILIES, tiny_model
from transformers import AutoModelForCausalLM, AutoTokenizer

import suture.methods.rome.method as rome_method
from suture.editor import Editor, EditRequest, InvalidHyperparametersError, UnknownMethodError
from suture.editor.errors import NothingToRevertError
from suture.editor.fingerprint import weights_fingerprint
from suture.editor.kv import TemplateSpec, compute_keys
from suture.editor.kv.capture import capture_output
from suture.editor.kv.tokens import build_batch
from suture.editor.sites import linear_weight_as_out_in

LAYER = 1
# The hyperparameters of the brief: small statistics corpus, two short templates, eight value steps.
HP = {"layer": LAYER, "corpus": {"n_samples": 40, "max_tokens": 32}, "templates": {"groups": [[5, 2]]},
      "objective": {"steps": 8}}
# Random tiny models have MLP outputs of norm ~0.01, so ROME's default weight decay (‖δ‖/‖v₀‖²) dominates
# the value objective and pins δ to the clamp radius (4‖v₀‖): the edit barely moves the model and the target
# log-probability can even fall (gemma2: -0.14). Without the decay, with a smaller step and a wider clamp,
# the target log-probability rises in every family (by >= 0.04 nats for this request).
HP_EFFECTIVE = {**HP, "objective": {"steps": 8, "lr": 0.05, "weight_decay": 0.0, "clamp_norm_factor": 200.0}}
SPEC = TemplateSpec(groups=[(5, 2)])

REQUEST = EditRequest(prompt="The capital of {} is", subject="Italy", target_new="London", target_true="Rome")
SECOND = EditRequest(prompt="The mother tongue of {} is", subject="Danielle Darrieux", target_new="English",
                     target_true="French")
THIRD = EditRequest(prompt="{} plays the", subject="Toko Yasuda", target_new="guitar")


def snapshot(model) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


def assert_bit_identical(model, expected: dict[str, torch.Tensor]) -> None:
    current = model.state_dict()
    assert current.keys() == expected.keys()
    differing = [name for name, tensor in expected.items() if not torch.equal(current[name], tensor)]
    assert not differing, f"parameters differ: {differing}"


def changed(model, before: dict[str, torch.Tensor]) -> set[str]:
    current = model.state_dict()
    return {name for name, tensor in before.items() if not torch.equal(current[name], tensor)}


@torch.no_grad()
def target_logprob(model, tok, prompt: str, target: str) -> float:
    """log p(target | prompt), the target encoded as it follows a prompt (leading space)."""
    prompt_ids = tok(prompt)["input_ids"]
    target_ids = tok(" " + target, add_special_tokens=False)["input_ids"]
    logits = model(torch.tensor([prompt_ids + target_ids], device=model.device)).logits[0].float()
    logp = F.log_softmax(logits, dim=-1)
    return sum(float(logp[len(prompt_ids) - 1 + j, t]) for j, t in enumerate(target_ids))


@pytest.fixture(scope="module", params=FAMILIES)
def edited(request, tmp_path_factory):
    """One ROME edit per family, shared by the read-only tests below."""
    family = request.param
    with pytest.MonkeyPatch.context() as mp:  # same cache home as conftest's function-scoped fixture
        mp.setenv("SUTURE_HOME", str(tmp_path_factory.getbasetemp() / "suture-home"))
        model, tok = tiny_model(family)
        before = snapshot(model)
        logprob_before = target_logprob(model, tok, REQUEST.text, REQUEST.target_new)
        ed = Editor.from_model(model, tok)
        result = ed.apply([REQUEST], method="rome", **HP_EFFECTIVE)
    path = ed.handle.sites.mlp_out_path(LAYER)
    return SimpleNamespace(family=family, model=model, tok=tok, ed=ed, before=before, result=result,
                           path=path, key=f"{path}.weight", logprob_before=logprob_before)


# --------------------------------------------------------------------------- (a) locality


def test_only_the_edited_weight_changes(edited):
    assert changed(edited.model, edited.before) == {edited.key}
    assert edited.ed.weights.touched == [edited.key]


def test_result_and_ledger_describe_the_edit(edited):
    result, ed = edited.result, edited.ed
    assert result.method == "rome"
    assert [(d.module, d.param, d.rank) for d in result.deltas] == [(edited.path, "weight", 1)]
    assert result.deltas[0].norm > 0
    assert result.requests == [REQUEST]
    # Nested overrides replace single fields and keep the other defaults.
    assert result.hparams["layer"] == LAYER
    assert result.hparams["objective"]["steps"] == 8
    assert result.hparams["objective"]["kl_factor"] == 0.0625
    assert result.hparams["corpus"] == {"source": "model", "n_samples": 40, "max_tokens": 32, "seed": 0}
    assert result.hparams["templates"]["groups"] == [[5, 2]]
    assert len(ed.ledger) == 1 and ed.ledger[0].id == result.id
    assert result.details["value_steps"] == [8]


# --------------------------------------------------------------------------- (b) algebra


def _delta_and_key(edited):
    ed = edited.ed
    delta = ed.ledger[-1].deltas[0]
    templates = ed.context.templates(SPEC)
    key = compute_keys(ed.handle, [LAYER], [REQUEST], templates)[LAYER][0]
    transposed = ed.handle.sites.weights_transposed
    # In (out, in) orientation the update is residual ⊗ right; Conv1D stores its transpose.
    residual, right = (delta.right[0], delta.left[:, 0]) if transposed else (delta.left[:, 0], delta.right[0])
    return delta, key, residual, right, transposed, templates


def test_weight_change_is_the_rank_one_ledger_delta(edited):
    delta, _, residual, right, transposed, _ = _delta_and_key(edited)
    weight = edited.model.state_dict()[edited.key]
    change = weight - edited.before[edited.key]
    assert delta.rank == 1
    assert tuple(delta.materialize().shape) == tuple(weight.shape)
    torch.testing.assert_close(change, delta.materialize(), rtol=0, atol=1e-6)
    singular = torch.linalg.svdvals(change.double())
    assert singular[1] < 1e-5 * singular[0]
    out_in = linear_weight_as_out_in(change, transposed)
    assert torch.linalg.matrix_rank(out_in.double(), rtol=1e-5) == 1
    assert out_in.shape == (residual.numel(), right.numel())


def test_edited_output_moves_by_the_residual_at_the_averaged_key(edited):
    _, key, residual, right, transposed, _ = _delta_and_key(edited)
    change = edited.model.state_dict()[edited.key] - edited.before[edited.key]
    moved = linear_weight_as_out_in(change, transposed) @ key
    scale = float(residual.abs().max())
    assert scale > 0
    torch.testing.assert_close(moved, residual, rtol=1e-4, atol=1e-4 * scale)
    assert float(right @ key) == pytest.approx(1.0, abs=1e-4)
    if transposed:  # Conv1D computes x @ W: the key multiplies from the left
        torch.testing.assert_close(key @ change, residual, rtol=1e-4, atol=1e-4 * scale)


@torch.no_grad()
def test_forward_pass_sees_the_residual_on_average_over_templates(edited):
    """Through the real forward pass: the module's output at the subject's last token, averaged over the
    templates, moves by the residual (the change of each template's output is residual · (right · k_t))."""
    ed, tok = edited.ed, edited.tok
    _, _, residual, _, _, templates = _delta_and_key(edited)
    texts = [t.replace("{}", REQUEST.prompt) for t in templates]
    batch = build_batch(tok, texts, [REQUEST.subject] * len(texts))
    module = edited.model.get_submodule(edited.path)
    rows = torch.arange(len(texts))

    def output_at_subject() -> torch.Tensor:
        sink: list[torch.Tensor] = []
        handle = capture_output(module, sink)
        try:
            edited.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False)
        finally:
            handle.remove()
        return sink[0][rows, batch.subject_last].float()

    after = output_at_subject()
    with ed.weights.base_weights():
        before = output_at_subject()
    assert_bit_identical(edited.model, {**edited.before, edited.key: edited.model.state_dict()[edited.key]})
    scale = float(residual.abs().max())
    torch.testing.assert_close((after - before).mean(0), residual, rtol=1e-3, atol=1e-3 * scale)


# --------------------------------------------------------------------------- (c) effect


def test_target_logprob_rises(edited):
    after = target_logprob(edited.model, edited.tok, REQUEST.text, REQUEST.target_new)
    assert after > edited.logprob_before + 0.01, (edited.logprob_before, after)


# --------------------------------------------------------------------------- (e) checkpoint


def test_save_and_reload_round_trip(edited, tmp_path):
    ed = edited.ed
    out = ed.save(tmp_path / "ckpt")
    assert out == tmp_path / "ckpt"
    manifest = json.loads((out / "suture.json").read_text())
    assert manifest["base_model"]["model_type"] == edited.model.config.model_type
    fresh, _ = tiny_model(edited.family)
    assert manifest["base_model"]["fingerprint_sha256"] == weights_fingerprint(fresh)
    [edit] = manifest["edits"]
    assert edit["id"] == edited.result.id and edit["method"] == "rome"
    assert edit["requests"][0]["subject"] == REQUEST.subject
    assert edit["requests"][0]["target_new"] == REQUEST.target_new
    assert [(d["module"], d["param"], d["rank"]) for d in edit["deltas"]] == [(edited.path, "weight", 1)]
    assert edit["hparams"]["layer"] == LAYER
    assert not list(tmp_path.glob(".ckpt.partial-*"))

    loaded = AutoModelForCausalLM.from_pretrained(out).to(edited.model.device).eval()
    ids = edited.tok([REQUEST.text, "Toko Yasuda plays the guitar."], return_tensors="pt", padding=True)
    ids = ids.to(edited.model.device)
    with torch.no_grad():
        expected = edited.model(**ids).logits
        got = loaded(**ids).logits
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(loaded.state_dict()[edited.key], edited.model.state_dict()[edited.key],
                               rtol=0, atol=0)
    tok = AutoTokenizer.from_pretrained(out)
    assert tok(REQUEST.text)["input_ids"] == edited.tok(REQUEST.text)["input_ids"]


def test_save_refuses_a_non_empty_directory(edited, tmp_path):
    ed = edited.ed
    ed.save(tmp_path / "ckpt")
    with pytest.raises(FileExistsError, match="not empty"):
        ed.save(tmp_path / "ckpt")
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError):
        ed.save(other)
    assert [p.name for p in other.iterdir()] == ["notes.txt"]
    assert not list(tmp_path.glob(".*partial-*"))
    empty = tmp_path / "empty"
    empty.mkdir()
    assert (ed.save(empty) / "suture.json").is_file()


# --------------------------------------------------------------------------- (d) revert


@pytest.mark.parametrize("family", FAMILIES)
def test_revert_restores_every_bit(family):
    model, tok = tiny_model(family)
    base = snapshot(model)
    ed = Editor.from_model(model, tok)
    with pytest.raises(NothingToRevertError):
        ed.revert()
    result = ed.apply([REQUEST], method="rome", **HP)
    assert changed(model, base) == {f"{ed.handle.sites.mlp_out_path(LAYER)}.weight"}
    undone = ed.revert()
    assert [r.id for r in undone] == [result.id]
    assert ed.ledger == []
    assert_bit_identical(model, base)
    with pytest.raises(NothingToRevertError, match="ledger holds 0"):
        ed.revert()


@pytest.mark.parametrize("family", FAMILIES)
def test_revert_n_after_two_edits(family):
    model, tok = tiny_model(family)
    base = snapshot(model)
    ed = Editor.from_model(model, tok)
    first = ed.apply([REQUEST], method="rome", **HP)
    after_first = snapshot(model)
    ed.apply([SECOND], method="rome", **HP)
    after_second = snapshot(model)
    assert changed(model, after_first)  # the second edit did something

    for bad in (3, 0, -1):
        with pytest.raises(NothingToRevertError):
            ed.revert(bad)
    assert_bit_identical(model, after_second)
    assert len(ed.ledger) == 2

    ed.revert()
    assert [e.id for e in ed.ledger] == [first.id]
    assert_bit_identical(model, after_first)

    second = ed.apply([THIRD], method="rome", **HP)
    undone = ed.revert(2)
    assert [r.id for r in undone] == [second.id, first.id]  # most recent first
    assert ed.ledger == []
    assert_bit_identical(model, base)


# --------------------------------------------------------------------------- typed errors


@pytest.mark.parametrize(
    ("overrides", "needles"),
    [
        ({"layer": 99}, ["'layer'", "99", "0..3"]),
        ({"layer": -1}, ["'layer'", "-1"]),
        ({"objective": {"lr": -1}}, ["'objective.lr'", "greater than 0"]),
        ({"objective": {"steps": 0}}, ["'objective.steps'", "greater than or equal to 1"]),
        ({"corpus": {"n_samples": 0}}, ["'corpus.n_samples'"]),
        ({"ridge": "lots"}, ["'ridge'", "valid number"]),
    ],
    ids=["layer-too-high", "layer-negative", "negative-lr", "zero-steps", "no-samples", "ridge-not-number"],
)
def test_bad_hyperparameters_name_the_field(overrides, needles):
    model, tok = tiny_model("llama")
    base = snapshot(model)
    ed = Editor.from_model(model, tok)
    with pytest.raises(InvalidHyperparametersError) as info:
        ed.apply([REQUEST], method="rome", **{**HP, **overrides})
    message = str(info.value)
    assert message.startswith("rome: ")
    for needle in needles:
        assert needle in message
    assert ed.ledger == []
    assert_bit_identical(model, base)


@pytest.mark.parametrize(
    ("overrides", "field"),
    [({"layers": 2}, "layers"), ({"objective": {"step": 3}}, "objective.step")],
    ids=["misspelled-top-level", "misspelled-nested"],
)
def test_unknown_hyperparameter_is_rejected(overrides, field):
    """A misspelled hyperparameter must not be silently ignored (the edit would use the default)."""
    model, tok = tiny_model("llama")
    ed = Editor.from_model(model, tok)
    with pytest.raises(InvalidHyperparametersError) as info:
        ed.apply([REQUEST], method="rome", **{**HP, **overrides})
    assert f"'{field}'" in str(info.value)


def test_unknown_method_lists_available_methods():
    model, tok = tiny_model("llama")
    base = snapshot(model)
    ed = Editor.from_model(model, tok)
    with pytest.raises(UnknownMethodError) as info:
        ed.apply([REQUEST], method="romeo", **HP)
    assert "'romeo'" in str(info.value)
    assert "available methods:" in str(info.value) and "rome" in str(info.value)
    assert "rome" in info.value.available
    assert ed.ledger == []
    assert_bit_identical(model, base)


# --------------------------------------------------------------------------- failures leave no trace


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_failure_inside_compute_leaves_weights_unchanged(family, monkeypatch):
    model, tok = tiny_model(family)
    base = snapshot(model)
    ed = Editor.from_model(model, tok)
    committed = ed.apply([REQUEST], method="rome", **HP)
    after_committed = snapshot(model)

    real = rome_method.rank_one_factors
    calls = []

    def fail_on_second_request(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("boom in the second request")
        return real(*args, **kwargs)

    monkeypatch.setattr(rome_method, "rank_one_factors", fail_on_second_request)
    # ROME applies one request at a time: the first request's delta is in the weights when the second fails.
    with pytest.raises(RuntimeError, match="boom"):
        ed.apply([SECOND, THIRD], method="rome", **HP)
    assert len(calls) == 2
    assert [e.id for e in ed.ledger] == [committed.id]
    assert_bit_identical(model, after_committed)

    monkeypatch.setattr(rome_method, "rank_one_factors", real)
    ed.revert()
    assert_bit_identical(model, base)


def test_interrupt_from_progress_callback_leaves_weights_unchanged():
    model, tok = tiny_model("qwen2")
    base = snapshot(model)
    ed = Editor.from_model(model, tok)
    key = f"{ed.handle.sites.mlp_out_path(LAYER)}.weight"
    stages = []

    class Interrupted(Exception):
        pass

    def progress(stage: str, fraction: float) -> None:
        stages.append(stage)
        if not torch.equal(model.state_dict()[key], base[key]):  # the first request is already written
            raise Interrupted

    with pytest.raises(Interrupted):
        ed.apply([REQUEST, SECOND], method="rome", progress=progress, **HP)
    assert "value (request 1/2)" in stages  # the editor names the request each report is about
    assert ed.ledger == []
    assert ed.context.progress is None
    assert_bit_identical(model, base)
