"""Real user input that used to break silently (issue 14): each kind of input, not just one example."""

from __future__ import annotations

import pytest

from suture.editor import EditRequest, InvalidRequestError, parse_requests
from suture.editor.kv.tokens import build_batch
from suture.editor.prompt_template import parse_template
from suture.evaluation.datasets import counterfact_mend_record, zsre_record
from tests.tiny import tiny_tokenizer


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
