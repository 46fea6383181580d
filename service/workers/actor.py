"""The Ray actor that runs jobs: it keeps loaded models between jobs and writes progress to the store.

It is a plain class; `pool.py` wraps it with `ray.remote` and the pool's resources (CPUs, GPUs). The worker
writes a job's terminal state itself, so a finished job stays finished even if the dispatcher that sent
it is gone; the dispatcher's own write is then a no-op (state changes are conditional).
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import time
import traceback
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from suture.editor.errors import SutureError
from suture.editor.progress import cancellation_check
from suture.service.jobs import JobCancelled, JobFailed, JobTimedOut, LoadedModels, ModelCatalog, RunContext, run_job
from suture.service.jobs.outputs import owner_area
from suture.service.schemas import JobCreate, JobStatus
from suture.service.settings import ServiceSettings
from suture.service.store import JobStore, make_engine
from suture.service.workers.priority import run_at_priority

log = logging.getLogger("suture.worker")


class LostLease(JobCancelled):
    """The store no longer shows this job running here (requeued elsewhere): stop without writing."""


class EditWorker:
    PROGRESS_INTERVAL = 0.5  # seconds between progress writes (and cancel checks)
    CHECK_INTERVAL = 0.5  # seconds between reads of the cancel flag at cancellation checks

    def __init__(self, settings_json: str):
        settings = ServiceSettings.model_validate_json(settings_json)
        threads = settings.worker_threads or max(1, int(settings.worker_cpus))
        self.priority = run_at_priority(settings.worker_nice, threads)  # Ray starts workers niced
        self.settings = settings
        self.store = JobStore(make_engine(settings.database_url), settings.max_attempts)
        self.models = LoadedModels(ModelCatalog(settings.models), settings.models_per_worker,
                                   dtype=settings.model_dtype)
        self.name = f"{socket.gethostname()}/pid{os.getpid()}"

    def identity(self) -> dict[str, Any]:
        return {"name": self.name, "pid": os.getpid(), **self.priority}

    def run(self, job_id: str) -> dict[str, Any]:
        """Run a job the dispatcher claimed for this worker; returns {status, result, error, loaded}."""
        row = self.store.row(job_id)
        if row is None:
            return self._outcome(JobStatus.failed, error=f"job {job_id} vanished from the store")
        attempt = row.attempts  # this run's claim: a later claim of the same job makes it stale
        try:
            spec = JobCreate.model_validate(row.spec)
        except ValidationError as exc:  # stored before a stricter schema: definite, not a dead worker
            return self._finish(job_id, JobStatus.failed, error=f"the stored job no longer validates: {exc}",
                                attempt=attempt)
        limit = min(spec.time_limit or self.settings.job_time_limit, self.settings.job_time_limit)
        ctx = RunContext(job_id=job_id, spec=spec, artifacts_dir=owner_area(self.settings.artifacts_dir, row.owner_id),
                         data_dir=self.settings.data_dir, report=self._reporter(job_id, attempt),
                         check=self._checker(job_id, time.monotonic() + limit, limit),
                         allowed_dirs=self.settings.allowed_dirs, limits=self.settings.limits)
        finish = functools.partial(self._finish, attempt=attempt)
        try:
            with cancellation_check(ctx.check):
                ctx.report(0.0, "loading model")
                with self.models.checkout(spec.model) as editor:
                    ctx.check()
                    result = run_job(editor, ctx)
            return finish(job_id, JobStatus.succeeded, result=result)
        except LostLease:
            return self._outcome(JobStatus.queued, error="lost the lease; the job runs elsewhere")
        except JobTimedOut as exc:
            return finish(job_id, JobStatus.failed, error=str(exc))
        except JobCancelled:
            return finish(job_id, JobStatus.cancelled, error="cancelled on request")
        except JobFailed as exc:
            return finish(job_id, JobStatus.failed, result=exc.result, error=str(exc))
        except SutureError as exc:  # suture's own verdict on the input: definite, not retried
            return finish(job_id, JobStatus.failed, error=f"{type(exc).__name__}: {exc}")
        except Exception as exc:  # anything else may be transient (memory, a device, a file system): retry
            log.error("job %s failed:\n%s", job_id, traceback.format_exc())
            reason = self._public(f"internal error: {type(exc).__name__}: {exc}")
            status = self.store.retry_or_fail(job_id, reason) or JobStatus.failed
            return self._outcome(status, error=reason)

    def _reporter(self, job_id: str, attempt: int | None = None):
        last = {"at": 0.0, "stage": None}

        def report(fraction: float, stage: str) -> None:
            now = time.monotonic()
            if stage == last["stage"] and now - last["at"] < self.PROGRESS_INTERVAL:
                return
            last.update(at=now, stage=stage)
            if not self.store.progress(job_id, fraction, stage[:200], attempt=attempt):
                raise LostLease(job_id)
            if self.store.cancel_requested(job_id):
                raise JobCancelled(job_id)

        return report

    def _checker(self, job_id: str, deadline: float, limit: float):
        """The cancellation check the job's long loops call: the time limit at every call, the store's cancel
        flag at most every CHECK_INTERVAL seconds."""
        last = {"at": time.monotonic()}

        def check() -> None:
            now = time.monotonic()
            if now > deadline:
                raise JobTimedOut(f"time limit exceeded: the job ran longer than {limit:g} s")
            if now - last["at"] >= self.CHECK_INTERVAL:
                last["at"] = now
                if self.store.cancel_requested(job_id):
                    raise JobCancelled(job_id)

        return check

    def _public(self, message: str | None) -> str | None:
        """The message with the server's own directories named, not spelled out: a job's caller learns
        what failed, not where the server keeps its files."""
        if not message:
            return message
        roots = [(self.settings.artifacts_dir, "<artifacts>"), (self.settings.data_dir, "<data>"),
                 *((d, "<allowed dir>") for d in self.settings.allowed_dirs)]
        spelled = {}
        for root, name in roots:
            if root is not None:
                for form in {str(root), str(Path(root).expanduser().resolve())}:
                    spelled[form.rstrip("/") or "/"] = name
        for form in sorted(spelled, key=len, reverse=True):  # a nested root before the one holding it
            if form != "/":
                message = message.replace(form, spelled[form])
        return message

    def _finish(self, job_id: str, status: JobStatus, result: dict | None = None, error: str | None = None,
                attempt: int | None = None):
        error = self._public(error)
        if not self.store.finish(job_id, status, result=result, error=error, attempt=attempt):
            return self._outcome(JobStatus.queued, error="lost the lease; the job runs elsewhere")
        return self._outcome(status, result, error)

    def _outcome(self, status: JobStatus, result: dict | None = None, error: str | None = None) -> dict[str, Any]:
        return {"status": status.value, "result": result, "error": error, "loaded": self.models.names()}
