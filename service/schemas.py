"""The API's request and response bodies (the OpenAPI schema is generated from these)."""

from __future__ import annotations

import math
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, model_validator

from suture.editor.conflicts import describe_clashes, find_clashes
from suture.editor.refresh import LapsedWhen
from suture.editor.requests import EditRequest
from suture.evaluation import EvaluationOptions, GatePolicy

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
LARGEST_INTEGER = 2**63 - 1


def non_finite(data: Any, loc: str = "") -> str | None:
    """The dotted location of the first NaN, Infinity (1e400 parses as one) or integer beyond 64 bits in
    a parsed JSON body; None when every number is finite. Python's JSON parser accepts all of these."""
    if isinstance(data, bool):
        return None
    if isinstance(data, float) and not math.isfinite(data):
        return loc or "body"
    if isinstance(data, int) and abs(data) > LARGEST_INTEGER:
        return loc or "body"
    if isinstance(data, dict):
        items = data.items()
    elif isinstance(data, list | tuple):
        items = enumerate(data)
    else:
        return None
    for key, value in items:
        found = non_finite(value, f"{loc}.{key}" if loc else str(key))
        if found is not None:
            return found
    return None


class JobKind(StrEnum):
    edit = "edit"  # apply edit requests with a request-taking method (rome, memit, ...)
    evaluate = "evaluate"  # measure a model, optionally after replaying an earlier job's ledger
    repair = "repair"  # a head intervention (a method that takes hyperparameters, not requests)


