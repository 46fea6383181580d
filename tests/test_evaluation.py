"""Evaluation metrics, loaders and the gate on tiny models."""

import json

import pytest
import torch
from tiny import tiny_model

from suture.editor import Editor, EditRequest, GateFailedError, InvalidRequestError
from suture.evaluation import (
    EvaluationOptions,
    GatePolicy,
    evaluate,
    load_cases,
    load_counterfact,
    load_requests_jsonl,
    load_zsre,
    score_pairs,
    target_logprobs,
)
from suture.evaluation.fluency import ngram_entropy

HP = {"layer": 1, "corpus": {"n_samples": 40, "max_tokens": 32}, "templates": {"groups": [[5, 2]]},
      "objective": {"steps": 6}}
REQUEST = EditRequest(prompt="The capital of {} is", subject="Italy", target_new="London", target_true="Rome",
                      paraphrases=["Italy has its capital in"], neighbors=["The capital of France is"])


@pytest.fixture
def edited():
    model, tok = tiny_model("llama")
    editor = Editor.from_model(model, tok)
    editor.apply([REQUEST], method="rome", **HP)
    return editor


def naive_logprob(model, tok, prompt, target):
    """One forward pass per target token, full logits: the reference the batched scorer must match."""
    prompt_ids = tok(prompt)["input_ids"]
    target_ids = tok(" " + target, add_special_tokens=False)["input_ids"]
    total = 0.0
    for i, token in enumerate(target_ids):
        ids = torch.tensor([prompt_ids + target_ids[:i]], device=model.device)
        with torch.no_grad():
            total += float(torch.log_softmax(model(ids).logits[0, -1].float(), -1)[token])
    return total


def test_batched_scores_equal_naive_scores():
    model, tok = tiny_model("gpt2")
    editor = Editor.from_model(model, tok)
    pairs = [("The capital of Italy is", "Rome"), ("Because the weather was", "nice and warm"), ("You", "can")]
    batched = target_logprobs(editor.handle, pairs, batch_size=2)
    naive = torch.tensor([naive_logprob(model, tok, p, t) for p, t in pairs])
    assert torch.allclose(batched, naive, atol=1e-4)
    scores = score_pairs(editor.handle, pairs)
    assert scores.n_tokens.tolist() == [len(tok(" " + t, add_special_tokens=False)["input_ids"]) for _, t in pairs]


def test_unedited_model_has_no_drift_and_no_norm_growth():
    model, tok = tiny_model("qwen2")
    editor = Editor.from_model(model, tok)
    report = evaluate(editor, cases=[REQUEST])
    assert report.drift.mean_kl == pytest.approx(0.0, abs=1e-6)
    assert report.drift.top1_agreement == 1.0
    assert report.pre == report.post
    assert report.norm_growth == []


def test_evaluate_defaults_to_ledger_requests_and_measures_pre_on_base_weights(edited):
    report = evaluate(edited, options=EvaluationOptions(fluency=True, fluency_prompts=1))
    assert report.n_cases == 1
    # The pre scores come from the base weights even though the model is edited right now.
    with edited.weights.base_weights():
        base = target_logprobs(edited.handle, [(REQUEST.text, REQUEST.target_new)])
    assert report.cases_pre[0].logp_new == pytest.approx(float(base[0]), abs=1e-5)
    assert report.cases_post[0].logp_new > report.cases_pre[0].logp_new
    assert report.drift.mean_kl > 0
    assert len(report.norm_growth) == 1 and report.norm_growth[0].module.endswith("down_proj.weight")
    assert report.fluency is not None and report.token_accuracy is not None


def test_requests_without_target_true_compare_against_the_base_answer(edited):
    request = REQUEST.model_copy(update={"target_true": None})
    report = evaluate(edited, cases=[request], options=EvaluationOptions(drift=False))
    assert report.n_cases == 1


