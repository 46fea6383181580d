"""Generated answers and verdicts: the judge, target spelling, natural stops, per-request verdicts with
rollback, and the generation-based evaluation, on tiny random-weight models (no download)."""

from __future__ import annotations

import pytest
import torch
from tiny import tiny_model

from suture.editor import Editor, EditRequest, EditRequestsFailedError, InvalidRequestError
from suture.editor.generation import cut_at_stop, generate_greedy
from suture.editor.judge import find_mention, judge, normalize, stutters
from suture.editor.kv.spelling import is_spaceless_char, target_separator
from suture.editor.kv.tokens import answer_token_ids, encode_target, request_target_ids
from suture.editor.verdicts import check_requests
from suture.evaluation.generated import GenerationOptions, evaluate_generated, repetition
from suture.evaluation.scoring import score_pairs

HP = {"layer": 1, "corpus": {"n_samples": 40, "max_tokens": 32}, "templates": {"groups": [[5, 2]]},
      "objective": {"steps": 4}}
REQUEST = EditRequest(prompt="The capital of {} is", subject="Italy", target_new="London", target_true="Rome",
                      paraphrases=["Italy's capital city is"], neighbors=["The capital of France is"])


# --- the judge -------------------------------------------------------------------------------------------

def test_judge_new_before_old():
    assert judge(" midfielder, not a quarterback.", "midfielder", "quarterback") == "new"
    assert judge(" a quarterback, later a midfielder", "midfielder", "quarterback") == "old"
    assert judge(" a striker.", "midfielder", "quarterback") == "neither"
    assert judge(" Paris", "Paris") == "new"  # no old target given


def test_judge_normalizes_case_accents_punctuation_and_spaces():
    assert judge("He moved to SÃO PAULO.", "Sao Paulo") == "new"
    assert judge("the city of new   york, they said", "New York") == "new"
    assert normalize("  Hello,   World! ") == "hello world"


def test_judge_word_boundaries_and_multi_word_targets():
    assert find_mention("Romeo and Juliet", "Rome") is None
    assert find_mention("a French-speaking family", "French") is not None
    assert judge("New Jersey is nice", "New York", "New Jersey") == "old"
    assert judge("in New York City", "New York", "York") == "new"  # the longer target is the one named
    assert find_mention("anything", "   ") is None


def test_judge_scripts_without_spaces():
    assert judge("西游记的作者是小明。", "小明", "吴承恩") == "new"
    assert judge("作者是吴承恩，不是小明", "小明", "吴承恩") == "old"
    assert judge("東京は日本の首都です", "東京") == "new"
    assert is_spaceless_char("漢") and is_spaceless_char("か") and not is_spaceless_char("a")


def test_a_katakana_target_must_be_a_whole_katakana_run():
    assert judge("ローマバナイ", "ローマ") == "neither"  # a longer (garbled) loanword, not the target
    assert judge("首都はロンドンです", "ロンドン") == "new"  # followed by hiragana
    assert judge("ローマ・カトリック", "ローマ") == "new"  # the middle dot separates words
    assert judge("ｶﾀｶﾅｶﾅ", "ｶﾀｶﾅ") == "neither"  # half-width forms likewise
    assert judge("東京タワー", "東京") == "new"  # kanji keep no word boundary


@pytest.mark.parametrize(("text", "target", "verdict"), [
    (" 🍕🍕", "🍕", "new"), (" €.", "€", "new"), (" It costs $50", "$5", "neither"), (" $5 each", "$5", "new"),
    (" C.", "C++", "neither"), (" C.", "C#", "neither"), (" C++ and", "C++", "new"), (" in C#.", "C#", "new"),
    (" AT&T Inc", "AT&T", "new"), (" 100 percent", "100%", "neither"),
])
def test_symbols_are_words_that_match_literally(text, target, verdict):
    assert judge(text, target) == verdict
    assert stutters(" 🍕🍕🍕", "🍕") and not stutters(" 🍕 pizza", "🍕")


# --- spelling the target ---------------------------------------------------------------------------------

def test_target_separator_rules():
    tok = tiny_model("llama")[1]
    assert target_separator("The capital of Italy is", "London", tok) == " "
    assert target_separator("Q: capital of Italy?\nA: ", "London", tok) == ""  # prompt ends in whitespace
    assert target_separator("西游记的作者是", "小明", tok) == ""  # spaceless script
    assert target_separator("The author is", "小明", tok) == ""  # a target in a spaceless script
    assert target_separator("<|endoftext|>", "London", tok) == ""  # a special token opens the turn
    assert target_separator("The capital is ", "London", tok, override=True) == " "  # the request decides
    assert target_separator("The capital is", "London", tok, override=False) == ""


