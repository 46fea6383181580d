"""The job body, parsed and validated off the event loop.

FastAPI parses a declared body and validates it on the event loop, before the endpoint runs. A body just
under the size limit (10 MB) took seconds there (JSON, the finiteness walk, the model's validation), and
while it did, every other request of every caller waited (benchmarks/body_stall.py; BENCHMARKS.md, "Large
job bodies"). The job endpoint therefore reads the raw bytes and does both in a worker thread, errors
bounded there too; the OpenAPI schema still declares JobCreate as the body (`JOB_BODY`,
`add_job_body_schema`). A body must be JSON: a Content-Type other than JSON's is refused, as FastAPI did.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from suture.service.api.validation_errors import bounded_errors
from suture.service.schemas import JobCreate

SCHEMA_REF = "#/components/schemas/{model}"
JOB_BODY = {"requestBody": {"required": True, "content": {"application/json": {
    "schema": {"$ref": SCHEMA_REF.format(model="JobCreate")}}}}}


def is_json(content_type: str | None) -> bool:
    """Whether a Content-Type names JSON (application/json, or a +json type); a missing one counts as JSON."""
    if not content_type:
        return True
    media = content_type.split(";")[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


def parse_job(raw: bytes, content_type: str | None = None) -> JobCreate:
    """JobCreate from the request's bytes; RequestValidationError (a 422 naming the field) otherwise."""
    if not is_json(content_type):
        raise RequestValidationError([{"type": "content_type", "loc": ("body",), "input": content_type,
                                       "msg": "the body must be JSON (Content-Type: application/json)"}])
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise RequestValidationError([{"type": "json_invalid", "loc": ("body",), "msg": "JSON decode error",
                                       "input": {}, "ctx": {"error": type(exc).__name__}}]) from None
    try:
        return JobCreate.model_validate(data)
    except ValidationError as exc:
        raise RequestValidationError(bounded_errors([{**error, "loc": ("body", *error["loc"])}
                                                     for error in exc.errors(include_url=False)])) from None


def add_job_body_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema` (the app's OpenAPI document) with JobCreate and the models it uses among its components."""
    job = JobCreate.model_json_schema(ref_template=SCHEMA_REF)
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for name, definition in job.pop("$defs", {}).items():
        components.setdefault(name, definition)
    components["JobCreate"] = job
    return schema
