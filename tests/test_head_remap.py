"""head-remap on tiny models: it is the least-squares map of the docstring applied to the chosen heads' outputs
(the edited model equals the base model with the map hooked in), touches only those heads' W_O columns, moves
the bad context towards its twin, changes less as preservation grows, and reverts bit for bit."""

from __future__ import annotations

import pytest
import torch
from test_heads import (
    DESIRED,
    LAYER,
    PROBES,
    UNDESIRED,
    assert_bit_identical,
    assert_same_as_hook,
    captured_heads,
    changed,
    hooked_logits,
    layout,
    logits,
    snapshot,
    touched_heads,
)
from tiny import tiny_model

from suture.editor import Editor, InvalidHyperparametersError
from suture.editor.kv import CorpusSpec, second_moment
from suture.methods.heads import remap_matrix

CORPUS = {"n_samples": 24, "max_tokens": 32}
PAIRS = {"undesired": UNDESIRED, "desired": DESIRED[:2]}


def expected_maps(family: str, heads: list[int], preservation: float) -> dict[int, torch.Tensor]:
    """M_h recomputed from independently captured last-token outputs and the attention-output statistics."""
    model, tok = tiny_model(family)
    ed = Editor.from_model(model, tok)
    u = torch.stack([x[-1] for x in captured_heads(family, LAYER, PAIRS["undesired"])])
    d = torch.stack([x[-1] for x in captured_heads(family, LAYER, PAIRS["desired"])])
    mom2 = second_moment(ed.handle, [LAYER], CorpusSpec(**CORPUS), site="attn_out")[LAYER].double()
    dim = layout(ed).head_dim
    return {h: remap_matrix(u[:, h], d[:, h], mom2[h * dim:(h + 1) * dim, h * dim:(h + 1) * dim], preservation,
                            keep_desired=True) for h in heads}


@pytest.mark.parametrize("family", ["llama", "gpt2", "gemma3_text"])
def test_head_remap_is_the_least_squares_map_of_the_head_outputs(family):
    model, tok = tiny_model(family)
    base, base_logits = snapshot(model), logits(model, tok)
    ed = Editor.from_model(model, tok)
    heads = [0, 3] if family != "gpt2" else [2]
    result = ed.apply(method="head-remap", layer=LAYER, heads=heads, preservation=0.1, corpus=CORPUS, **PAIRS)
    path = ed.handle.sites.attn_out_path(LAYER)
    assert changed(model, base) == {f"{path}.weight"}
    assert all(0 <= result.details["gap_left"][0][h] < 1 for h in heads)  # the twins' outputs are closer

    maps = expected_maps(family, heads, 0.1)

    def remap(z):
        for h, matrix in maps.items():
            z[..., h, :] = z[..., h, :] + z[..., h, :] @ matrix.T.to(z.dtype)
        return z

    assert_same_as_hook(logits(model, tok), hooked_logits(family, LAYER, remap), base_logits)
    assert touched_heads(ed, base) == set(heads)
    ed.revert()
    assert_bit_identical(model, base)


def test_more_preservation_changes_less():
    model, tok = tiny_model("llama")
    ed = Editor.from_model(model, tok)
    norms = []
    for preservation in (0.01, 1.0, 100.0):
        result = ed.apply(method="head-remap", layer=LAYER, heads=[1], preservation=preservation, corpus=CORPUS,
                          **PAIRS)
        norms.append(result.details["delta_norm"][0])
        ed.revert()
    assert norms[0] > norms[1] > norms[2]
    assert norms[2] < 0.05 * norms[0]


def test_gain_sends_the_bad_context_past_its_twin():
    """The map's target is U + g (D - U): the change of W_O is g times the change at g = 1, and the gap left is
    measured against that target."""
    model, tok = tiny_model("llama")
    ed = Editor.from_model(model, tok)
    path = ed.handle.sites.attn_out_path(LAYER)
    deltas, gaps = {}, {}
    for gain in (1.0, 2.5):
        before = snapshot(model)[f"{path}.weight"]
        result = ed.apply(method="head-remap", layer=LAYER, heads=[1], preservation=0.1, gain=gain, corpus=CORPUS,
                          **PAIRS)
        deltas[gain] = snapshot(model)[f"{path}.weight"] - before
        gaps[gain] = result.details["gap_left"][0][1]
        assert result.details["gain"][0] == gain
        ed.revert()
    torch.testing.assert_close(deltas[2.5], 2.5 * deltas[1.0], rtol=1e-4, atol=1e-7)
    assert gaps[2.5] == pytest.approx(gaps[1.0], rel=1e-6)


@pytest.mark.parametrize(
    ("overrides", "needles"),
    [
        ({"undesired": UNDESIRED, "desired": DESIRED}, ["'desired' has 3", "'undesired' 2", "twin"]),
        ({"undesired": UNDESIRED}, ["'desired'"]),
        ({**PAIRS, "preservation": 0.0}, ["'preservation'"]),
        ({**PAIRS, "gain": -1.0}, ["'gain'"]),
        ({**PAIRS, "heads": [9]}, ["'heads'", "0..3"]),
    ],
)
def test_bad_remap_hyperparameters_name_the_field(overrides, needles):
    model, tok = tiny_model("llama")
    base = snapshot(model)
    ed = Editor.from_model(model, tok)
    with pytest.raises(InvalidHyperparametersError) as info:
        ed.apply(method="head-remap", **{"layer": LAYER, "heads": [1], "corpus": CORPUS, **overrides})
    for needle in needles:
        assert needle in str(info.value), str(info.value)
    assert_bit_identical(model, base)


def test_probe_prompts_are_distinct_from_the_pairs():
    assert not set(PROBES) & (set(UNDESIRED) | set(DESIRED))
