"""Real user input that used to break silently (issue 14): each kind of input, not just one example."""

from __future__ import annotations

import pytest
import torch
from tiny import tiny_tokenizer

from suture.editor import EditRequest, InvalidRequestError, parse_requests
from suture.editor.kv.tokens import build_batch
from suture.editor.prompt_template import parse_template
from suture.evaluation.datasets import counterfact_mend_record, zsre_record


def _subject_tokens(tok, template, subject):
    """(decoded text of the batch row, decoded text up to and including the subject's last token)."""
    batch = build_batch(tok, [template], [subject])
    ids = batch.input_ids[0, : int(batch.lengths[0])].tolist()
    last = int(batch.subject_last[0])
    return tok.decode(ids), tok.decode(ids[: last + 1])


# ---- 1. one parser for the prompt template: literal braces survive exactly as written --------------------

BRACED = [
    ("In set notation {{}} is the empty set. The capital of {} is", "In set notation {} is the empty set. "
     "The capital of France is"),
    ("{{x}} marks the spot; the capital of {} is", "{x} marks the spot; the capital of France is"),
    ("The capital of {} (see {{ref}}) is", "The capital of France (see {ref}) is"),
    ("JSON {{\"a\": 1}} aside, {} is located in", "JSON {\"a\": 1} aside, France is located in"),
    ("The capital of {} is {{", "The capital of France is {"),
    ("{{}}{{}} then {} is", "{}{} then France is"),
]


@pytest.mark.parametrize(("prompt", "text"), BRACED)
def test_literal_braces_survive_in_text_and_tokens(prompt, text):
    request = EditRequest(prompt=prompt, subject="France", target_new="Paris")
    assert request.text == text
    assert request.prompt == prompt  # stored as written
    decoded, through_subject = _subject_tokens(tiny_tokenizer(), request.prompt, request.subject)
    assert decoded == text
    assert through_subject == text[: text.index("France") + len("France")]


@pytest.mark.parametrize("context", ["{}", "Because the weather was nice. {}"])
def test_context_templates_wrap_the_parsed_prompt(context):
    prompt = parse_template("In set notation {{}} is the empty set. The capital of {} is")
    wrapped = prompt.within(context)
    text = wrapped.fill("France").text
    assert text == context.replace("{}", "") + "In set notation {} is the empty set. The capital of France is"
    decoded, through_subject = _subject_tokens(tiny_tokenizer(), wrapped, "France")
    assert decoded == text and through_subject.endswith("capital of France")


@pytest.mark.parametrize("subject", ["{}", "Set {x}", "a}b{c", "C++ (lang.)*?", "$1 \\d"])
def test_subject_with_braces_or_metacharacters_is_taken_literally(subject):
    request = EditRequest(prompt="The capital of {} is", subject=subject, target_new="Paris")
    assert request.text == f"The capital of {subject} is"
    decoded, through_subject = _subject_tokens(tiny_tokenizer(), request.prompt, request.subject)
    assert decoded == request.text and through_subject == f"The capital of {subject}"


@pytest.mark.parametrize(("prompt", "reason"), [
    ("The capital of {0} is", "only an empty '{}'"), ("The capital of {name} is", "only an empty '{}'"),
    ("The capital of {:>9} is", "only an empty '{}'"), ("The capital of {!r} is", "only an empty '{}'"),
    ("The capital {} of {} is", "exactly one"), ("The capital of {{}} is", "exactly one"),
    ("The capital of { is {}", "not a valid template"), ("The capital} of {} is", "not a valid template"),
])
def test_bad_templates_are_refused_with_the_reason(prompt, reason):
    with pytest.raises(InvalidRequestError, match="field 'prompt'") as info:
        parse_requests([{"prompt": prompt, "subject": "France", "target_new": "Paris"}])
    assert reason in str(info.value)


def test_loaders_escape_literal_braces():
    record = {"src": "In {set} notation, where did Ray Charles study?", "subject": "Ray Charles",
              "alt": "Oxford", "answers": ["Florida"]}
    request = zsre_record(record, 3)
    assert request.text == record["src"]
    assert request.prompt == "In {{set}} notation, where did {} study?"
    mend = {"prompt": "{Note} The mother tongue of Danielle Darrieux is", "subject": "Danielle Darrieux",
            "target_new": "English", "ground_truth": "French"}
    assert counterfact_mend_record(mend, 0).text == mend["prompt"]


