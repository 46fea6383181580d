"""Service settings, read from the environment (SUTURE_*), with embedded defaults for one machine."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from suture.editor.errors import SutureError
from suture.editor.paths import suture_home


class JobLimits(BaseModel):
    """Operator maxima of everything a job request can make expensive, checked at submission (422 naming
    the field). The names are those of the request fields they bound, wherever they occur (hyperparameters
    of any method, evaluation and gate options)."""

    model_config = ConfigDict(extra="forbid")

    max_requests: int = Field(1000, ge=1, description="edit requests per job (inline or from a dataset)")
    max_text_chars: int = Field(2000, ge=16, description="characters of any one prompt, subject, answer or text")
    max_prompts: int = Field(500, ge=1, description="entries of any list of prompts (paraphrases, hparams sets)")
    max_corpus_samples: int = Field(5000, ge=1, description="corpus.n_samples")
    max_corpus_tokens: int = Field(512, ge=8, description="corpus.max_tokens")
    max_steps: int = Field(200, ge=1, description="optimization steps (objective.steps)")
    max_templates: int = Field(64, ge=1, description="context prefixes over all template groups")
    max_template_tokens: int = Field(64, ge=1, description="tokens of one generated context prefix")
    max_batch_size: int = Field(256, ge=1, description="batch_size / chunk_size of any method or evaluation")
    max_generated_tokens: int = Field(256, ge=1, description="token budget of any generated answer, chat reply "
                                      "or fluency text (generation options' *_tokens)")
    max_file_bytes: int = Field(64 * 1024 * 1024, ge=1, description="size of a dataset or corpus file a job reads")
    # A continue_from chain grows by a job's edits each time, and every job restores all of them (about 73 KB
    # and one weight rebuild per SmolLM2 MEMIT edit): without a cap, a caller's chain is unbounded work.
    max_session_edits: int = Field(10_000, ge=1, description="continue_from takes only an output holding "
                                   "fewer ledger entries than this")


class ServiceSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    database_url: str = Field(description="SQLAlchemy URL of the job store; default a SQLite file in SUTURE_HOME")
    artifacts_dir: Path = Field(description="where job outputs live; shared storage when workers are remote")
    data_dir: Path | None = Field(None, description="root under which dataset refs of jobs are resolved")
    admin_token: str | None = Field(None, min_length=16, description="the first admin bearer token")
    ray_address: str | None = Field(None, description="an existing Ray cluster; None starts a local one")
    workers: int = Field(1, ge=1, le=256, description="Ray actors, each running one job at a time")
    worker_cpus: float = Field(1.0, gt=0)
    worker_gpus: float = Field(0.0, ge=0, description="GPUs per worker actor (a GPU pool when > 0)")
    models_per_worker: int = Field(2, ge=1, description="loaded models kept per worker (least recently used out)")
    model_dtype: Literal["float32", "bfloat16", "float16"] = Field(
        "float32", description="dtype workers load models in; bf16 halves the memory but rounds away part of "
        "an edit (BENCHMARKS.md, 'On a GPU'), so only for models too large for float32")
    models: dict[str, str] = Field(default_factory=dict, description="extra model names -> local paths")
    max_attempts: int = Field(3, ge=1, description="runs of a job whose worker died before it is failed")
    lease_seconds: float = Field(30.0, gt=0, description="a running job not heard of for this long is requeued")
    max_body_bytes: int = Field(10 * 1024 * 1024, ge=1024)
    dispatch: bool = Field(True, description="run queued jobs (off: an API-only replica)")
    worker_threads: int | None = Field(None, ge=1, description="torch threads per worker (default: its CPUs)")
    allowed_dirs: list[Path] = Field(default_factory=list, description="more directories (besides data_dir) "
                                     "whose files jobs may name, e.g. as hparams.corpus.source")
    limits: JobLimits = Field(default_factory=JobLimits)
    job_time_limit: float = Field(3600.0, gt=0, description="seconds a job may run; a job may ask for less")
    cancel_grace_seconds: float = Field(5.0, gt=0, description="after a cancel or the time limit, how long "
                                        "the job has to stop by itself before its worker is killed")
    public_metrics: bool = Field(False, description="serve /metrics without a token (for a scraper on a "
                                 "trusted network); off: /metrics needs an admin token")
    worker_nice: int | None = Field(0, ge=-20, le=19, description="nice value of the worker processes (Ray "
                                    "starts them at a raised one, e.g. 15); None leaves Ray's")

    @classmethod
    def from_env(cls, **overrides) -> ServiceSettings:
        home = suture_home()
        env = os.environ
        values: dict = {
            "database_url": env.get("SUTURE_DATABASE_URL") or f"sqlite:///{home / 'service' / 'jobs.db'}",
            "artifacts_dir": env.get("SUTURE_ARTIFACTS_DIR") or home / "service" / "artifacts",
            "data_dir": env.get("SUTURE_DATA_DIR") or None,
            "admin_token": env.get("SUTURE_ADMIN_TOKEN") or None,
            "ray_address": env.get("RAY_ADDRESS") or None,
        }
        if env.get("SUTURE_MODEL_DTYPE"):
            values["model_dtype"] = env["SUTURE_MODEL_DTYPE"]
        numeric = {"workers": "SUTURE_WORKERS", "worker_cpus": "SUTURE_WORKER_CPUS",
                   "worker_gpus": "SUTURE_WORKER_GPUS", "max_attempts": "SUTURE_MAX_ATTEMPTS",
                   "lease_seconds": "SUTURE_LEASE_SECONDS", "max_body_bytes": "SUTURE_MAX_BODY_BYTES",
                   "models_per_worker": "SUTURE_MODELS_PER_WORKER", "worker_threads": "SUTURE_WORKER_THREADS",
                   "job_time_limit": "SUTURE_JOB_TIME_LIMIT", "cancel_grace_seconds": "SUTURE_CANCEL_GRACE_SECONDS",
                   "public_metrics": "SUTURE_PUBLIC_METRICS",
                   "worker_nice": "SUTURE_WORKER_NICE"}
        for field, name in numeric.items():
            if env.get(name):
                values[field] = env[name]
        if env.get("SUTURE_MODELS"):
            try:
                values["models"] = json.loads(env["SUTURE_MODELS"])
            except json.JSONDecodeError as exc:
                raise SettingsError(f"SUTURE_MODELS: not a JSON object of name -> path ({exc})") from None
        if env.get("SUTURE_ALLOWED_DIRS"):
            values["allowed_dirs"] = [d for d in env["SUTURE_ALLOWED_DIRS"].split(os.pathsep) if d]
        if env.get("SUTURE_LIMITS"):
            try:
                values["limits"] = json.loads(env["SUTURE_LIMITS"])
            except json.JSONDecodeError as exc:
                raise SettingsError(f"SUTURE_LIMITS: not a JSON object of limit -> value ({exc})") from None
        values.update(overrides)
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise SettingsError(f"service settings: {problems}") from None


class SettingsError(SutureError):
    pass
