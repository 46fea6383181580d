"""Localization tools on tiny models: causal tracing restores exactly what it claims to, head patching of a head
with itself changes nothing and finds a head made to dominate, and heatmaps are written."""

from __future__ import annotations

import pytest
import torch
from tiny import tiny_model

from suture.editor.handle import ModelHandle
from suture.methods.localize import (
    attribute_heads,
    restored_prob,
    save_head_heatmap,
    save_heatmap,
    save_trace_heatmap,
    trace,
)
from suture.methods.localize.last_token import last_token_logprobs

TEMPLATE, SUBJECT, TARGET = "The mother tongue of {} is", "Danielle Darrieux", "French"
BASE = ["The capital of France is", "You can find the answer in the", "English, German, Spanish and"]
SOURCE = ["The capital of Italy is", "Because the weather was nice, we walked to the", "Toko Yasuda plays the"]
TRACE_FAMILIES = ["llama", "gpt2", "gpt_neox"]
NOISE = 5.0  # ~80x the tiny models' embedding std: random tiny models barely react to the default 3 std


def handle_for(family: str) -> ModelHandle:
    model, tok = tiny_model(family)
    return ModelHandle(model=model, tokenizer=tok, ref=f"tiny-{family}")


@pytest.fixture(scope="module", params=TRACE_FAMILIES)
def traced(request):
    handle = handle_for(request.param)
    result = trace(handle, TEMPLATE, SUBJECT, TARGET, noise=NOISE, samples=3, kinds=("hidden", "mlp", "attn"))
    return handle, result


def test_trace_shapes_and_tokens(traced):
    handle, result = traced
    n_layers, n_tokens = handle.n_layers, len(result.tokens)
    assert n_tokens == len(handle.tokenizer(result.prompt)["input_ids"])
    assert "".join(result.tokens) == result.prompt
    assert "".join(result.tokens[result.subject_first:result.subject_last + 1]).strip() == SUBJECT
    for kind in ("hidden", "mlp", "attn"):
        assert result.matrix(kind).shape == (n_layers, n_tokens)
        assert result.effect(kind).shape == (n_layers, n_tokens)
    assert abs(result.corrupted_prob - result.clean_prob) > 1e-6
    assert 0 <= result.best_layer("mlp") < n_layers
    assert 0 <= result.best_layer("hidden") < n_layers


def test_trace_restorations_are_exact(traced):
    handle, result = traced
    hidden = result.matrix("hidden")
    # The last block's output at the last token is all the unembedding sees: restoring it restores the clean run.
    assert hidden[-1, -1].item() == pytest.approx(result.clean_prob, abs=1e-6)
    # Before the subject the corrupted run equals the clean one (causal attention): restoring there does nothing.
    assert result.subject_first > 0
    torch.testing.assert_close(hidden[:, : result.subject_first],
                               torch.full_like(hidden[:, : result.subject_first], result.corrupted_prob),
                               rtol=0, atol=1e-6)


@pytest.mark.parametrize("family", TRACE_FAMILIES)
def test_restoring_every_position_at_layer_0_gives_the_clean_run(family):
    handle = handle_for(family)
    result = trace(handle, TEMPLATE, SUBJECT, TARGET, noise=NOISE, samples=2, kinds=("hidden",), layers=[0])
    full = restored_prob(handle, TEMPLATE, SUBJECT, TARGET, layer=0, kind="hidden", noise=NOISE, samples=2)
    assert full == pytest.approx(result.clean_prob, abs=1e-5)
    gap = abs(result.corrupted_prob - result.clean_prob)
    assert gap > 2e-6 and abs(full - result.clean_prob) < gap / 100
    # Same noise draws as `trace`: restoring only the subject's last token matches the traced cell.
    one = restored_prob(handle, TEMPLATE, SUBJECT, TARGET, layer=0, positions=[result.subject_last], noise=NOISE,
                        samples=2)
    assert one == pytest.approx(result.matrix("hidden")[0, result.subject_last].item(), abs=1e-6)