def test_kl_prompt_uses_the_same_parser():
    from suture.editor.kv.values import ValueObjective

    assert ValueObjective(kl_prompt="{{x}} {} is a").kl_prompt == "{{x}} {} is a"
    with pytest.raises(ValueError, match="exactly one"):
        ValueObjective(kl_prompt="{{}} is a")


# ---- 2. whitespace around the subject and the placeholder: normalized, the same for text and tokens -----

@pytest.fixture(scope="module")
def smol_tokenizer():
    from transformers import AutoTokenizer

    from suture.editor.zoo import resolve_zoo

    return AutoTokenizer.from_pretrained(resolve_zoo("smollm2-135m"))


SPACED_SUBJECTS = ["France ", " France", "France\t", "\nFrance", "France\u00a0", "\u200bFrance\ufeff",
                   "  France \r\n", "\u3000France\u2009"]
SPACED_PROMPTS = [
    ("The capital of  {} is", "The capital of France is"),
    ("The capital of {}   is", "The capital of France is"),
    ("The capital of\t{}\u00a0is", "The capital of France is"),
    ("   {} is the capital of", "France is the capital of"),
    ("\n{} is the capital of", "France is the capital of"),
    ("Question: which city?\n  {}\t's capital is", "Question: which city?\nFrance 's capital is"),
    ("<|im_start|>user\n{} has its capital in<|im_end|>\n<|im_start|>assistant\n",
     "<|im_start|>user\nFrance has its capital in<|im_end|>\n<|im_start|>assistant\n"),
    ("The capital of {}'s neighbour is", "The capital of France's neighbour is"),
]


def _check_key_token(tok, request: EditRequest):
    decoded, through_subject = _subject_tokens(tok, request.prompt, request.subject)
    assert decoded == request.text
    assert through_subject == request.text[: request.filled.subject_end]
    batch = build_batch(tok, [request.prompt], [request.subject])
    key_token = tok.decode([int(batch.input_ids[0, int(batch.subject_last[0])])])
    assert key_token.strip(), f"key token is whitespace: {key_token!r}"
    assert "  " not in request.text


@pytest.mark.parametrize("subject", SPACED_SUBJECTS)
def test_subject_whitespace_is_normalized(subject):
    request = EditRequest(prompt="The capital of {} is", subject=subject, target_new="Paris")
    assert request.subject == "France" and request.text == "The capital of France is"
    _check_key_token(tiny_tokenizer(), request)


@pytest.mark.parametrize(("prompt", "text"), SPACED_PROMPTS)
def test_placeholder_whitespace_is_normalized(prompt, text):
    request = EditRequest(prompt=prompt, subject="France", target_new="Paris")
    assert request.text == text
    _check_key_token(tiny_tokenizer(), request)


def test_inner_subject_whitespace_becomes_one_space_and_the_prompt_end_is_kept():
    request = EditRequest(prompt="Where is {} located? ", subject="New \t\u00a0York\n City", target_new="USA")
    assert request.subject == "New York City"
    assert request.text == "Where is New York City located? "  # the prompt's end belongs to the target


@pytest.mark.parametrize("subject", [" ", "\u00a0\t\n", "\u200b"])
def test_blank_subject_is_refused(subject):
    with pytest.raises(InvalidRequestError, match="field 'subject': .*blank"):
        parse_requests([{"prompt": "The capital of {} is", "subject": subject, "target_new": "Paris"}])


@pytest.mark.slow
@pytest.mark.parametrize("subject", SPACED_SUBJECTS)
def test_subject_whitespace_key_token_smollm2(smol_tokenizer, subject):
    request = EditRequest(prompt="The capital of {} is", subject=subject, target_new="Paris")
    _check_key_token(smol_tokenizer, request)
    batch = build_batch(smol_tokenizer, [request.prompt], [request.subject])
    assert smol_tokenizer.decode([int(batch.input_ids[0, int(batch.subject_last[0])])]) == " France"


@pytest.mark.slow
@pytest.mark.parametrize(("prompt", "text"), SPACED_PROMPTS)
def test_placeholder_whitespace_smollm2(smol_tokenizer, prompt, text):
    request = EditRequest(prompt=prompt, subject="Danielle Darrieux ", target_new="English")
    assert request.text == text.replace("France", "Danielle Darrieux")
    _check_key_token(smol_tokenizer, request)


