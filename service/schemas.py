"""The API's request and response bodies (the OpenAPI schema is generated from these)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, model_validator

from suture.editor.requests import EditRequest
from suture.evaluation import EvaluationOptions, GatePolicy

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"


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


class JobCreate(BaseModel):
    """A job to run. The simplest edit: {"kind": "edit", "model": "smollm2-135m", "method": "rome",
    "requests": [...]}."""

    model_config = ConfigDict(extra="forbid")

    kind: JobKind
    model: StrictStr = Field(min_length=1, max_length=200, description="a model name from GET /v1/models")
    method: StrictStr | None = Field(None, max_length=100, description="an editing method from GET /v1/methods")
    requests: list[EditRequest] | None = Field(None, max_length=10_000)
    dataset: DatasetRef | None = None
    hparams: dict[str, Any] = Field(default_factory=dict, description="method hyperparameter overrides")
    gate: GatePolicy | None = Field(None, description="outputs are kept only when the gate passes")
    evaluation: EvaluationOptions | None = Field(None, description="evaluate jobs: what to measure")
    ledger_from: StrictStr | None = Field(None, max_length=64,
                                          description="evaluate jobs: replay this job output's edits first")
    output_name: StrictStr | None = Field(None, pattern=NAME_PATTERN,
                                          description="checkpoint name (default: the job id)")
    save_checkpoint: StrictBool = Field(False, description="also materialize the full merged checkpoint (model-sized)")
    keep_failed: StrictBool | None = Field(
        None, description="edit jobs: keep an edit whose requests fail their post-edit verdict (the job result "
        "says status 'partial' and lists each verdict); by default such an edit is rolled back and the job fails")
    export_adapter: StrictBool = Field(True, description="export the edits as a PEFT LoRA adapter when they allow it")

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
            raise ValueError("'ledger_from' is only for evaluate jobs")
        if self.kind is JobKind.evaluate and self.method is not None:
            raise ValueError("evaluate jobs take no 'method'")
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


class ErrorBody(BaseModel):
    detail: str