def test_failing_gate_writes_nothing_and_names_thresholds(edited, tmp_path):
    policy = GatePolicy(min_efficacy=1.0, max_drift_kl=0.0, max_neighborhood_drop=0.0)
    with pytest.raises(GateFailedError) as caught:
        edited.save(tmp_path / "out", gate=policy)
    assert any(f.startswith("max_drift_kl:") and "over by" in f for f in caught.value.failures)
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.iterdir())  # no partial directory either


def test_passing_gate_saves_with_report_in_manifest(edited, tmp_path):
    policy = GatePolicy(min_efficacy=0.0, min_paraphrase=0.0, max_neighborhood_drop=1.0, max_drift_kl=100.0,
                        min_generated_efficacy=0.0)
    path = edited.save(tmp_path / "out", gate=policy)
    manifest = json.loads((path / "suture.json").read_text())
    assert manifest["gate"]["passed"] is True
    assert manifest["gate"]["report"]["n_cases"] == 1
    assert manifest["base_model"]["fingerprint_sha256"] == edited.handle.base_fingerprint
    assert manifest["edits"][0]["method"] == "rome"


def test_gate_policy_rejects_unknown_thresholds():
    with pytest.raises(ValueError, match="min_efficasy"):
        GatePolicy.model_validate({"min_efficasy": 0.9})


def test_drift_switched_off_fails_the_drift_threshold(edited):
    report = evaluate(edited, options=EvaluationOptions(drift=False))
    assert any("not measured" in f for f in GatePolicy(min_efficacy=0).check(report))


def test_ngram_entropy_is_low_for_repetition():
    assert ngram_entropy("the the the the the the the") < ngram_entropy("a quick brown fox jumps over the lazy dog")


def write(tmp_path, name, data):
    path = tmp_path / name
    path.write_text(json.dumps(data) if not name.endswith(".jsonl") else "\n".join(json.dumps(d) for d in data))
    return path


def test_loaders_read_every_schema(tmp_path):
    rome = {"case_id": 7, "requested_rewrite": {"prompt": "The capital of {} is", "subject": "Italy",
                                                "target_new": {"str": "London"}, "target_true": {"str": "Rome"}},
            "paraphrase_prompts": ["Italy's capital is"], "neighborhood_prompts": ["The capital of Spain is"]}
    mend = {"case_id": 3, "prompt": "The capital of Italy is", "subject": "Italy", "target_new": "London",
            "ground_truth": "Rome", "rephrase_prompt": "Italy's capital is", "locality_prompt": "Spain's capital is",
            "locality_ground_truth": "Madrid"}
    zsre = {"subject": "Italy", "src": "What is the capital of Italy?", "alt": "London", "answers": ["Rome"],
            "rephrase": "Which city is Italy's capital?", "loc": "nq question: who wrote hamlet",
            "loc_ans": "Shakespeare"}
    assert load_counterfact(write(tmp_path, "r.json", [rome]))[0].id == "7"
    mend_case = load_counterfact(write(tmp_path, "m.json", [mend]))[0]
    assert mend_case.prompt == "The capital of {} is" and mend_case.neighbor_answers == ["Madrid"]
    zsre_case = load_zsre(write(tmp_path, "z.json", [zsre]))[0]
    assert zsre_case.prompt == "What is the capital of {}?" and zsre_case.target_true == "Rome"
    assert load_cases(write(tmp_path, "z2.json", [zsre]))[0].target_new == "London"
    own = write(tmp_path, "own.jsonl", [REQUEST.model_dump()])
    assert load_requests_jsonl(own)[0] == REQUEST