# ---- 6. wrapping a model never changes the caller's tokenizer or model config --------------------------

def _tokenizer_state(tok) -> dict:
    return {"padding_side": tok.padding_side, "pad_token": tok.pad_token, "pad_token_id": tok.pad_token_id,
            "truncation_side": tok.truncation_side, "model_max_length": tok.model_max_length,
            "special": dict(tok.special_tokens_map), "vocab": len(tok)}


@pytest.mark.parametrize(("pad", "side"), [(None, "left"), ("<|endoftext|>", "left"), (None, "right")])
def test_from_model_leaves_the_callers_tokenizer_and_config_alone(pad, side):
    import copy

    from tiny import tiny_model

    from suture.editor import Editor

    model, shared = tiny_model("gpt2")
    tok = copy.deepcopy(shared)
    tok.pad_token = pad
    tok.padding_side = side
    before = _tokenizer_state(tok)
    config = model.config.to_dict()
    generation = model.generation_config.to_dict()
    ed = Editor.from_model(model, tok)
    ed.apply([EditRequest(prompt="The capital of {} is", subject="Italy", target_new="London")], method="rome",
             layer=1, corpus={"n_samples": 20, "max_tokens": 16}, templates={"groups": [[3, 1]]},
             objective={"steps": 2})
    ed.generate(["The capital of Italy is", "Toko Yasuda plays the"], max_new_tokens=2)
    assert _tokenizer_state(tok) == before
    assert model.config.to_dict() == config
    assert model.generation_config.to_dict() == generation
    assert ed.tokenizer is not tok and ed.tokenizer.padding_side == "right"
    assert ed.tokenizer.pad_token_id is not None


# ---- 4. requests in one call that cannot all hold: conflicts and duplicates are refused ----------------

BASE = {"prompt": "The capital of {} is", "subject": "France", "target_new": "Rome"}
CLASHING = [
    ({**BASE, "target_new": "Berlin"}, "conflicting targets"),
    ({**BASE, "target_new": "rome"}, "conflicting targets"),  # a different string is a different answer
    ({**BASE, "subject": "France ", "prompt": "The capital of  {} is", "target_new": "Madrid"}, "conflicting"),
    (dict(BASE), "the same edit twice"),
    ({**BASE, "target_new": " Rome "}, "the same edit twice"),
    ({**BASE, "subject": "\tFrance", "prompt": "The capital of {}\u00a0is", "id": "x"}, "the same edit twice"),
    ({**BASE, "paraphrases": ["France's capital is"]}, "the same edit twice"),
]


def test_many_clashes_are_named_up_to_a_bound_then_counted():
    from suture.editor.conflicts import NAMED_CLASHES, refuse_clashes
    from suture.editor.requests import EditRequest

    with pytest.raises(InvalidRequestError) as info:
        refuse_clashes([EditRequest(**BASE)] * (NAMED_CLASHES + 21))
    text = str(info.value)
    assert text.count("the same edit twice") == NAMED_CLASHES and "requests 0 and 1:" in text
    assert text.endswith("and 20 more clash(es) of repeated subject and prompt")


@pytest.fixture(scope="module")
def tiny_editor():
    from tiny import tiny_model

    from suture.editor import Editor

    model, tok = tiny_model("gpt2")
    return Editor.from_model(model, tok)


@pytest.mark.parametrize("method", ["rome", "memit"])
@pytest.mark.parametrize(("second", "reason"), CLASHING)
def test_clashing_requests_are_refused_naming_both(tiny_editor, method, second, reason):
    other = {"prompt": "{} plays the", "subject": "Toko Yasuda", "target_new": "piano"}
    before = {k: v.clone() for k, v in tiny_editor.model.state_dict().items()}
    with pytest.raises(InvalidRequestError, match=r"requests 1 and 3: field 'target_new': ") as info:
        tiny_editor.apply([other, BASE, {**other, "subject": "Toko"}, second], method=method)
    assert reason in str(info.value)
    assert not tiny_editor.ledger
    assert all(torch.equal(v, before[k]) for k, v in tiny_editor.model.state_dict().items())


