"""Loading edit cases from benchmark files: CounterFact (ROME and MEND schemas), zsRE (MEND eval schema),
known_1000, and suture's own JSONL. A malformed record fails with its position and field.

Schemas that give a full question and a subject (zsRE, CounterFact-MEND) are turned into templates by
finding the subject once, as whole words (`prompt_template.locate_subject`): a record where it occurs
more than once, only inside another word, or not at all is refused (`record N: field 'src': ...`); if
it only occurs in another case, that one occurrence is used and the request takes the text's spelling."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from suture.editor.errors import SutureError
from suture.editor.jsonl import iter_jsonl
from suture.editor.prompt_template import locate_subject, template_from_span
from suture.editor.requests import EditRequest, InvalidRequestError, from_counterfact, parse_request


class KnownFact(BaseModel):
    """A fact the model should already know (known_1000), for tracing and locality."""

    known_id: int
    subject: str
    attribute: str
    template: str
    prompt: str
    relation_id: str | None = None


def _read_json_list(path: Path) -> list[Any]:
    if not path.is_file():
        raise SutureError(f"{path} does not exist")
    if path.suffix == ".jsonl":
        return [record for _, record in iter_jsonl(path)]
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise SutureError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(data, list):
        raise SutureError(f"{path}: expected a JSON list of records")
    return data


def _field(record: Any, name: str, position: int, kind: type = str) -> Any:
    if not isinstance(record, dict):
        raise InvalidRequestError(f"record {position}: expected an object, got {type(record).__name__}")
    value = record.get(name)
    if not isinstance(value, kind):
        raise InvalidRequestError(f"record {position}: field '{name}' missing or not a {kind.__name__}")
    return value


def _template(text: str, subject: str, position: int, field: str) -> tuple[str, str]:
    """(template, subject as the text spells it): the subject found once, as whole words (`locate_subject`);
    every other character of the text is kept literally (braces escaped)."""
    try:
        start, end = locate_subject(text, subject)
    except ValueError as exc:
        raise InvalidRequestError(f"record {position}: field '{field}': {exc}") from None
    return template_from_span(text, start, end), text[start:end]


def _validated(data: dict, position: int) -> EditRequest:
    try:
        return EditRequest.model_validate(data)
    except ValidationError as exc:
        parts = [f"record {position}: field '{'.'.join(map(str, e['loc']))}': {e['msg']}" for e in exc.errors()]
        raise InvalidRequestError("; ".join(parts)) from None


def counterfact_mend_record(record: Any, position: int) -> EditRequest:
    """CounterFact in the MEND/EasyEdit schema: full `prompt`, `subject`, `target_new`, `ground_truth`,
    `rephrase_prompt`, `locality_prompt`, `locality_ground_truth`."""
    prompt, subject = _template(_field(record, "prompt", position), _field(record, "subject", position),
                                position, "prompt")
    locality = record.get("locality_prompt")
    return _validated({
        "prompt": prompt, "subject": subject, "target_new": _field(record, "target_new", position),
        "target_true": _field(record, "ground_truth", position),
        "paraphrases": [record["rephrase_prompt"]] if record.get("rephrase_prompt") else [],
        "neighbors": [locality] if locality else [],
        "neighbor_answers": [record["locality_ground_truth"]]
        if locality and record.get("locality_ground_truth") else [],
        "id": str(record.get("case_id", position)),
    }, position)


def load_counterfact(path: str | Path, limit: int | None = None, offset: int = 0) -> list[EditRequest]:
    """CounterFact records, ROME schema (`requested_rewrite`) or MEND schema, as edit requests."""
    records = _read_json_list(Path(path))
    end = None if limit is None else offset + limit
    out = []
    for i, record in enumerate(records[offset:end], offset):
        if isinstance(record, dict) and "requested_rewrite" not in record and "ground_truth" in record:
            out.append(counterfact_mend_record(record, i))
        else:
            out.append(from_counterfact(record, i))
    return out


def zsre_record(record: Any, position: int) -> EditRequest:
    """zsRE in the MEND eval schema: `src` question, `subject`, `alt` new answer, `answers` (true),
    `rephrase`, `loc` (an unrelated NQ question) with `loc_ans`."""
    prompt, subject = _template(_field(record, "src", position), _field(record, "subject", position),
                                position, "src")
    answers = _field(record, "answers", position, list)
    loc = record.get("loc")
    return _validated({
        "prompt": prompt, "subject": subject, "target_new": _field(record, "alt", position),
        "target_true": answers[0] if answers and isinstance(answers[0], str) else None,
        "paraphrases": [record["rephrase"]] if record.get("rephrase") else [],
        "neighbors": [loc] if loc else [],
        "neighbor_answers": [record["loc_ans"]] if loc and record.get("loc_ans") else [],
        **_portability(record),
        "id": str(record.get("case_id", position)),
    }, position)


def _portability(record: dict) -> dict[str, list[str]]:
    """The one-hop portability question of the zsRE portability set (`portability["New Question"]`,
    `["New Answer"]`), when the record has one."""
    port = record.get("portability")
    if isinstance(port, dict) and isinstance(port.get("New Question"), str) and isinstance(
            port.get("New Answer"), str) and port["New Question"].strip() and port["New Answer"].strip():
        return {"portability_prompts": [port["New Question"]], "portability_answers": [port["New Answer"]]}
    return {}


def load_zsre(path: str | Path, limit: int | None = None, offset: int = 0) -> list[EditRequest]:
    records = _read_json_list(Path(path))
    end = None if limit is None else offset + limit
    return [zsre_record(r, i) for i, r in enumerate(records[offset:end], offset)]


def load_known(path: str | Path, limit: int | None = None) -> list[KnownFact]:
    out = []
    for i, record in enumerate(_read_json_list(Path(path))[:limit]):
        try:
            out.append(KnownFact.model_validate(record))
        except ValidationError as exc:
            err = exc.errors()[0]
            raise InvalidRequestError(f"record {i}: field '{'.'.join(map(str, err['loc']))}': {err['msg']}") from None
    return out


def load_requests_jsonl(path: str | Path) -> list[EditRequest]:
    """suture's own format: one EditRequest object per line."""
    path = Path(path)
    if not path.is_file():
        raise SutureError(f"{path} does not exist")
    out = []
    for number, data in iter_jsonl(path):
        try:
            out.append(parse_request(data))
        except InvalidRequestError as exc:
            raise InvalidRequestError(f"{path}:{number}: {exc}") from None
    if not out:
        raise InvalidRequestError(f"{path}: holds no edit requests")
    return out


def load_cases(path: str | Path, limit: int | None = None) -> list[EditRequest]:
    """Any supported edit-case file, recognized by its records' fields."""
    path = Path(path)
    if path.suffix == ".jsonl":
        return load_requests_jsonl(path)[:limit]
    records = _read_json_list(path)
    first = records[0] if records else {}
    if isinstance(first, dict) and "src" in first and "alt" in first:
        return load_zsre(path, limit)
    return load_counterfact(path, limit)