def test_target_after_a_trailing_space_trains_no_double_space():
    tok = tiny_model("llama")[1]
    request = EditRequest(prompt="The capital of {} is ", subject="Italy", target_new="London")
    ids = request_target_ids(tok, request)
    assert not tok.decode(ids).startswith(" ")
    plain = EditRequest(prompt="The capital of {} is", subject="Italy", target_new="London")
    assert tok.decode(request_target_ids(tok, plain)) == " London"
    assert encode_target(tok, "London") == encode_target(tok, "London", " ")  # the CounterFact default


def test_answers_are_spelled_the_way_each_prompt_continues():
    """Every reader of an answer's first token (head repair, head attribution, tracing, scoring) spells it by
    the same rule as the edits: no space after a prompt ending in whitespace, none in spaceless scripts."""
    tok = tiny_model("llama")[1]
    ids = answer_token_ids(tok, ["The capital is", "Q: capital?\nA: ", "西游记的作者是"], ["London", "London", "小明"])
    assert ids[0] == encode_target(tok, "London", " ")[0]
    assert ids[1] == encode_target(tok, "London", "")[0] != ids[0]
    assert ids[2] == encode_target(tok, "小明", "")[0]
    with pytest.raises(InvalidRequestError, match="blank"):
        answer_token_ids(tok, ["The capital is"], [" \t"])
    with pytest.raises(InvalidRequestError, match="one answer per prompt"):
        answer_token_ids(tok, ["The capital is", "The city is"], ["London"])


def test_teacher_forced_scores_read_the_target_spelled_after_its_prompt():
    model, tok = tiny_model("llama")
    handle = Editor.from_model(model, tok).handle
    spaced, bare = score_pairs(handle, [("The capital is", "London"), ("The capital is ", "London")]).target
    assert spaced == encode_target(tok, "London", " ")
    assert bare == encode_target(tok, "London", "")


# --- natural stops ---------------------------------------------------------------------------------------

def test_cut_at_stop():
    assert cut_at_stop(" Paris. It is big", "sentence") == " Paris."
    assert cut_at_stop(" 3.5 million people\nNext", "sentence") == " 3.5 million people"
    assert cut_at_stop(" 东京。然后", "sentence") == " 东京。"
    assert cut_at_stop(" Paris. It\nx", "line") == " Paris. It"
    assert cut_at_stop(" Paris. It\nx", "budget") == " Paris. It\nx"


def test_generate_greedy_batched_equals_one_by_one():
    model, tok = tiny_model("llama")
    editor = Editor.from_model(model, tok)
    prompts = ["The capital of Italy is", "Because the weather was nice, we walked to the"]
    batched = generate_greedy(editor.handle, prompts, max_new_tokens=6, stop="budget")
    alone = [generate_greedy(editor.handle, [p], max_new_tokens=6, stop="budget")[0] for p in prompts]
    assert [g.text for g in batched] == [g.text for g in alone]
    assert all(g.tokens <= 6 for g in batched)


# --- verdicts --------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "target", "expected"), [
    (" midfielder midfielder midfielder midfield", "midfielder", True),
    (" of Midfielder  midfielder.", "midfielder", True),
    (" Aleppo, Aleppo, Aleppo, Aleppo", "Aleppo", True),
    (" New York New York, the city", "New York", True),
    ("作者是小明小明", "小明", True),
    (" London, London, UK, in 1891.", "London", False),
    (" midfielder, who played for Manchester United as a midfielder", "midfielder", False),
    (" midfielders midfielder", "midfielder", False),
    (" New York, New Jersey and Boston", "New York", False),
    (" Apple and Apple's Macintosh", "Apple", False),
    (" Paris", "Paris", False),
    (" Rome", "Paris", False),
])
def test_stutters_is_the_target_again_right_after_itself(text, target, expected):
    assert stutters(text, target) is expected