def test_same_subject_other_prompt_or_other_subject_is_not_a_clash():
    from suture.editor.conflicts import find_clashes

    requests = parse_requests([BASE, {**BASE, "prompt": "The largest city of {} is", "target_new": "Lyon"},
                               {**BASE, "subject": "Italy", "target_new": "Paris"},
                               {**BASE, "subject": "france", "target_new": "Paris"}])
    assert find_clashes(requests) == []


def test_without_clashes_keeps_the_first_of_each():
    from suture.editor.conflicts import without_clashes

    requests = parse_requests([BASE, {**BASE, "target_new": "Berlin"}, {**BASE, "subject": "Italy"}, BASE])
    kept, clashes = without_clashes(requests)
    assert kept == [requests[0], requests[2]]
    assert [(c.first, c.second, c.duplicate) for c in clashes] == [(0, 1, False), (0, 3, True)]


@pytest.mark.parametrize(("second", "reason"), CLASHING)
def test_service_refuses_clashing_edit_jobs_with_422(tmp_path, second, reason):
    from fastapi.testclient import TestClient
    from test_service_api import AUTH, make_app

    body = {"kind": "edit", "model": "smollm2-135m", "method": "memit", "requests": [BASE, second]}
    with TestClient(make_app(tmp_path)) as client:
        response = client.post("/v1/jobs", json=body, headers=AUTH)
        assert response.status_code == 422
        messages = " ".join(d["msg"] for d in response.json()["detail"])
        assert "requests 0 and 1: field 'target_new'" in messages and reason in messages
        evaluate = {"kind": "evaluate", "model": "smollm2-135m", "requests": [BASE, second]}
        assert client.post("/v1/jobs", json=evaluate, headers=AUTH).status_code == 202  # nothing is written


# ---- 3. loaders find the subject once, on word boundaries -----------------------------------------------

def _zsre(src, subject, **extra):
    return {"src": src, "subject": subject, "alt": "Oxford", "answers": ["Cambridge"], **extra}


@pytest.mark.parametrize(("src", "subject", "template"), [
    ("Which university did Anna Rayleigh's daughter Ray attend?", "Ray",
     "Which university did Anna Rayleigh's daughter {} attend?"),
    ("Where did Raymond meet Ray?", "Ray", "Where did Raymond meet {}?"),
    ("Ray attended which university?", "Ray", "{} attended which university?"),  # at the very start
    ("Which label released C++ (the album)?", "C++ (the album)", "Which label released {}?"),
    ("Who founded the firm A.B.C. in 1990?", "A.B.C.", "Who founded the firm {} in 1990?"),
    ("What is [x]* in regex land?", "[x]*", "What is {} in regex land?"),
    ("Which team did {Braced} join?", "{Braced}", "Which team did {} join?"),
    ("Where was New\u00a0York founded?", "New York", "Where was {} founded?"),
    ("Where did Ray\tCharles study?", " Ray Charles ", "Where did {} study?"),
    ("Which country is Übermensch from?", "Übermensch", "Which country is {} from?"),
])
def test_loader_finds_the_subject_as_whole_words(src, subject, template):
    request = zsre_record(_zsre(src, subject), 7)
    assert request.prompt == template
    mend = counterfact_mend_record({"prompt": src, "subject": subject, "target_new": "Oxford",
                                    "ground_truth": "Cambridge"}, 7)
    assert mend.prompt == template


def test_loader_takes_a_single_occurrence_in_another_case_with_the_texts_spelling():
    request = zsre_record(_zsre("What did the Beatles record in 1969?", "The Beatles"), 0)
    assert request.prompt == "What did {} record in 1969?" and request.subject == "the Beatles"
    assert request.text == "What did the Beatles record in 1969?"


@pytest.mark.parametrize(("src", "subject", "reason"), [
    ("Where did Rayleigh study?", "Ray", "only inside another word"),
    ("Which city did Bray move to?", "Ray", "only inside another word"),
    ("Did Ray meet Ray's brother?", "Ray", "occurs 2 times"),
    ("Which label signed Oasis and oasis?", "OASIS", "occurs 2 times"),
    ("Which university did Anna attend?", "Ray", "does not contain the subject"),
    ("Which university did Anna attend?", " \t", "blank"),
])
def test_loader_refuses_ambiguous_or_missing_subjects_naming_record_and_field(src, subject, reason):
    with pytest.raises(InvalidRequestError, match=rf"^record 4: field 'src': .*{reason}"):
        zsre_record(_zsre(src, subject), 4)
    mend = {"prompt": src, "subject": subject, "target_new": "Oxford", "ground_truth": "Cambridge"}
    with pytest.raises(InvalidRequestError, match=rf"^record 4: field 'prompt': .*{reason}"):
        counterfact_mend_record(mend, 4)


