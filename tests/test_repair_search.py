"""Minimal-repair search and automatic layer choice on tiny models: the search grows head sets in rank
order and reports a curve, its plan is exact head-steer edits that revert bit for bit, directions are
mean differences, and the traced layer choice is cached."""

from __future__ import annotations

import pytest
import torch
from tiny import tiny_model

from suture.editor import Editor
from suture.editor.errors import EditFailedError
from suture.editor.kv import CorpusSpec
from suture.methods.localize import attribute_heads
from suture.methods.localize.last_token import last_token_head_means, last_token_logprobs
from suture.methods.localize.layer_choice import choose_edit_layer
from suture.repair import (
    RemapPlan,
    RemapStrategy,
    RepairConfig,
    ScalePlan,
    ScaleStrategy,
    SteerPlan,
    SteerStrategy,
    TunePlan,
    TuneStrategy,
    apply_plan,
    parse_plan,
    search_repair,
)

FAILING = ["The capital of France is", "You can find the answer in the", "English, German, Spanish and",
           "Therefore the company announced a new"]
TWINS = ["The capital of Italy is", "Because the weather was nice, we walked to the", "Toko Yasuda plays the",
         "The mother tongue of Danielle Darrieux is"]
ANSWERS = ["Rome", "book", "Japanese", "product"]
CORPUS = CorpusSpec(n_samples=24, max_tokens=32)
LOCALITY = ["The mother tongue of", "Autonomous University of Madrid is in", "Berlin and London are"]


def editor_for(family: str = "llama") -> Editor:
    model, tok = tiny_model(family)
    return Editor.from_model(model, tok, ref=f"tiny-{family}")


def snapshot(editor: Editor) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in editor.model.state_dict().items()}


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_search_reports_a_curve_and_leaves_the_model_unchanged(family):
    editor = editor_for(family)
    before = snapshot(editor)
    config = RepairConfig(strategy=SteerStrategy(alphas=[1.0, 4.0]), max_heads=4, target_fixed=1.0, extra_sizes=10)
    search, attribution = search_repair(editor, FAILING, ANSWERS, TWINS, LOCALITY, config, progress=lambda _msg: None)
    positive = [r for r in attribution.ranking("signed") if r[2] > 0]
    assert [p.n_heads for p in search.curve] == list(range(1, min(4, len(positive)) + 1))
    assert len(search.curve) <= len(search.trials) <= 2 * len(search.curve)
    assert all(0 <= p.fixed <= 1 and 0 <= p.unchanged <= 1 and p.mean_kl >= -1e-9 for p in search.trials)
    assert search.chosen is None  # the target (101%) is unreachable
    after = editor.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before) and not editor.ledger


def test_search_stops_past_the_threshold_it_reaches():
    editor = editor_for()
    config = RepairConfig(strategy=SteerStrategy(alphas=[1.0]), max_heads=6, target_fixed=0.0, min_unchanged=0.0,
                          extra_sizes=1)
    search, _ = search_repair(editor, FAILING, ANSWERS, TWINS, LOCALITY, config, progress=lambda _msg: None)
    assert search.chosen is not None and len(search.chosen.heads) == 1
    assert [p.n_heads for p in search.curve] == [1, 2]


def test_greedy_scale_keeps_only_heads_that_fix_more_and_reverts():
    editor = editor_for()
    before = snapshot(editor)
    config = RepairConfig(strategy=ScaleStrategy(factors=[0.0, 3.0]), max_heads=3, target_fixed=1.0, extra_sizes=10,
                          min_unchanged=0.0)
    search, _ = search_repair(editor, FAILING, ANSWERS, TWINS, LOCALITY, config, progress=lambda _msg: None)
    fixed = [p.fixed for p in search.curve]
    assert fixed == sorted(fixed) and len(set(fixed)) == len(fixed)  # every kept head fixes more
    assert [p.n_heads for p in search.curve] == list(range(1, len(search.curve) + 1))
    if search.chosen is not None:
        assert len(search.chosen.heads) == len(search.curve) and not search.reached_target
        assert set(search.chosen.factors.values()) <= {0.0, 3.0}
    after = editor.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before) and not editor.ledger


def test_remap_search_lowers_preservation_within_budget_and_reverts():
    editor = editor_for()
    before = snapshot(editor)
    config = RepairConfig(strategy=RemapStrategy(preservations=[0.01, 100.0], corpus=CORPUS), max_heads=3,
                          target_fixed=1.0, extra_sizes=10, min_unchanged=0.0)
    search, _ = search_repair(editor, FAILING, ANSWERS, TWINS, LOCALITY, config, progress=lambda _msg: None)
    assert [p.n_heads for p in search.curve] == [1, 2, 3]
    assert all(p.preservation == 0.01 for p in search.curve)  # no budget: the least preserving weight is kept
    assert all(p.alpha is None and p.factor is None for p in search.trials)
    assert [(t.n_heads, t.preservation) for t in search.trials] == [(n, a) for n in (1, 2, 3) for a in (100.0, 0.01)]
    plan = search.chosen
    assert plan is not None and plan.kind == "remap" and plan.undesired == FAILING and plan.desired == TWINS
    after = editor.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before) and not editor.ledger


