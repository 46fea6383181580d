"""EditRequest validation, parse_requests error positions, and CounterFact conversion."""

from __future__ import annotations

import copy

import pytest
from pydantic import ValidationError

from suture.editor import EditRequest, InvalidRequestError, from_counterfact, parse_requests
from suture.editor.errors import SutureError
from suture.editor.requests import parse_request

GOOD = {"prompt": "The mother tongue of {} is", "subject": "Danielle Darrieux", "target_new": "English"}

# A CounterFact record in ROME's `requested_rewrite` schema (case 0 of the dataset, abridged).
COUNTERFACT = {
    "case_id": 0,
    "pararel_idx": 2796,
    "requested_rewrite": {
        "prompt": "The mother tongue of {} is",
        "relation_id": "P103",
        "target_new": {"str": "English", "id": "Q1860"},
        "target_true": {"str": "French", "id": "Q150"},
        "subject": "Danielle Darrieux",
    },
    "paraphrase_prompts": [
        "Shayna does this and Yossel goes still and dies. Danielle Darrieux, a native",
        "An album was recorded for Capitol Nashville but never released. Danielle Darrieux spoke the language",
    ],
    "neighborhood_prompts": [
        "The mother tongue of L\u00e9on Blum is",
        "The native language of Montesquieu is",
    ],
    "attribute_prompts": ["J.\u00a0R.\u00a0R. Tolkien is a native speaker of"],
    "generation_prompts": ["Danielle Darrieux's mother tongue is"],
}


def _with(**changes):
    return {**GOOD, **changes}


# --------------------------------------------------------------------------- EditRequest


def test_good_request_fills_the_subject():
    request = EditRequest(**GOOD, target_true="French")
    assert request.text == "The mother tongue of Danielle Darrieux is"
    assert request.label == "The mother tongue of Danielle Darrieux is -> English"
    assert EditRequest(**GOOD, id="case-7").label == "case-7"
    assert request.paraphrases == [] and request.neighbors == []


def test_request_is_frozen():
    request = EditRequest(**GOOD)
    with pytest.raises(ValidationError):
        request.subject = "someone else"


@pytest.mark.parametrize(
    ("data", "field", "reason"),
    [
        (_with(prompt="The mother tongue of Danielle Darrieux is"), "prompt", "found 0"),
        (_with(prompt="{} and {} speak"), "prompt", "found 2"),
        (_with(prompt="The mother tongue of {x} is"), "prompt", "{x}"),
        (_with(prompt="The mother tongue of {name} is {}"), "prompt", "{name}"),
        (_with(prompt="The mother tongue of { is"), "prompt", "not a valid template"),
        (_with(prompt="  {}  "), "prompt", "no words besides"),
        (_with(subject="   "), "subject", "must not be blank"),
        (_with(subject=""), "subject", "at least 1 character"),
        (_with(target_new=" \t"), "target_new", "must not be blank"),
        (_with(target_true=" English "), "target_new", "equals target_true"),
        (_with(colour="blue"), "colour", "Extra inputs are not permitted"),
        ({k: v for k, v in GOOD.items() if k != "subject"}, "subject", "Field required"),
        (_with(target_true=""), "target_true", "must not be blank"),
        (_with(paraphrases=["Danielle Darrieux speaks", " "]), "paraphrases", "entry 1 is blank"),
        (_with(neighbors=[""]), "neighbors", "entry 0 is blank"),
        (_with(neighbors=["Jean Gabin speaks"], neighbor_answers=["\n"]), "neighbor_answers", "entry 0 is blank"),
        (_with(generation_prompts=["\t"]), "generation_prompts", "blank"),
        (_with(portability_prompts=[""], portability_answers=["French"]), "portability_prompts", "blank"),
    ],
    ids=["no-placeholder", "two-placeholders", "named-field", "named-and-empty", "unbalanced", "only-placeholder",
         "blank-subject", "empty-subject", "blank-target", "same-targets", "extra-field", "missing-subject",
         "blank-target-true", "blank-paraphrase", "empty-neighbor", "blank-neighbor-answer",
         "blank-generation-prompt", "blank-portability-prompt"],
)
def test_bad_request_names_field_and_reason(data, field, reason):
    with pytest.raises(ValidationError):
        EditRequest(**data)
    with pytest.raises(InvalidRequestError) as info:
        parse_request(data)
    message = str(info.value)
    assert field in message
    assert reason in message
    assert isinstance(info.value, SutureError)


# --------------------------------------------------------------------------- parse_requests


def test_parse_requests_accepts_one_or_many():
    single = parse_requests(GOOD)
    assert len(single) == 1 and single[0] == EditRequest(**GOOD)
    request = EditRequest(**GOOD)
    assert parse_requests(request) == [request]
    many = parse_requests([GOOD, request, _with(subject="Toko Yasuda")])
    assert [r.subject for r in many] == ["Danielle Darrieux", "Danielle Darrieux", "Toko Yasuda"]


