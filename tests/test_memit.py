"""MEMIT, null-space preservation and norm anchoring on tiny models."""

import pytest
import torch
from tiny import tiny_model

from suture.editor import EditFailedError, Editor, EditRequest
from suture.editor.errors import InvalidHyperparametersError
from suture.editor.kv import CorpusSpec
from suture.editor.sites import linear_weight_as_out_in
from suture.methods.shared.least_squares import null_space_projector

BASE = {"corpus": {"n_samples": 40, "max_tokens": 32}, "templates": {"groups": [[5, 2]]}}
OBJECTIVE = {"steps": 8, "lr": 0.05, "weight_decay": 0.0, "clamp_norm_factor": 200.0}
REQUESTS = [
    EditRequest(prompt="The capital of {} is", subject="Italy", target_new="London", target_true="Rome"),
    EditRequest(prompt="The mother tongue of {} is", subject="Danielle Darrieux", target_new="English"),
    EditRequest(prompt="{} plays the", subject="Toko Yasuda", target_new="guitar"),
]


def logprob(editor, request):
    from suture.evaluation import target_logprobs

    return float(target_logprobs(editor.handle, [(request.text, request.target_new)])[0])


def out_in(editor, layer):
    module = editor.model.get_submodule(editor.handle.sites.mlp_out_path(layer))
    return linear_weight_as_out_in(module.weight, editor.handle.sites.weights_transposed).detach().clone()


@pytest.mark.parametrize(("family", "layers"), [("llama", [1, 2]), ("gpt2", [1, 2]), ("gemma3_text", [2]),
                                               ("gemma", [1, 2]), ("gemma3", [2])])
def test_memit_edits_only_its_layers_with_rank_at_most_n_and_reverts(family, layers):
    model, tok = tiny_model(family)
    editor = Editor.from_model(model, tok)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = editor.apply(REQUESTS, method="memit", layers=layers, objective=OBJECTIVE, **BASE)
    touched = {f"{d.module}.{d.param}" for d in result.deltas}
    assert touched == {f"{editor.handle.sites.mlp_out_path(layer)}.weight" for layer in layers}
    assert all(d.rank <= len(REQUESTS) for d in result.deltas)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if k not in touched)
    # The layers deliver most of the target change of the residual stream at the subject (MEMIT's goal).
    assert result.details["residual_left"][0] < 0.6
    editor.revert()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_memit_single_request_raises_the_target():
    model, tok = tiny_model("llama")
    editor = Editor.from_model(model, tok)
    before = logprob(editor, REQUESTS[0])
    editor.apply(REQUESTS[:1], method="memit", layers=[1, 2], objective=OBJECTIVE, **BASE)
    assert logprob(editor, REQUESTS[0]) > before + 0.05


def test_memit_chunks_requests():
    model, tok = tiny_model("llama")
    editor = Editor.from_model(model, tok)
    stages = []
    editor.apply(REQUESTS, method="memit", layers=[2], chunk_size=1, objective=OBJECTIVE,
                 progress=lambda stage, fraction: stages.append((stage, fraction)), **BASE)
    assert [f for s, f in stages if s == "value"] == pytest.approx([1 / 3, 2 / 3, 1.0])


@pytest.mark.parametrize("method", ["memit", "rome"])
def test_null_space_update_leaves_preserved_keys_alone(method):
    model, tok = tiny_model("llama")
    editor = Editor.from_model(model, tok)
    layer = 2
    w0 = out_in(editor, layer)
    space = {"threshold": 0.05, "l2": 1.0}
    layer_hp = {"layers": [layer]} if method == "memit" else {"layer": layer}
    editor.apply(REQUESTS[:1], method=method, null_space=space, objective=OBJECTIVE, **layer_hp, **BASE)
    delta = out_in(editor, layer) - w0
    mom2 = editor.context.second_moment([layer], CorpusSpec(**BASE["corpus"]))[layer]
    preserved = torch.eye(mom2.shape[0], dtype=torch.float64, device=mom2.device) - null_space_projector(mom2, 0.05)
    # Δ applied to any key in the span of the preserved (large-eigenvalue) directions is zero.
    assert float((delta.double() @ preserved).norm()) < 1e-4 * float(delta.norm())
    assert float(delta.norm()) > 0


