"""Edit requests: what the user wants the model to say, and what must not change."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from suture.editor.errors import SutureError
from suture.editor.prompt_template import FilledPrompt, normalize_subject, normalize_template, parse_template


def refuse_blank_entries(values: list[str]) -> list[str]:
    """A pydantic validator's body for a list of texts: ValueError naming the first blank entry. A blank
    prompt encodes to no token and a blank answer predicts nothing; refused where the error can name the
    field, not deep inside scoring or generation."""
    blank = [i for i, value in enumerate(values) if not value.strip()]
    if blank:
        raise ValueError(f"entry {blank[0]} is blank ({len(blank)} blank of {len(values)}): every entry needs text")
    return values


# A list of texts none of which is blank (validated as refuse_blank_entries says).
TextList = Annotated[list[str], AfterValidator(refuse_blank_entries)]


class EditRequest(BaseModel):
    """One fact to rewrite: the prompt with the subject filled in should be followed by `target_new`.

    The prompt is a template with one `{}` (literal braces doubled: see `prompt_template.py`, which also
    states the whitespace policy: the subject and the whitespace around the placeholder are normalized
    when the request is made, so the stored request is what is trained)."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=False)

    prompt: str = Field(description="template with exactly one '{}' where the subject goes")
    subject: str = Field(min_length=1)
    target_new: str = Field(min_length=1, description="the answer the edited model should give")
    target_true: str | None = Field(default=None, description="the answer the model gives today")
    paraphrases: TextList = Field(default_factory=list, description="full prompts meaning the same")
    neighbors: TextList = Field(default_factory=list, description="prompts whose answers must not change")
    neighbor_answers: TextList = Field(
        default_factory=list,
        description="the answers the neighbors must keep, one per neighbor (default: target_true)")
    generation_prompts: TextList = Field(
        default_factory=list, description="prompts for free generation about the subject (CounterFact's "
        "generation_prompts), judged by whether the generated text names target_new")
    portability_prompts: TextList = Field(
        default_factory=list, description="questions whose answer follows from the new fact (one hop)")
    portability_answers: TextList = Field(
        default_factory=list, description="the answer each portability prompt should get after the edit")
    target_space: bool | None = Field(
        default=None, description="whether target_new follows the prompt after a space; default: decided "
        "from the prompt's last character, the target's script and the tokenizer (editor/kv/spelling.py)")
    id: str | None = None

    @field_validator("prompt")
    @classmethod
    def _one_placeholder(cls, value: str) -> str:
        value = normalize_template(value)  # ValueError names the reason
        parsed = parse_template(value)
        if not (parsed.before + parsed.after).strip():
            raise ValueError("has no words besides the '{}' placeholder")
        return value

    @field_validator("subject")
    @classmethod
    def _subject_normalized(cls, value: str) -> str:
        value = normalize_subject(value)
        if not value:
            raise ValueError("must not be blank")
        return value

    @field_validator("target_new", "target_true")
    @classmethod
    def _not_blank(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():  # target_true may be left out, not given blank
            raise ValueError("must not be blank")
        # Every reader spells an answer from its stripped text (the space before it is `target_space`'s),
        # so the stored request says what is trained: " Paris " was kept, shown and saved as sent.
        return None if value is None else value.strip()

    @model_validator(mode="after")
    def _neighbor_answers_match(self) -> EditRequest:
        if self.neighbor_answers and len(self.neighbor_answers) != len(self.neighbors):
            raise ValueError(f"neighbor_answers has {len(self.neighbor_answers)} entries for "
                             f"{len(self.neighbors)} neighbors: give one answer per neighbor")
        return self

    @model_validator(mode="after")
    def _portability_answers_match(self) -> EditRequest:
        if len(self.portability_answers) != len(self.portability_prompts):
            raise ValueError(f"portability_answers has {len(self.portability_answers)} entries for "
                             f"{len(self.portability_prompts)} portability_prompts: give one answer per prompt")
        return self

    @model_validator(mode="after")
    def _targets_differ(self) -> EditRequest:
        if self.target_true is not None and self.target_true.strip() == self.target_new.strip():
            raise ValueError("target_new equals target_true: the edit would change nothing")
        return self

    @property
    def filled(self) -> FilledPrompt:
        """The rewrite prompt with the subject filled in, and the subject's character span in it."""
        return parse_template(self.prompt).fill(self.subject)

    @property
    def text(self) -> str:
        """The rewrite prompt with the subject filled in."""
        return self.filled.text

    @property
    def label(self) -> str:
        return self.id or f"{self.text} -> {self.target_new}"


class InvalidRequestError(SutureError):
    """A request (or a record that was to become one) failed validation."""


def _format_validation(exc: ValidationError, where: str) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(record)"
        parts.append(f"{where}field '{loc}': {err['msg']}")
    return "; ".join(parts)


def parse_request(data: Any, position: int | None = None) -> EditRequest:
    """Validate one request dict; the error names its position and field."""
    where = f"request {position}: " if position is not None else ""
    if isinstance(data, EditRequest):
        return data
    if not isinstance(data, dict):
        raise InvalidRequestError(f"{where}expected an object, got {type(data).__name__}")
    try:
        return EditRequest.model_validate(data)
    except ValidationError as exc:
        raise InvalidRequestError(_format_validation(exc, where)) from None


def parse_requests(items: Any) -> list[EditRequest]:
    if isinstance(items, (EditRequest, dict)):
        items = [items]
    if not isinstance(items, (list, tuple)) or not items:
        raise InvalidRequestError("requests: expected a non-empty list of edit requests")
    return [parse_request(item, i) for i, item in enumerate(items)]


def _target_str(value: Any) -> Any:
    return value["str"] if isinstance(value, dict) and "str" in value else value


def from_counterfact(record: dict[str, Any], position: int | None = None) -> EditRequest:
    """Turn a CounterFact record (ROME `requested_rewrite` schema) into an EditRequest."""
    where = f"record {position}: " if position is not None else ""
    rewrite = record.get("requested_rewrite") if isinstance(record, dict) else None
    if not isinstance(rewrite, dict):
        raise InvalidRequestError(f"{where}field 'requested_rewrite': missing or not an object")
    case_id = record.get("case_id")
    for name in ("paraphrase_prompts", "neighborhood_prompts"):
        value = record.get(name)
        if value is not None and not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            raise InvalidRequestError(f"{where}field '{name}': expected a list of strings")
    data = {
        "prompt": rewrite.get("prompt"),
        "subject": rewrite.get("subject"),
        "target_new": _target_str(rewrite.get("target_new")),
        "target_true": _target_str(rewrite.get("target_true")),
        "paraphrases": list(record.get("paraphrase_prompts") or []),
        "neighbors": list(record.get("neighborhood_prompts") or []),
        "generation_prompts": [g for g in record.get("generation_prompts") or [] if isinstance(g, str)],
        "id": None if case_id is None else str(case_id),
    }
    try:
        return EditRequest.model_validate(data)
    except ValidationError as exc:
        raise InvalidRequestError(_format_validation(exc, where + "requested_rewrite ")) from None