@pytest.mark.parametrize(("loader", "record", "message"), [
    (load_counterfact, {"case_id": 1, "requested_rewrite": {"prompt": "no placeholder", "subject": "x",
                                                            "target_new": {"str": "a"}}}, "record 1"),
    (load_zsre, {"subject": "Italy", "src": "What is the capital of France?", "alt": "x", "answers": ["y"]},
     "field 'src': does not contain the subject"),
    (load_zsre, {"subject": "Italy", "alt": "x", "answers": ["y"]}, "field 'src' missing"),
])
def test_malformed_records_name_position_and_field(tmp_path, loader, record, message):
    good = {"subject": "Italy", "src": "What is the capital of Italy?", "alt": "London", "answers": ["Rome"]}
    records = [good, record] if loader is load_zsre else [
        {"case_id": 0, "requested_rewrite": {"prompt": "{} is", "subject": "a", "target_new": {"str": "b"}}}, record]
    with pytest.raises(InvalidRequestError, match=message):
        loader(write(tmp_path, "bad.json", records))


def test_crash_mid_write_leaves_no_complete_looking_directory(edited, tmp_path, monkeypatch):
    def crash(*_args, **_kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(edited.tokenizer, "save_pretrained", crash)  # weights already written when this fails
    with pytest.raises(OSError, match="disk full"):
        edited.save(tmp_path / "out")
    assert not list(tmp_path.iterdir())


def test_thresholds_with_nothing_to_judge_never_pass_silently(edited):
    """REQUEST has no paraphrases: a min_paraphrase the caller set fails as not measured; the default one
    decides nothing and says so."""
    request = REQUEST.model_copy(update={"paraphrases": [], "neighbors": []})
    report = evaluate(edited, cases=[request], options=EvaluationOptions(drift=False, generation=False))
    assert report.post.paraphrase is None
    policy = GatePolicy(min_efficacy=0.0, max_drift_kl=100.0, min_generated_efficacy=None)
    assert not any(f.startswith("min_paraphrase") for f in policy.check(report))
    assert any(n.startswith("min_paraphrase: not measured") for n in policy.not_measured(report))
    assert any(n.startswith("max_neighborhood_drop: not measured") for n in policy.not_measured(report))
    strict = GatePolicy(min_efficacy=0.0, max_drift_kl=100.0, min_generated_efficacy=None, min_paraphrase=0.5)
    assert any(f.startswith("min_paraphrase: not measured") for f in strict.check(report))


def test_neighbors_with_their_own_answers_are_scored_against_those_answers():
    """A neighbor with a `neighbor_answers` entry keeps its own answer, not the edited fact's target_true."""
    from suture.evaluation import score_cases
    from suture.evaluation.scoring import target_logprobs

    model, tok = tiny_model("llama")
    editor = Editor.from_model(model, tok)
    case = REQUEST.model_copy(update={"neighbors": ["The capital of France is", "The capital of Spain is"],
                                      "neighbor_answers": ["Paris", "Madrid"]})
    france, spain = "The capital of France is", "The capital of Spain is"

    def expected(answers):
        lp = target_logprobs(editor.handle, [(france, "London"), (france, answers[0]),
                                             (spain, "London"), (spain, answers[1])])
        return (float(lp[1] > lp[0]) + float(lp[3] > lp[2])) / 2

    assert score_cases(editor.handle, [case]).cases[0].neighborhood == pytest.approx(expected(["Paris", "Madrid"]))
    without = case.model_copy(update={"neighbor_answers": []})
    assert score_cases(editor.handle, [without]).cases[0].neighborhood == pytest.approx(expected(["Rome", "Rome"]))


def test_blank_texts_are_refused_naming_the_field_before_any_model_work():
    from pydantic import ValidationError

    from suture.editor import InvalidInputError

    with pytest.raises(ValidationError, match="reference_texts"):
        EvaluationOptions(reference_texts=["Some text.", " "])
    editor = Editor.from_model(*tiny_model("llama"))
    for prompts, field in ([""], "prompts\\[0\\]"), (["ok", "  "], "prompts\\[1\\]"), ("a prompt", "prompts"):
        with pytest.raises(InvalidInputError, match=field):
            editor.generate(prompts)
    with pytest.raises(InvalidInputError, match="max_new_tokens"):
        editor.generate(["ok"], max_new_tokens=0)
    assert editor.generate([]) == []