def test_loader_prefers_the_one_occurrence_in_the_exact_case():
    assert zsre_record(_zsre("Did Ray meet ray?", "ray"), 4).prompt == "Did Ray meet {}?"


def test_load_zsre_names_the_absolute_record(tmp_path):
    import json

    from suture.evaluation.datasets import load_zsre

    path = tmp_path / "zsre.json"
    path.write_text(json.dumps([_zsre("Where did Ray study?", "Ray"), _zsre("Where did Rayleigh study?", "Ray")]))
    with pytest.raises(InvalidRequestError, match="^record 1: field 'src': "):
        load_zsre(path)
    assert load_zsre(path, limit=1)[0].prompt == "Where did {} study?"


# ---- 5. edits that change nothing: reported as no-ops, nothing written unless forced ------------------

FAST = {"layer": 1, "corpus": {"n_samples": 20, "max_tokens": 16}, "templates": {"groups": [[3, 1]]},
        "objective": {"steps": 2}}


def _fast(method: str) -> dict:
    if method == "memit":
        return {**{k: v for k, v in FAST.items() if k != "layer"}, "layers": [1, 2]}
    return FAST


def _greedy_word(editor, text: str) -> str:
    word = editor.generate([text], max_new_tokens=6)[0].split()[0]
    assert word.strip()
    return word


@pytest.fixture
def fresh_editor():
    from tiny import tiny_model

    from suture.editor import Editor

    model, tok = tiny_model("gpt2", seed=3)
    return Editor.from_model(model, tok)


@pytest.mark.parametrize("method", ["rome", "memit"])
def test_target_already_answered_is_a_noop_that_writes_nothing(fresh_editor, method):
    ed = fresh_editor
    request = EditRequest(prompt="The capital of {} is", subject="Italy", target_new="placeholder")
    answer = _greedy_word(ed, request.text)
    request = request.model_copy(update={"target_new": answer})
    before = {k: v.clone() for k, v in ed.model.state_dict().items()}
    result = ed.apply([request], method=method, **_fast(method))
    assert result.deltas == [] and result.requests == []
    assert [n["request"] for n in result.details["noop"]] == [0]
    assert not ed.ledger
    assert all(torch.equal(v, before[k]) for k, v in ed.model.state_dict().items())
    forced = ed.apply([request], method=method, force=True, **_fast(method))
    assert forced.deltas and len(ed.ledger) == 1 and "noop" not in forced.details


def test_noop_requests_are_left_out_of_a_batch_and_named(fresh_editor):
    ed = fresh_editor
    other = EditRequest(prompt="{} plays the", subject="Toko Yasuda", target_new="placeholder")
    answer = _greedy_word(ed, other.text)
    noop = other.model_copy(update={"target_new": f"  {answer} "})
    real = EditRequest(prompt="The capital of {} is", subject="Italy", target_new="Zzyzx Qwerty")
    result = ed.apply([real, noop], method="memit", **_fast("memit"))
    assert result.requests == [real] and result.deltas
    assert result.details["noop"] == [{"request": 1, "target_new": noop.target_new,
                                       "answer": result.details["noop"][0]["answer"]}]
    assert ed.ledger[0].requests == [real]


@pytest.mark.parametrize(("continuation", "target", "expected"), [
    (" Paris, the capital", "Paris", True), (" Paris", " Paris ", True), ("Paris.", "Paris", True),
    (" Parisian food", "Paris", False), (" paris", "Paris", False), (" New York City", "New York", True),
    (" New Yorker", "New York", False), ("", "Paris", False), (" Paris_2", "Paris", False),
    ("\nParis\n", "Paris", True),
])
def test_matches_answer_needs_the_whole_answer(continuation, target, expected):
    from suture.editor.noop import matches_answer

    assert matches_answer(continuation, target) is expected


