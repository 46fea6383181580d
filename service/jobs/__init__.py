"""Running one job on a loaded model: no Ray and no HTTP here, so it is testable and benchmarkable alone."""

from suture.service.jobs.catalog import ModelCatalog, UnknownModelError
from suture.service.jobs.models import LoadedModels
from suture.service.jobs.runner import JobCancelled, JobFailed, JobTimedOut, RunContext, run_job

__all__ = ["JobCancelled", "JobFailed", "JobTimedOut", "LoadedModels", "ModelCatalog", "RunContext",
           "UnknownModelError", "run_job"]