def test_parse_requests_positions_the_error():
    with pytest.raises(InvalidRequestError) as info:
        parse_requests([GOOD, _with(prompt="no placeholder here")])
    assert str(info.value).startswith("request 1: field 'prompt': ")
    assert "exactly one '{}'" in str(info.value)

    with pytest.raises(InvalidRequestError) as info:
        parse_requests([GOOD, GOOD, _with(subject=" ")])
    assert str(info.value).startswith("request 2: field 'subject': ")


def test_parse_requests_reports_every_problem_of_a_request():
    with pytest.raises(InvalidRequestError) as info:
        parse_requests([{"prompt": "{} {}", "subject": " ", "target_new": "x", "extra": 1}])
    message = str(info.value)
    for part in ("request 0: field 'prompt'", "request 0: field 'subject'", "request 0: field 'extra'"):
        assert part in message


@pytest.mark.parametrize(
    ("items", "reason"),
    [([], "non-empty list"), ("The mother tongue", "non-empty list"), (None, "non-empty list"),
     ([GOOD, "a string"], "request 1: expected an object, got str")],
)
def test_parse_requests_rejects_non_lists(items, reason):
    with pytest.raises(InvalidRequestError, match=reason):
        parse_requests(items)


# --------------------------------------------------------------------------- CounterFact


def test_from_counterfact_converts_a_rome_record():
    request = from_counterfact(COUNTERFACT)
    assert request == EditRequest(
        prompt="The mother tongue of {} is", subject="Danielle Darrieux", target_new="English",
        target_true="French", paraphrases=COUNTERFACT["paraphrase_prompts"],
        neighbors=COUNTERFACT["neighborhood_prompts"], generation_prompts=COUNTERFACT["generation_prompts"], id="0",
    )
    assert request.text == "The mother tongue of Danielle Darrieux is"


def test_from_counterfact_accepts_plain_string_targets_and_missing_lists():
    record = {"case_id": 12, "requested_rewrite": {"prompt": "{} plays the", "subject": "Toko Yasuda",
                                                   "target_new": "piano", "target_true": "guitar"}}
    request = from_counterfact(record)
    assert (request.target_new, request.target_true, request.id) == ("piano", "guitar", "12")
    assert request.paraphrases == [] and request.neighbors == []


def _broken(**rewrite_changes):
    record = copy.deepcopy(COUNTERFACT)
    for key, value in rewrite_changes.items():
        if value is None:
            del record["requested_rewrite"][key]
        else:
            record["requested_rewrite"][key] = value
    return record


@pytest.mark.parametrize(
    ("record", "field", "reason"),
    [
        ({"case_id": 1}, "requested_rewrite", "missing or not an object"),
        ({"case_id": 1, "requested_rewrite": ["not", "a", "dict"]}, "requested_rewrite", "not an object"),
        ("not a record", "requested_rewrite", "missing"),
        (_broken(subject=None), "subject", "valid string"),
        (_broken(subject="  "), "subject", "must not be blank"),
        (_broken(prompt="The mother tongue of Danielle Darrieux is"), "prompt", "exactly one '{}'"),
        (_broken(target_new={"id": "Q1860"}), "target_new", "valid string"),
        (_broken(target_new={"str": "French"}), "target_new", "equals target_true"),
    ],
    ids=["no-rewrite", "rewrite-not-object", "record-not-object", "no-subject", "blank-subject", "no-placeholder",
         "target-without-str", "same-targets"],
)
def test_from_counterfact_malformed_record_names_field(record, field, reason):
    with pytest.raises(InvalidRequestError) as info:
        from_counterfact(record, position=3)
    message = str(info.value)
    assert message.startswith("record 3: ")
    assert field in message
    assert reason in message


@pytest.mark.parametrize("prompts", ["Danielle Darrieux, a native", [1, 2]], ids=["a-string", "not-strings"])
def test_from_counterfact_malformed_prompt_list_names_record_field(prompts):
    """`paraphrase_prompts` must be a list of strings; a plain string must not be split into characters,
    and the error must name the record's own field (not the EditRequest's `paraphrases`)."""
    record = copy.deepcopy(COUNTERFACT)
    record["paraphrase_prompts"] = prompts
    with pytest.raises(InvalidRequestError) as info:
        from_counterfact(record, position=0)
    assert "paraphrase_prompts" in str(info.value)


def test_answers_are_stored_as_they_are_trained_without_surrounding_whitespace():
    from suture.editor.requests import EditRequest

    request = EditRequest(prompt="The capital of {} is", subject="Italy", target_new=" Paris \t", target_true=" Rome\n")
    assert request.target_new == "Paris" and request.target_true == "Rome"