def test_evaluation_without_target_true_reads_the_base_answer_and_says_so(fresh_editor):
    from suture.evaluation import EvaluationOptions, evaluate

    ed = fresh_editor
    real = EditRequest(prompt="The capital of {} is", subject="Italy", target_new="Zzyzx Qwerty")
    other = EditRequest(prompt="{} plays the", subject="Toko Yasuda", target_new="placeholder")
    base_real = ed.generate([real.text], max_new_tokens=6)[0]
    noop = other.model_copy(update={"target_new": _greedy_word(ed, other.text)})
    ed.apply([real], method="rome", **FAST)
    report = evaluate(ed, cases=[real, noop], options=EvaluationOptions(drift=False, token_accuracy=False))
    assert report.n_cases == 1  # the no-op has no old answer to compare against
    first, second = report.base_answers
    assert (first.case, first.noop, first.target_true) == (0, False, base_real.split()[0].strip(".,;:"))
    assert first.continuation.startswith(base_real[: len(first.continuation)]) or base_real.startswith(
        first.continuation)
    assert (second.case, second.noop, second.target_true) == (1, True, None)
    assert "(base)" not in report.model_dump_json()


# ---- 7. prompts longer than the model's context are refused, naming the field and both lengths -------

@pytest.mark.parametrize(("change", "field"), [
    ({"prompt": "Because the weather was nice, " * 40 + "the capital of {} is"}, "prompt"),
    ({"prompt": "{} is, " + "because the weather was nice, " * 40 + "the capital of"}, "prompt"),
    ({"subject": "Italy " * 140}, "prompt"),
    ({"target_new": "London " * 140}, "prompt"),
    ({"paraphrases": ["The capital of Italy is", "the city " * 140]}, "paraphrases.1"),
    ({"neighbors": ["the city " * 140], "neighbor_answers": ["Rome"]}, "neighbors.0"),
])
def test_prompt_longer_than_the_context_is_refused(tiny_editor, change, field):
    request = {"prompt": "The capital of {} is", "subject": "Italy", "target_new": "London", **change}
    limit = tiny_editor.model.config.n_positions
    with pytest.raises(InvalidRequestError, match=rf"^request 0: field '{field}': .* is (\d+) tokens, longer than "
                                                   rf"the model's context of {limit} tokens$") as info:
        tiny_editor.apply([request], method="rome", **FAST)
    assert int(str(info.value).split(" is ")[-1].split()[0]) > limit
    assert not tiny_editor.ledger


def test_prompt_that_fits_exactly_is_accepted(tiny_editor):
    from suture.editor.lengths import refuse_overlong

    tok, limit = tiny_editor.tokenizer, tiny_editor.model.config.n_positions
    prompt = "The capital of {} is"
    while True:  # grow the prompt until it is one token short of the limit with the target
        request = EditRequest(prompt="word " + prompt, subject="Italy", target_new="London")
        total = len(tok(request.text)["input_ids"]) + len(tok(" London", add_special_tokens=False)["input_ids"])
        if total > limit:
            break
        prompt = request.prompt
    fitting = EditRequest(prompt=prompt, subject="Italy", target_new="London")
    refuse_overlong(tiny_editor.handle, [fitting])
    with pytest.raises(InvalidRequestError, match=f"context of {limit} tokens"):
        refuse_overlong(tiny_editor.handle, [fitting, request])


# ---- 7. the cost of one edit grows at most linearly with prompt length ---------------------------------

FILLER = "Because the weather was nice, we walked to the river and talked about the city. "


def _long_request(words: int) -> EditRequest:
    return EditRequest(prompt=(FILLER * words)[: words * 6] + " The capital of {} is", subject="Italy",
                       target_new="London")


def _token_counter(model):
    """A forward pre-hook on the input embeddings recording (rows, width) of every pass."""
    seen: list[tuple[int, int]] = []
    hook = model.get_input_embeddings().register_forward_pre_hook(
        lambda _m, args: seen.append(tuple(args[0].shape)))
    return seen, hook