def test_remap_search_tries_each_gain_and_keeps_the_one_fixing_most():
    editor = editor_for()
    before = snapshot(editor)
    config = RepairConfig(strategy=RemapStrategy(preservations=[1.0], gains=[3.0, 1.0], corpus=CORPUS), max_heads=2,
                          target_fixed=1.0, extra_sizes=10, min_unchanged=0.0)
    search, _ = search_repair(editor, FAILING, ANSWERS, TWINS, LOCALITY, config, progress=lambda _msg: None)
    assert [(t.n_heads, t.gain) for t in search.trials] == [(n, g) for n in (1, 2) for g in (1.0, 3.0)]
    for point in search.curve:
        assert point.fixed == max(t.fixed for t in search.trials if t.n_heads == point.n_heads)
    assert search.chosen.gain == search.chosen_point.gain
    assert all(e["gain"] == search.chosen.gain for _m, e in search.chosen.edits())
    after = editor.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before) and not editor.ledger


def test_remap_search_reads_every_candidate_layers_statistics_in_one_pass(monkeypatch):
    import suture.editor.context as context

    passes = []
    real = context.second_moment

    def counted(handle, layers, corpus, site):
        passes.append((site, sorted(layers)))
        return real(handle, layers, corpus, site)

    monkeypatch.setattr(context, "second_moment", counted)
    editor = editor_for()
    config = RepairConfig(strategy=RemapStrategy(preservations=[1.0], corpus=CORPUS, candidates="helping"), max_heads=6,
                          target_fixed=1.0, extra_sizes=10, min_unchanged=0.0)
    search, attribution = search_repair(editor, FAILING, ANSWERS, TWINS, LOCALITY, config, progress=lambda _m: None)
    layers = sorted({layer for layer, _head, effect in attribution.ranking("signed")[:6] if effect > 0})
    helping = {(layer, head) for layer, head, effect in attribution.ranking("signed") if effect > 0}
    assert set(map(tuple, search.chosen.heads)) <= helping  # the default candidates: heads whose patch helps
    assert len(layers) > 1
    assert [p for p in passes if p[0] == "attn_out"] == [("attn_out", layers)]
    assert search.trials


def test_tune_search_fits_on_the_answers_keeps_the_twins_and_reverts():
    editor = editor_for()
    before = snapshot(editor)
    config = RepairConfig(strategy=TuneStrategy(preservations=[100.0, 0.01], steps=5, lr=0.05, keep=LOCALITY[:1],
                                                corpus=CORPUS), max_heads=2, target_fixed=1.0, extra_sizes=10,
                          min_unchanged=0.0)
    search, _ = search_repair(editor, FAILING, ANSWERS, TWINS, LOCALITY, config, progress=lambda _msg: None)
    assert [(t.n_heads, t.preservation) for t in search.trials] == [(n, a) for n in (1, 2) for a in (100.0, 0.01)]
    plan = search.chosen
    assert isinstance(plan, TunePlan) and plan.failing == FAILING and plan.answers == ANSWERS
    assert plan.keep == [*TWINS, LOCALITY[0]]  # the twins' next tokens are kept, then the extra prompts
    assert parse_plan(plan.model_dump_json()) == plan
    (method, hparams), = plan.edits()  # one edit: the heads of every layer are fit jointly
    assert method == "head-tune" and hparams["heads"] == [list(h) for h in plan.heads]
    after = editor.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before) and not editor.ledger


def test_remap_plan_is_one_head_remap_per_layer_in_depth_order():
    plan = RemapPlan(heads=[(2, 1), (1, 0), (1, 3)], preservation=3.0, undesired=FAILING, desired=TWINS,
                     corpus=CORPUS)
    assert parse_plan(plan.model_dump_json()) == plan
    assert [(m, e["layer"], e["heads"], e["preservation"]) for m, e in plan.edits()] == [
        ("head-remap", 1, [0, 3], 3.0), ("head-remap", 2, [1], 3.0)]
    editor = editor_for()
    before = snapshot(editor)
    assert apply_plan(editor, plan) == 2
    editor.revert(2)
    after = editor.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_plan_is_one_head_steer_edit_per_layer_and_reverts_exactly():
    editor = editor_for()
    before = snapshot(editor)
    directions = {f"{layer}.{head}": [0.1 * (layer + 1)] * 8 for layer, head in [(1, 0), (1, 3), (2, 2)]}
    plan = SteerPlan(heads=[(1, 0), (2, 2), (1, 3)], alpha=2.0, directions=directions)
    assert parse_plan(plan.model_dump_json()) == plan
    assert [(m, e["layer"], e["heads"]) for m, e in plan.edits()] == [("head-steer", 1, [0, 3]),
                                                                        ("head-steer", 2, [2])]
    scaled = ScalePlan(heads=[(1, 0), (2, 2), (1, 3)], factors={"1.0": 0.0, "2.2": 0.0, "1.3": 2.0})
    assert isinstance(parse_plan(scaled.model_dump_json()), ScalePlan)
    assert scaled.edits() == [("head-scale", {"layer": 1, "heads": [0], "factor": 0.0}),
                              ("head-scale", {"layer": 1, "heads": [3], "factor": 2.0}),
                              ("head-scale", {"layer": 2, "heads": [2], "factor": 0.0})]
    base = last_token_logprobs(editor.handle, FAILING)
    assert apply_plan(editor, plan) == 2 and len(editor.ledger) == 2
    assert not torch.allclose(last_token_logprobs(editor.handle, FAILING), base)
    editor.revert(2)
    after = editor.model.state_dict()
    assert set(after) == set(before) and all(torch.equal(before[k], after[k]) for k in before)