def test_null_space_carries_keys_of_earlier_edits():
    def second_edit_spill(carry: bool) -> float:
        model, tok = tiny_model("llama")
        editor = Editor.from_model(model, tok)
        space = {"threshold": 0.5, "l2": 1e-4}  # tiny keys: the ridge must be small next to KKᵀ
        editor.apply(REQUESTS[:1], method="memit", layers=[2], null_space=space, objective=OBJECTIVE, **BASE)
        first_keys = editor.ledger[0].artifacts["keys"][0][2]
        if not carry:
            editor.ledger[0].artifacts.clear()
        w1 = out_in(editor, 2)
        editor.apply(REQUESTS[1:2], method="memit", layers=[2], null_space=space, objective=OBJECTIVE, **BASE)
        return float(((out_in(editor, 2) - w1) @ first_keys.T.to(w1.device)).norm())

    assert second_edit_spill(carry=True) < 0.5 * second_edit_spill(carry=False)


def test_preserve_earlier_keeps_what_earlier_edits_wrote_at_their_keys():
    def second_edit_spill(preserve: float | None) -> tuple[float, float]:
        model, tok = tiny_model("llama")
        editor = Editor.from_model(model, tok)
        hp = {"layers": [2], "preserve_earlier": preserve, "objective": OBJECTIVE, **BASE}
        editor.apply(REQUESTS[:1], method="memit", **hp)
        first_keys = editor.ledger[0].artifacts["keys"][0][2]
        w1 = out_in(editor, 2)
        result = editor.apply(REQUESTS[1:2], method="memit", **hp)
        change = out_in(editor, 2) - w1
        spill = float((change @ first_keys.T.to(w1.device)).norm())
        editor.revert()
        assert torch.equal(out_in(editor, 2), w1)  # the second edit still reverts exactly
        return spill, result.details["residual_left"][0]

    spill_alone, _ = second_edit_spill(None)
    spill_kept, residual_kept = second_edit_spill(1e3)
    assert spill_kept < 0.2 * spill_alone
    assert residual_kept < 0.9  # the second edit is still written


def test_bad_preserve_earlier_is_refused():
    model, tok = tiny_model("llama")
    editor = Editor.from_model(model, tok)
    with pytest.raises(InvalidHyperparametersError, match="preserve_earlier"):
        editor.apply(REQUESTS[:1], method="memit", layers=[2], preserve_earlier=1.0, null_space={}, **BASE)
    for weight in (0.0, float("inf"), float("nan")):
        with pytest.raises(InvalidHyperparametersError, match="preserve_earlier"):
            editor.apply(REQUESTS[:1], method="memit", layers=[2], preserve_earlier=weight, **BASE)


@pytest.mark.parametrize("method", ["memit", "rome"])
def test_norm_anchor_rescales_or_refuses(method):
    model, tok = tiny_model("llama")
    editor = Editor.from_model(model, tok)
    layer_hp = {"layers": [2]} if method == "memit" else {"layer": 2}
    result = editor.apply(REQUESTS[:1], method=method, norm_anchor={"max_ratio": 1e6}, objective=OBJECTIVE,
                          **layer_hp, **BASE)
    records = result.details["norm_anchor"][0]
    record = records[0] if isinstance(records, list) else records
    assert record["anchor"] > 0 and "flagged" not in record
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(EditFailedError, match="norm anchor refused"):
        editor.apply(REQUESTS[1:2], method=method, norm_anchor={"max_ratio": 1e-6, "on_exceed": "refuse"},
                     objective=OBJECTIVE, **layer_hp, **BASE)
    assert all(torch.equal(weights[k], v) for k, v in model.state_dict().items())
    flagged = editor.apply(REQUESTS[1:2], method=method, norm_anchor={"max_ratio": 1e-6}, objective=OBJECTIVE,
                           **layer_hp, **BASE)
    records = flagged.details["norm_anchor"][0]
    record = records[0] if isinstance(records, list) else records
    assert "the anchor" in record["flagged"]


def test_bad_memit_layers_are_refused():
    from suture.editor import InvalidHyperparametersError

    model, tok = tiny_model("llama")
    editor = Editor.from_model(model, tok)
    with pytest.raises(InvalidHyperparametersError, match="'layers'"):
        editor.apply(REQUESTS[:1], method="memit", layers=[3, 1], **BASE)
    with pytest.raises(InvalidHyperparametersError, match="outside"):
        editor.apply(REQUESTS[:1], method="memit", layers=[9], **BASE)
    for normalized in ("gemma2", "gemma3_text", "gemma3"):  # post-feedforward norm: layer outputs do not add up
        gemma, tok = tiny_model(normalized)
        with pytest.raises(InvalidHyperparametersError, match="do not add up"):
            Editor.from_model(gemma, tok).apply(REQUESTS[:1], method="memit", layers=[1, 2], **BASE)


