"""The job body, parsed and validated off the event loop.

FastAPI parses a declared body and validates it on the event loop, before the endpoint runs. A body just
under the size limit (10 MB) took about 6 s there (JSON, the finiteness walk, the model's validation), and
while it did, every other request of every caller waited: a health check took 15 s beside three such
bodies. The job endpoint therefore reads the raw bytes and does both in a worker thread; the OpenAPI
schema still declares JobCreate as the body (`JOB_BODY`, `add_job_body_schema`).
"""

from __future__ import annotations

import json
from typing import Any

from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from suture.service.schemas import JobCreate

SCHEMA_REF = "#/components/schemas/{model}"
JOB_BODY = {"requestBody": {"required": True, "content": {"application/json": {
    "schema": {"$ref": SCHEMA_REF.format(model="JobCreate")}}}}}


def parse_job(raw: bytes) -> JobCreate:
    """JobCreate from the request's bytes; RequestValidationError (a 422 naming the field) otherwise."""
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise RequestValidationError([{"type": "json_invalid", "loc": ("body",), "msg": "JSON decode error",
                                       "input": {}, "ctx": {"error": type(exc).__name__}}]) from None
    try:
        return JobCreate.model_validate(data)
    except ValidationError as exc:
        raise RequestValidationError([{**error, "loc": ("body", *error["loc"])}
                                      for error in exc.errors(include_url=False)]) from None


def add_job_body_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema` (the app's OpenAPI document) with JobCreate and the models it uses among its components."""
    job = JobCreate.model_json_schema(ref_template=SCHEMA_REF)
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for name, definition in job.pop("$defs", {}).items():
        components.setdefault(name, definition)
    components["JobCreate"] = job
    return schema