def test_head_means_are_per_query_head_under_gqa():
    editor = editor_for("llama")  # 4 query heads share 2 key/value heads
    means = last_token_head_means(editor.handle, TWINS, [0, 3])
    assert set(means) == {0, 3} and means[0].shape == (4, 8)
    one = last_token_head_means(editor.handle, TWINS[:1], [0])[0]
    two = last_token_head_means(editor.handle, TWINS[1:2], [0])[0]
    pair = last_token_head_means(editor.handle, TWINS[:2], [0])[0]
    assert torch.allclose(pair, (one + two) / 2, atol=1e-5)


def test_attribution_takes_token_ids_for_answers_no_string_encodes():
    editor = editor_for()
    newline = editor.tokenizer("\n", add_special_tokens=False).input_ids[0]
    result = attribute_heads(editor.handle, FAILING, TWINS, right=ANSWERS, wrong=[newline] * len(FAILING))
    assert result.wrong_tokens == [newline] * len(FAILING)


def test_layer_choice_is_traced_and_cached():
    editor = editor_for()
    facts = [("The capital of {} is", "France", "Paris"), ("The mother tongue of {} is", "Danielle Darrieux",
                                                           "French")]
    choice = choose_edit_layer(editor.handle, facts, samples=2, min_clean_prob=0.0)
    assert 0 <= choice.layer < editor.handle.n_layers and len(choice.effects) == editor.handle.n_layers
    assert choice.layer == max(range(len(choice.effects)), key=choice.effects.__getitem__)
    assert choose_edit_layer(editor.handle, facts, samples=2, min_clean_prob=0.0) == choice  # from the cache
    with pytest.raises(EditFailedError, match="knows none of the probe facts"):
        choose_edit_layer(editor.handle, facts, samples=2, min_clean_prob=1.1)


def test_rome_layer_auto_records_the_traced_layer(monkeypatch):
    import suture.methods.localize.layer_choice as layer_choice
    from suture.methods.localize.layer_choice import LayerChoice

    editor = editor_for()
    monkeypatch.setattr(layer_choice, "choose_edit_layer",
                        lambda handle: LayerChoice(layer=2, effects=[0.0, 0.1, 0.5, 0.2], facts_used=1))
    from suture.editor.registry import get_method

    resolved = get_method("rome").resolve_hparams(editor.handle, {"layer": "auto"})
    assert resolved.layer == 2


def test_each_strategy_has_its_own_typed_search_space():
    """One configuration, a strategy per kind: a field of another strategy is refused, naming it."""
    from pydantic import ValidationError

    assert RepairConfig().strategy.kind == "remap"
    assert RepairConfig(strategy={"kind": "scale", "factors": [0.0]}).strategy == ScaleStrategy(factors=[0.0])
    with pytest.raises(ValidationError, match="alphas"):
        RepairConfig(strategy={"kind": "remap", "alphas": [1.0]})
    with pytest.raises(ValidationError, match="greater than 0"):
        RemapStrategy(preservations=[1.0, 0.0])
    with pytest.raises(ValidationError, match="max_heads"):
        RepairConfig(max_heads=0)
    for kind in ("remap", "tune"):  # a set of no heads, or a negative size (a slice from the end), is refused
        with pytest.raises(ValidationError, match="sizes"):
            RepairConfig(strategy={"kind": kind, "sizes": [-2, 0]})


def test_search_refuses_a_family_whose_lists_do_not_pair():
    from pydantic import ValidationError

    from suture.editor import InvalidInputError

    with pytest.raises(InvalidInputError, match="failing, answers, twins"):
        search_repair(editor_for(), FAILING, ANSWERS[:2], TWINS, LOCALITY)
    with pytest.raises(InvalidInputError, match="locality"):
        search_repair(editor_for(), FAILING, ANSWERS, TWINS, [])
    with pytest.raises(InvalidInputError, match="answers: entry 1 is blank"):
        search_repair(editor_for(), FAILING, [ANSWERS[0], "  ", *ANSWERS[2:]], TWINS, LOCALITY)
    with pytest.raises(InvalidInputError, match="max_heads: 100000 is more than the model's"):
        search_repair(editor_for(), FAILING, ANSWERS, TWINS, LOCALITY, RepairConfig(max_heads=100000))
    with pytest.raises(ValidationError, match="target_fixed"):
        RepairConfig(target_fixed=1.5)
