"""Head repair on the real SmolLM2: a Q&A-format failure of facts the model completes in plain form,
localized by head patching and steered on a few heads; the repaired checkpoint (with the created
o_proj biases) reloads with stock transformers and reproduces the in-memory outputs; revert is exact.
Remapping heads (head-remap) fixes the same failures and saves the same way, and so does tuning five heads'
maps on the answers (head-tune). Also the traced ROME layer choice on a real model."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from suture.editor.kv import CorpusSpec
from suture.methods.localize import attribute_heads
from suture.methods.localize.last_token import last_token_head_means, last_token_logprobs
from suture.methods.localize.layer_choice import choose_edit_layer
from suture.repair import RemapPlan, SteerPlan, TunePlan, answer_tokens, apply_plan

pytestmark = pytest.mark.slow

QA = "Q: Complete the sentence. {prompt}\nA: {prompt}"
FACTS = [("The capital of France is", "Paris"), ("The capital of Japan is", "Tokyo"),
         ("The capital of Germany is", "Berlin"), ("The capital of Italy is", "Rome"),
         ("The capital of Spain is", "Madrid"), ("The capital of Russia is", "Moscow"),
         ("The Eiffel Tower is located in the city of", "Paris"),
         ("The Colosseum is located in the city of", "Rome")]


@pytest.fixture(scope="module")
def editor(real_editor):
    return real_editor


def test_steered_heads_save_and_reload_with_stock_transformers(editor, tmp_path):
    plain = [p for p, _ in FACTS]
    qa = [QA.format(prompt=p) for p in plain]
    right = answer_tokens(editor, plain, [a for _, a in FACTS])
    assert (last_token_logprobs(editor.handle, plain).argmax(-1) == right).all()  # known in plain form
    wrong = last_token_logprobs(editor.handle, qa).argmax(-1)
    attribution = attribute_heads(editor.handle, qa, plain, right=right.tolist(), wrong=wrong.tolist())
    top = [(layer, head) for layer, head, _ in attribution.ranking("signed")[:4]]
    layers = sorted({layer for layer, _ in top})
    desired = last_token_head_means(editor.handle, plain, layers)
    undesired = last_token_head_means(editor.handle, qa, layers)
    plan = SteerPlan(heads=top, alpha=2.0, directions={f"{lay}.{h}": (desired[lay][h] - undesired[lay][h]).tolist()
                                                      for lay, h in top})
    before = {k: v.clone() for k, v in editor.model.state_dict().items()}
    added = apply_plan(editor, plan)
    enc = editor.tokenizer(qa + plain, return_tensors="pt", padding=True, padding_side="left").to(editor.model.device)
    with torch.no_grad():
        repaired = editor.model(**enc).logits
    path = editor.save(tmp_path / "repaired")
    stock = AutoModelForCausalLM.from_pretrained(path).to(editor.model.device).eval()
    assert stock.config.attention_bias  # the created o_proj biases travel as the config's attention_bias
    with torch.no_grad():
        reloaded = stock(**enc).logits
    assert (reloaded - repaired).abs().max() < 1e-4
    assert torch.equal(reloaded[:, -1].argmax(-1), repaired[:, -1].argmax(-1))

    editor.revert(added)
    after = editor.model.state_dict()
    assert set(after) == set(before) and all(torch.equal(after[k], before[k]) for k in before)


def test_traced_layer_choice_on_smollm2(editor):
    choice = choose_edit_layer(editor.handle)
    assert choice.facts_used >= 4
    assert 0 <= choice.layer < 15  # facts are recalled in the first half of the network


# Facts SmolLM2 completes in plain form but not as the answer line of the Q&A format (from known_1000).
QA_FAILURES = [("The Coca-Cola Company formed in 1886 and is headquartered in", "Atlanta"),
               ("Selim I is affiliated with the religion of", "Islam"),
               ("Northwind Glacier belongs to the continent of", "Antarctica"),
               ("Farouk of Egypt follows the religion of", "Islam"),
               ("The native language of Xavier Saint-Macary is", "French"),
               ("Sukarno is affiliated with the religion of", "Islam"),
               ("David Cameron worked in the city of", "London"),
               ("The genre played by Riverworld is a mix of", "fantasy")]


def assert_reloads_then_reverts(editor, added: int, before: dict, prompts: list[str], tmp_path) -> None:
    """The saved repair reloads in stock transformers with the in-memory logits; reverting restores `before`."""
    enc = editor.tokenizer(prompts, return_tensors="pt", padding=True, padding_side="left").to(editor.model.device)
    with torch.no_grad():
        repaired = editor.model(**enc).logits
    stock = AutoModelForCausalLM.from_pretrained(editor.save(tmp_path / "repaired")).to(editor.model.device).eval()
    with torch.no_grad():
        reloaded = stock(**enc).logits
    assert (reloaded - repaired).abs().max() < 1e-4

    editor.revert(added)
    after = editor.model.state_dict()
    assert set(after) == set(before) and all(torch.equal(after[k], before[k]) for k in before)


def test_remapped_heads_fix_the_qa_failures_and_reload_with_stock_transformers(editor, tmp_path):
    plain = [p for p, _ in QA_FAILURES]
    qa = [QA.format(prompt=p) for p in plain]
    right = answer_tokens(editor, qa, [a for _, a in QA_FAILURES])
    assert (last_token_logprobs(editor.handle, plain).argmax(-1) == right).all()
    wrong = last_token_logprobs(editor.handle, qa).argmax(-1)  # the current, wrong answers
    before_fixed = int((wrong == right).sum())
    assert before_fixed == 0
    attribution = attribute_heads(editor.handle, qa, plain, right=right.tolist(), wrong=wrong.tolist())
    keep = [p for p, _ in FACTS]  # facts it answers in both forms: their next token must not change
    plan = RemapPlan(heads=[(layer, head) for layer, head, _ in attribution.ranking("abs")[:9]],
                     preservation=1.0, undesired=qa, desired=plain, keep=keep,
                     # ROME's 128-text corpus (sampled once for the other tests) rather than head-remap's
                     # default 1,000: a fresh CI machine would spend a quarter of an hour sampling those.
                     corpus=CorpusSpec(n_samples=128))
    before = {k: v.clone() for k, v in editor.model.state_dict().items()}
    kept_before = last_token_logprobs(editor.handle, keep).argmax(-1)
    added = apply_plan(editor, plan)
    assert int((last_token_logprobs(editor.handle, qa).argmax(-1) == right).sum()) >= 4
    assert torch.equal(last_token_logprobs(editor.handle, keep).argmax(-1), kept_before)
    assert_reloads_then_reverts(editor, added, before, qa + plain, tmp_path)


def test_tuned_heads_fix_the_qa_failures_keep_other_facts_and_reload(editor, tmp_path):
    plain = [p for p, _ in QA_FAILURES]
    qa = [QA.format(prompt=p) for p in plain]
    answers = [a for _, a in QA_FAILURES]
    right = answer_tokens(editor, qa, answers)
    wrong = last_token_logprobs(editor.handle, qa).argmax(-1)
    assert int((wrong == right).sum()) == 0
    attribution = attribute_heads(editor.handle, qa, plain, right=right.tolist(), wrong=wrong.tolist())
    helping = [(layer, head) for layer, head, effect in attribution.ranking("signed") if effect > 0][:5]
    keep = [p for p, _ in FACTS]  # facts it answers in both forms: their next token must not change
    plan = TunePlan(heads=helping, preservation=1.0, kl_weight=10.0, steps=40, lr=0.005, failing=qa, answers=answers,
                    keep=[*plain, *keep], corpus=CorpusSpec(n_samples=128))  # the corpus the other tests sampled
    before = {k: v.clone() for k, v in editor.model.state_dict().items()}
    kept_before = last_token_logprobs(editor.handle, keep + plain).argmax(-1)
    added = apply_plan(editor, plan)
    assert added == 1  # one edit: the five heads' maps are fit jointly
    assert int((last_token_logprobs(editor.handle, qa).argmax(-1) == right).sum()) >= 6
    assert torch.equal(last_token_logprobs(editor.handle, keep + plain).argmax(-1), kept_before)
    assert_reloads_then_reverts(editor, added, before, qa + plain, tmp_path)