@pytest.mark.parametrize("through_update", [True, False])
def test_value_steps_replay_a_bounded_window_on_long_prompts(through_update):
    from tiny import tiny_model

    from suture.editor import Editor
    from suture.editor.kv.values import REPLAY_MARGIN

    model, tok = tiny_model("llama")
    ed = Editor.from_model(model, tok)
    hp = {**FAST, "templates": {"groups": [[5, 2]]}, "objective": {"steps": 4, "early_stop_nll": 0.0},
          "optimize_through_update": through_update}
    ed.apply([_long_request(4)], method="rome", force=True, **hp)  # warm-up: statistics and templates
    ed.revert()
    widths = {}
    for words in (4, 300):
        request = _long_request(words)
        seen, hook = _token_counter(model)
        try:
            ed.apply([request], method="rome", force=True, **hp)
        finally:
            hook.remove()
        ed.revert()
        length = len(tok(request.text)["input_ids"])
        widths[words] = (length, seen)
    long_length, long_seen = widths[300]
    assert long_length > 4 * REPLAY_MARGIN
    # Every pass but a few one-off ones (no-op check, keys and caches) is a step over a short window.
    full = [s for s in long_seen if s[1] > REPLAY_MARGIN + 16]
    assert len(full) <= 4, full
    assert all(rows <= 2 for rows, _ in full)  # the bare template and no context-prefix copies
    total = {w: sum(r * t for r, t in seen) for w, (_, seen) in widths.items()}
    short_length = widths[4][0]
    assert total[300] / total[4] <= 3 * long_length / short_length  # at most linear, with room


def test_rank_one_replay_over_a_cache_equals_the_full_replay():
    """With the whole prompt inside the margin, the cached-prefix replay of the rank-one update is the
    exact suffix replay: the window is an approximation only for positions further back."""
    from tiny import tiny_model

    from suture.editor.handle import ModelHandle
    from suture.editor.kv.prefix_replay import PrefixReplay
    from suture.editor.kv.suffix import SuffixRunner
    from suture.editor.kv.value_layout import value_layout
    from suture.editor.kv.values import _rank_one_hook

    model, tok = tiny_model("llama")
    handle = ModelHandle(model=model, tokenizer=tok, ref="tiny")
    requests = [_long_request(6), EditRequest(prompt="{} plays the", subject="Toko Yasuda", target_new="piano")]
    batch, lay = value_layout(tok, requests, ["{}", "Because the weather. {}"], "{} is a")
    batch = batch.to(model.device)
    torch.manual_seed(0)
    d_in = model.config.intermediate_size
    direction = torch.randn(batch.input_ids.shape[0], d_in, device=model.device) * 0.1
    delta = torch.randn(len(requests), model.config.hidden_size, device=model.device)
    mlp_out = model.get_submodule(handle.sites.mlp_out_path(1))
    rows = torch.arange(batch.input_ids.shape[0], device=model.device)
    with torch.no_grad():
        suffix = SuffixRunner(handle, 1, batch)
        with hooks_of(_rank_one_hook(mlp_out, rows, lay.request_of_row, delta, direction)):
            exact = suffix.run()
        prefix = PrefixReplay(handle, 1, batch, margin=10_000)
        replayed = prefix.run_rank_one(lambda r: direction[r], lambda r: delta[lay.request_of_row[r]])
    mask = batch.attention_mask.bool()
    assert torch.allclose(replayed[mask], exact[mask], atol=1e-4)


def hooks_of(*handles):
    from suture.editor.kv.capture import hooks

    return hooks(*handles)


def test_evaluation_refuses_cases_longer_than_the_context(tiny_editor):
    from suture.evaluation import EvaluationOptions, evaluate

    case = EditRequest(prompt="The capital of {} is", subject="Italy", target_new="London", target_true="Rome",
                       neighbors=["the city " * 140])
    with pytest.raises(InvalidRequestError, match=r"request 0: field 'neighbors.0': .* longer than the model's "
                                                   r"context of 128 tokens"):
        evaluate(tiny_editor, cases=[case], options=EvaluationOptions(drift=False))


@pytest.mark.parametrize("target", ["{}", "{x} and {{y}}", "set {}"])
def test_braces_in_targets_and_full_prompts_are_never_parsed(fresh_editor, target):
    request = EditRequest(prompt="The capital of {} is", subject="Italy", target_new=target,
                          paraphrases=["Italy {} capital is"], neighbors=["The capital of {France} is"])
    assert request.text == "The capital of Italy is"
    result = fresh_editor.apply([request], method="rome", **FAST)
    assert result.requests[0].target_new == target and result.deltas