def test_trace_is_seeded_and_layers_subset():
    handle = handle_for("llama")
    a = trace(handle, TEMPLATE, SUBJECT, TARGET, samples=2, layers=[1, 3], seed=7)
    b = trace(handle, TEMPLATE, SUBJECT, TARGET, samples=2, layers=[1, 3], seed=7, max_rows=3)  # chunked
    assert a.matrix("mlp").shape == (2, len(a.tokens))
    torch.testing.assert_close(a.matrix("mlp"), b.matrix("mlp"), rtol=0, atol=1e-9)
    assert a.best_layer("mlp") in (1, 3)
    with pytest.raises(ValueError, match="unknown kinds"):
        trace(handle, TEMPLATE, SUBJECT, TARGET, kinds=("resid",))


@pytest.mark.parametrize("family", ["llama", "gpt2", "gpt_neox", "gemma2"])
def test_patching_heads_with_themselves_changes_nothing(family):
    handle = handle_for(family)
    result = attribute_heads(handle, BASE, BASE, right="Paris", wrong="Rome")
    layout = handle.sites.head_layout(handle.model.config)
    assert result.matrix().shape == (handle.n_layers, layout.n_heads)
    assert result.source_metric == pytest.approx(result.base_metric, abs=1e-6)
    torch.testing.assert_close(result.matrix(), torch.zeros_like(result.matrix()), rtol=0, atol=1e-5)


def test_gqa_attribution_has_one_column_per_query_head():
    handle = handle_for("llama")
    layout = handle.sites.head_layout(handle.model.config)
    assert (layout.n_heads, layout.n_kv_heads) == (4, 2)
    result = attribute_heads(handle, BASE, SOURCE, right=["Paris", "book", "Japanese"], wrong="Rome", layers=[0, 2])
    assert result.matrix().shape == (2, 4)
    assert result.layers == [0, 2]
    assert len(result.ranking()) == 8
    assert result.matrix().abs().max() > 1e-4  # different prompts: patching does something


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_a_dominant_head_ranks_first(family):
    handle = handle_for(family)
    layer, head = 1, 2
    from suture.methods.heads.projection import HeadProjection

    proj = HeadProjection.of(handle, layer)
    with torch.no_grad():
        proj.weight_out_in()[:, proj.columns(head)] *= 40.0  # a view: writes through for Conv1D too
    result = attribute_heads(handle, BASE, SOURCE, right="Paris", wrong="Rome", max_rows=5)
    top_layer, top_head, top_effect = result.ranking()[0]
    assert (top_layer, top_head) == (layer, head)
    assert abs(top_effect) > 2 * abs(result.ranking()[1][2])
    signed = result.ranking(by="signed")
    assert [e for *_, e in signed] == sorted((e for *_, e in signed), reverse=True)


def test_heatmaps_are_written(tmp_path):
    pytest.importorskip("matplotlib")
    handle = handle_for("gpt2")
    result = trace(handle, TEMPLATE, SUBJECT, TARGET, samples=2)
    path = save_heatmap(result.effect("mlp"), result.layers, result.tokens, tmp_path / "a" / "mlp.png", "mlp effect")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 1000
    assert save_trace_heatmap(result, "hidden", tmp_path / "hidden.png").stat().st_size > 1000
    heads = attribute_heads(handle, BASE, SOURCE, right="Paris", wrong="Rome")
    assert save_head_heatmap(heads, tmp_path / "heads.png").stat().st_size > 1000
    with pytest.raises(ValueError, match="does not match"):
        save_heatmap([[1.0, 2.0]], ["r"], ["a"], tmp_path / "bad.png")


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_last_token_reads_of_left_padded_batches_equal_one_prompt_at_a_time(family):
    """GPT-2's absolute positions must count from each prompt's first real token, not from the padding."""
    handle = handle_for(family)
    prompts = ["a b c d e f g h i j k l", "x y"]
    batched = last_token_logprobs(handle, prompts)
    alone = torch.cat([last_token_logprobs(handle, [p]) for p in prompts])
    assert torch.allclose(batched, alone, atol=1e-4)