def test_a_stuttering_answer_fails_its_verdict(monkeypatch):
    """" London London London" names the target, and no user would call it a working edit."""
    import suture.editor.verdicts as verdicts

    class Said:
        text = " London London London London"

    monkeypatch.setattr(verdicts, "generate_greedy", lambda handle, texts, **_: [Said() for _ in texts])
    model, tok = tiny_model("llama")
    (verdict,) = check_requests(Editor.from_model(model, tok).handle, [REQUEST])
    assert verdict.judged == "new" and not verdict.passed and "repeats 'London' without stopping" in verdict.reason


def test_verdict_numbers_are_per_token():
    model, tok = tiny_model("llama")
    editor = Editor.from_model(model, tok)
    (verdict,) = check_requests(editor.handle, [REQUEST])
    assert len(verdict.token_probs) == len(verdict.target_tokens) == len(verdict.token_greedy)
    assert verdict.min_token_prob == min(verdict.token_probs)
    assert verdict.passed == (all(verdict.token_greedy) and verdict.judged == "new"
                              and not stutters(verdict.generated, REQUEST.target_new))
    if not verdict.passed:
        assert verdict.reason


def test_failed_request_rolls_back_and_is_named():
    model, tok = tiny_model("llama")
    editor = Editor.from_model(model, tok)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(EditRequestsFailedError) as info:  # a random tiny model cannot learn the edit
        editor.apply([REQUEST], method="rome", keep_failed=False, **HP)
    assert REQUEST.label in str(info.value) and "rolled back" in str(info.value)
    assert info.value.verdicts[0].request == REQUEST.label and not info.value.verdicts[0].passed
    assert editor.ledger == []
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())


def test_a_methods_hint_is_added_to_a_failed_verdicts_reason(monkeypatch):
    import suture.methods.rome.method as rome

    monkeypatch.setattr(rome, "REACH_HINT", 2.0)  # always explain, whatever the tiny model's reach
    model, tok = tiny_model("llama")
    editor = Editor.from_model(model, tok)
    with pytest.raises(EditRequestsFailedError) as info:
        editor.apply([REQUEST], method="rome", keep_failed=False, **HP)
    assert "update reads only" in info.value.verdicts[0].reason and "update reads only" in str(info.value)
    assert "try another layer" in str(info.value)  # the subject does not open this prompt

    result = editor.apply([REQUEST.model_copy(update={"prompt": "{} has the capital"})], method="rome",
                          keep_failed=True, **HP)
    assert "opens the prompt" in result.verdicts[0].reason
    assert isinstance(result.details["bare_key_reach"][0], float)


def test_keep_failed_marks_the_result_partial():
    model, tok = tiny_model("llama")
    editor = Editor.from_model(model, tok)
    result = editor.apply([REQUEST], method="rome", keep_failed=True, **HP)
    assert result.status == "partial" and result.failed and not result.verdicts[0].passed
    assert editor.ledger_json()["edits"][0]["verdicts"][0]["passed"] is False
    unchecked = editor.apply([REQUEST], method="rome", verify=False, **HP)
    assert unchecked.status == "unverified" and unchecked.verdicts == []


# --- generated evaluation --------------------------------------------------------------------------------

def test_evaluate_generated_on_the_unedited_model():
    model, tok = tiny_model("llama")
    editor = Editor.from_model(model, tok)
    case = REQUEST.model_copy(update={"generation_prompts": ["Italy is known for"],
                                      "portability_prompts": ["The language of Italy's capital is"],
                                      "portability_answers": ["English"]})
    cache: dict = {}
    scores = evaluate_generated(editor, [case], GenerationOptions(answer_tokens=4, neighbor_tokens=4,
                                                                  fluency_tokens=8), base_cache=cache)
    assert scores.kind == "generated"
    assert scores.locality == 1.0  # no edit: every neighbor keeps the base model's answer
    assert scores.chat is None  # the tiny tokenizer has no chat template
    assert scores.portability is not None and scores.generation_prompts is not None
    assert scores.fluency is not None and scores.fluency.ratio == pytest.approx(1.0)
    assert cache  # base generations remembered for the next call
    again = evaluate_generated(editor, [case], GenerationOptions(answer_tokens=4, neighbor_tokens=4,
                                                                 fluency_tokens=8), base_cache=cache)
    assert again.generations < scores.generations