def test_values_anchor_is_the_trimmed_mean_of_the_probe_values():
    import json

    from suture.editor.kv import CorpusSpec
    from suture.editor.paths import cache_dir
    from suture.methods.shared.norm_anchor import ANCHOR_PROBES

    model, tok = tiny_model("llama")
    editor = Editor.from_model(model, tok)
    result = editor.apply(REQUESTS[:1], method="rome", norm_anchor={"trim": 0.25}, objective=OBJECTIVE, layer=2,
                          **BASE)
    anchor = result.details["norm_anchor"][0]["anchor"]
    files = sorted((cache_dir("anchors") / editor.handle.cache_key[:16]).glob("values-layer2-*.json"),
                   key=lambda p: p.stat().st_mtime)
    norms = json.loads(files[-1].read_text())["norms"]
    assert len(norms) == len(ANCHOR_PROBES)
    kept = sorted(norms)[: len(norms) - len(norms) // 4]
    assert anchor == pytest.approx(sum(kept) / len(kept))
    outputs = editor.apply(REQUESTS[1:2], method="rome", norm_anchor={"reference": "outputs"}, objective=OBJECTIVE,
                           layer=2, **BASE)
    corpus = CorpusSpec.model_validate(outputs.hparams["corpus"])
    assert outputs.details["norm_anchor"][0]["anchor"] == pytest.approx(editor.context.anchor_norm(2, corpus))


def test_null_space_by_energy_keeps_at_most_that_share_of_the_keys():
    torch.manual_seed(0)
    keys = torch.randn(500, 16, dtype=torch.float64) * torch.logspace(0, -3, 16, dtype=torch.float64)
    mom2 = keys.T @ keys / keys.shape[0]
    projector = null_space_projector(mom2, threshold=0.5, energy=1e-3)
    share = (keys @ projector).pow(2).sum() / keys.pow(2).sum()
    assert 0 < share <= 1e-3
    assert torch.allclose(projector @ projector, projector, atol=1e-10)  # a projector
    assert int(torch.linalg.matrix_rank(projector)) < int(torch.linalg.matrix_rank(null_space_projector(mom2, 0.5)))


def test_a_second_round_writes_more_of_the_target_and_reverts_exactly():
    """rounds=2 repeats the pass over the layers on what the first left: less residual, one delta per layer
    and round, and the edit still undoes bit for bit."""
    model, tok = tiny_model("llama")
    editor = Editor.from_model(model, tok)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    hparams = {"layers": [1, 2], "objective": OBJECTIVE, "mom2_weight_per_dim": 4.0, **BASE}
    one = editor.apply(REQUESTS, method="memit", keep_failed=True, **hparams)
    editor.revert()
    two = editor.apply(REQUESTS, method="memit", keep_failed=True, rounds=2, **hparams)
    assert len(two.deltas) == 2 * len(one.deltas)
    assert two.details["residual_left"][0] < 0.9 * one.details["residual_left"][0]
    editor.revert()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("written_after", [1, 2, None])
def test_rounds_until_written_stop_once_every_target_is_written(monkeypatch, written_after):
    """With rounds_until_written, a further round runs only while some target is not yet the greedy answer
    (checked before each round after the first): written after one round, one round; after two, two; never,
    all of them. Each round writes one delta per layer. (Whether a target is the greedy answer is
    `target_token_checks`, the verdicts' own test; the tiny model cannot be made to say its targets.)"""
    from suture.methods.memit import method as memit_method

    checks = []

    def written(handle, requests):
        checks.append(len(requests))
        return written_after is not None and len(checks) >= written_after

    monkeypatch.setattr(memit_method, "_all_written", written)
    model, tok = tiny_model("llama")
    editor = Editor.from_model(model, tok)
    hparams = {"layers": [1, 2], "objective": OBJECTIVE, **BASE}
    result = editor.apply(REQUESTS, method="memit", keep_failed=True, rounds=4, rounds_until_written=True,
                          **hparams)
    taken = {1: 1, 2: 2, None: 4}[written_after]
    assert result.details["rounds"][0] == taken
    assert len(result.deltas) == 2 * taken
    assert checks == [len(REQUESTS)] * min(taken, 3)
    editor.revert()
    checks.clear()
    plain = editor.apply(REQUESTS, method="memit", keep_failed=True, rounds=3, **hparams)
    assert checks == [] and len(plain.deltas) == 6  # without the option every round runs, unchecked
    with pytest.raises(InvalidHyperparametersError, match="'rounds_until_written'.*rounds is 1"):
        editor.apply(REQUESTS, method="memit", rounds_until_written=True, **hparams)  # would be a silent no-op