class JobStatus(StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in (JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled)


class DatasetRef(BaseModel):
    """A dataset file on the server, relative to its data directory (SUTURE_DATA_DIR)."""

    model_config = ConfigDict(extra="forbid")

    path: StrictStr = Field(min_length=1, max_length=500, description="relative to the server's data directory")
    format: Literal["counterfact", "zsre", "jsonl"] = "counterfact"
    limit: StrictInt | None = Field(None, ge=1, le=100_000)
    offset: StrictInt = Field(0, ge=0)


_NEEDS_METHOD = {"if": {"properties": {"kind": {"enum": ["edit", "repair"]}}, "required": ["kind"]},
                 "then": {"required": ["method"]}}


class JobCreate(BaseModel):
    """A job to run. The simplest edit: {"kind": "edit", "model": "smollm2-135m", "method": "rome",
    "requests": [...]}. Edit and repair jobs need a `method`; evaluate jobs take none."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"allOf": [_NEEDS_METHOD]})

    kind: JobKind
    model: StrictStr = Field(min_length=1, max_length=200, description="a model name from GET /v1/models")
    method: StrictStr | None = Field(None, max_length=100, description="an editing method from GET /v1/methods; "
                                     "required for edit and repair jobs, absent for evaluate jobs")
    requests: list[EditRequest] | None = Field(None, max_length=10_000)
    dataset: DatasetRef | None = None
    hparams: dict[str, Any] = Field(default_factory=dict, description="method hyperparameter overrides")
    gate: GatePolicy | None = Field(None, description="outputs are kept only when the gate passes")
    evaluation: EvaluationOptions | None = Field(None, description="evaluate jobs: what to measure")
    ledger_from: StrictStr | None = Field(None, max_length=64,
                                          description="evaluate jobs: replay this job output's edits first")
    continue_from: StrictStr | None = Field(
        None, pattern=NAME_PATTERN, description="edit and repair jobs: build on an earlier job's output (its "
        "output name): its edits are restored from its session.pt, deltas and all (not recomputed), this job's edit "
        "goes on top, and this job's outputs carry every edit. A gate's drift is then measured against the base "
        "model, over all of them")
    refresh: StrictInt | None = Field(
        None, ge=1, le=64, description="with continue_from: after this job's edit, check this many earlier "
        "requests (round robin over the ledger) and write again those that later edits undid (Editor.refresh); "
        "each rewrite is one more edit, so this bounds the extra work")
    lapsed_when: LapsedWhen | None = Field(
        None, description="with refresh: what counts as undone, 'not_greedy' (the default) or 'old_preferred' "
        "(the old answer at least as likely as the new: fewer rewrites, BENCHMARKS.md)")
    output_name: StrictStr | None = Field(None, pattern=NAME_PATTERN,
                                          description="checkpoint name (default: the job id)")
    save_checkpoint: StrictBool = Field(False, description="also materialize the full merged checkpoint (model-sized)")
    keep_failed: StrictBool | None = Field(
        None, description="edit jobs: keep an edit whose requests fail their post-edit verdict (the job result "
        "says status 'partial' and lists each verdict); by default such an edit is rolled back and the job fails")
    export_adapter: StrictBool = Field(True, description="export the edits as a PEFT LoRA adapter when they allow it")
    time_limit: float | None = Field(None, gt=0, allow_inf_nan=False,
                                     description="seconds the job may run (at most the server's job time limit, "
                                                 "its default); a job over it is stopped and failed")

    @model_validator(mode="before")
    @classmethod
    def _finite(cls, data: Any) -> Any:
        where = non_finite(data)
        if where is not None:
            raise ValueError(f"{where}: numbers must be finite (no NaN, Infinity, or values beyond float range)")
        return data

    @model_validator(mode="after")
    def _fits_kind(self) -> JobCreate:
        has_cases = bool(self.requests) or self.dataset is not None
        if self.requests is not None and self.dataset is not None:
            raise ValueError("give either 'requests' or 'dataset', not both")
        if self.kind in (JobKind.edit, JobKind.repair) and not self.method:
            raise ValueError(f"'method' is required for {self.kind.value} jobs")
        if self.kind is JobKind.edit and not has_cases:
            raise ValueError("edit jobs need 'requests' (a non-empty list) or 'dataset'")
        if self.kind is JobKind.evaluate and not (has_cases or self.ledger_from):
            raise ValueError("evaluate jobs need 'requests', 'dataset' or 'ledger_from'")
        if self.kind is not JobKind.evaluate and self.ledger_from is not None:
            raise ValueError("'ledger_from' is only for evaluate jobs (edit and repair jobs build on an earlier "
                             "output with 'continue_from')")
        if self.kind is JobKind.evaluate and self.continue_from is not None:
            raise ValueError("'continue_from' is only for edit and repair jobs (evaluate jobs take 'ledger_from')")
        if self.refresh is not None and self.continue_from is None:
            raise ValueError("'refresh' needs 'continue_from': it writes again earlier jobs' requests")
        if self.lapsed_when is not None and self.refresh is None:
            raise ValueError("'lapsed_when' needs 'refresh'")
        if self.kind is JobKind.evaluate:
            edit_only = [name for name, given in (("method", self.method is not None), ("gate", self.gate is not None),
                                                  ("hparams", bool(self.hparams)),
                                                  ("save_checkpoint", self.save_checkpoint),
                                                  ("keep_failed", self.keep_failed is not None)) if given]
            if edit_only:  # an evaluate job writes no outputs, so a gate there would decide nothing
                raise ValueError(f"evaluate jobs take no {', '.join(repr(n) for n in edit_only)}: they only "
                                 "report scores; put these on the edit job")
        if self.kind is JobKind.edit and self.requests:
            clashes = find_clashes(self.requests)
            if clashes:  # one edit cannot make both true; duplicates are refused, not merged
                raise ValueError(describe_clashes(clashes, self.requests))
        return self


class JobView(BaseModel):
    id: str
    kind: JobKind
    model: str
    method: str | None
    status: JobStatus
    progress: float = Field(ge=0, le=1)
    stage: str | None
    attempts: int
    output_name: str | None
    result: dict[str, Any] | None
    error: str | None
    worker: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    cancel_requested: bool


class JobPage(BaseModel):
    items: list[JobView]
    next_cursor: int | None = Field(None, description="pass as ?cursor= for the next page; null at the end")


class CheckpointView(BaseModel):
    name: str
    job_id: str
    model: str
    created_at: datetime
    files: list[str]
    has_checkpoint: bool
    has_adapter: bool


class TokenCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: StrictStr = Field(pattern=NAME_PATTERN)
    admin: StrictBool = False


class TokenView(BaseModel):
    id: int
    name: str
    admin: bool
    created_at: datetime
    revoked: bool


class TokenCreated(TokenView):
    token: str = Field(description="the secret; shown once, stored only as a hash")


class CatalogView(BaseModel):
    items: list[str]


class UnavailableMethod(BaseModel):
    name: str
    error: str = Field(description="why its entry point could not be loaded")


class MethodCatalogView(CatalogView):
    unavailable: list[UnavailableMethod] = Field(default_factory=list,
                                                 description="installed methods that failed to load")


class MethodView(BaseModel):
    name: str
    job_kind: Literal["edit", "repair"] = Field(description="the job kind that runs this method")
    one_request_at_a_time: bool
    hparams_schema: dict[str, Any] = Field(description="JSON schema of the method's hyperparameters")


class ErrorBody(BaseModel):
    detail: str