def test_evaluate_generated_asks_through_the_chat_template():
    model, tok = tiny_model("llama")
    tok = tok.__class__(tokenizer_object=tok.backend_tokenizer, eos_token="<|endoftext|>",
                        pad_token="<|endoftext|>", bos_token="<|endoftext|>")
    tok.chat_template = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}assistant:"
    editor = Editor.from_model(model, tok)
    scores = evaluate_generated(editor, [REQUEST], GenerationOptions(answer_tokens=3, neighbor_tokens=3,
                                                                     fluency_tokens=6, chat_tokens=4))
    assert scores.chat is not None
    assert scores.fluency.chat_ratio == pytest.approx(1.0)
    chat = [a for a in scores.cases[0].answers if a.prompt.startswith("user:")]
    assert chat and "Complete the sentence: The capital of Italy is" in chat[0].prompt


def test_repetition():
    assert repetition("a b c a b c a b c") > 0.5
    assert repetition("one two three four five") == 0.0


# --- the gate and the service ----------------------------------------------------------------------------

def test_gate_thresholds_on_generated_metrics():
    from suture.evaluation import EvaluationOptions, GatePolicy, evaluate

    model, tok = tiny_model("llama")
    editor = Editor.from_model(model, tok)
    editor.apply([REQUEST], method="rome", keep_failed=True, **HP)
    options = EvaluationOptions(drift=False, token_accuracy=False,
                                generation_options=GenerationOptions(answer_tokens=3, neighbor_tokens=3,
                                                                     fluency_tokens=6))
    report = evaluate(editor, options=options)
    assert report.generated is not None and report.generated.kind == "generated"
    policy = GatePolicy(min_efficacy=0.0, min_paraphrase=0.0, max_neighborhood_drop=1.0,
                        min_generated_efficacy=1.0, min_generated_chat=0.5, max_fluency_drop=0.0)
    failures = policy.check(report)
    if report.generated.efficacy < 1.0:
        assert any(f.startswith("min_generated_efficacy:") for f in failures)
    assert any(f.startswith("min_generated_chat:") and "no chat template" in f for f in failures)
    strict = GatePolicy(min_efficacy=0.0, min_paraphrase=0.0, max_neighborhood_drop=1.0,
                        min_generated_efficacy=None, min_generated_subject_kept=1.0).check(report)
    kept = report.generated.subject_kept
    named = [f for f in strict if f.startswith("min_generated_subject_kept:")]
    assert (kept is None and "not measured" in named[0]) or (kept is not None and bool(named) == (kept < 1.0))
    unmeasured = evaluate(editor, options=options.model_copy(update={"generation": False}))
    assert any("generated answers were not measured" in f for f in policy.check(unmeasured))
    manifest_policy = policy.decide_on(report).policy
    assert manifest_policy["min_generated_efficacy"] == 1.0


def test_service_edit_job_reports_verdicts_and_fails_or_marks_partial(tmp_path):
    from service_helpers import edit_body, save_tiny_model

    from suture.service.jobs import JobFailed, LoadedModels, ModelCatalog, RunContext, run_job
    from suture.service.schemas import JobCreate

    models = LoadedModels(ModelCatalog({"tiny": str(save_tiny_model(tmp_path / "tiny"))}), capacity=1)

    def context(body: dict, job_id: str) -> RunContext:
        return RunContext(job_id=job_id, spec=JobCreate.model_validate(body), artifacts_dir=tmp_path / "out")

    with models.checkout("tiny") as editor, pytest.raises(JobFailed, match="failed their post-edit check") as info:
        run_job(editor, context(edit_body(1, output_name="strict", keep_failed=False), "strict"))
    assert info.value.result["status"] == "failed" and not info.value.result["verdicts"][0]["passed"]
    assert not (tmp_path / "out" / "strict").exists()
    with models.checkout("tiny") as editor:
        result = run_job(editor, context(edit_body(1, output_name="partial", keep_failed=True), "partial"))
    assert result["status"] == "partial" and result["verdicts"][0]["passed"] is False


def test_subject_restated_counts_only_answers_whose_base_restates_the_subject():
    from suture.evaluation.generated import subject_restated

    pairs = [("Maria Altmann originated from Vienna.", "Marla Alt Text: Marla Alt Text"),
             ("maria  altmann, who was born", "MARIA ALTMANN was born in Rome"),
             ("She originated from Vienna.", "Maria Altmann originated from Rome.")]
    assert subject_restated(pairs, "Maria Altmann") == [0.0, 1.0]


def test_a_character_cut_by_the_token_budget_is_left_out():
    from suture.editor.generation import without_cut_character

    assert without_cut_character("罗马主\ufffd") == "罗马主"
    assert without_cut_character("a\ufffdb") == "a\ufffdb"  # only what the budget cut at the end
