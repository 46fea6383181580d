"""/v1/jobs: submit, read, list, cancel, and follow progress as server-sent events."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated

from fastapi import APIRouter, Header, HTTPException, Query, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from suture.editor.errors import UnknownMethodError
from suture.editor.registry import get_method
from suture.service.api.auth import Caller, State, sees
from suture.service.api.job_body import JOB_BODY, parse_job
from suture.service.jobs import UnknownModelError
from suture.service.jobs.admission import Inadmissible, admit
from suture.service.jobs.outputs import owner_area
from suture.service.jobs.runner import discard_outputs
from suture.service.schemas import ErrorBody, JobCreate, JobKind, JobPage, JobStatus, JobView
from suture.service.store import IdempotencyConflict, OutputNameTaken

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

ERRORS = {401: {"model": ErrorBody, "description": "missing or invalid token"},
          404: {"model": ErrorBody, "description": "no such job visible to this token"}}


def _check_refs(st, caller, body: JobCreate) -> None:
    """Everything checkable before queueing: a bad model, method, hyperparameter, path or size is refused
    now, not after minutes (admission.py)."""
    try:
        st.catalog.ref(body.model)
    except UnknownModelError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"model: {exc}") from None
    method = None
    if body.method is not None:
        try:
            method = get_method(body.method)
        except UnknownMethodError as exc:
            raise HTTPException(status.HTTP_400_BAD_REQUEST, f"method: {exc}") from None
        if body.kind is JobKind.edit and not method.takes_requests:
            raise HTTPException(status.HTTP_400_BAD_REQUEST,
                                f"method: {body.method!r} takes no edit requests; submit it as a 'repair' job")
        if body.kind is JobKind.repair and method.takes_requests:
            raise HTTPException(status.HTTP_400_BAD_REQUEST,
                                f"method: {body.method!r} edits with requests; submit it as an 'edit' job")
    for field_name, output in (("ledger_from", body.ledger_from), ("continue_from", body.continue_from)):
        if output is None:
            continue
        source = st.jobs.by_output(output, caller.id)  # the caller's own outputs (names are per token)
        if source is None or not sees(caller, source.owner_id) or source.status != JobStatus.succeeded.value:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"{field_name}: no succeeded job output named {output!r}")
        if field_name == "continue_from" and source.kind == JobKind.evaluate.value:
            raise HTTPException(422, f"{field_name}: {output!r} is an evaluate job's output, which holds no edits")
        if source.model != body.model:  # its edits were made on another base model
            raise HTTPException(422, f"{field_name}: {output!r} was made on model {source.model!r}, not "
                                     f"{body.model!r}")
        held = len((source.result or {}).get("edits") or [])
        if field_name == "continue_from" and held >= st.settings.limits.max_session_edits:
            raise HTTPException(422, f"{field_name}: {output!r} holds {held} ledger entries; this server continues "
                                     f"sessions of at most {st.settings.limits.max_session_edits - 1} "
                                     "(limits.max_session_edits)")
    if body.dataset is not None and st.settings.data_dir is None:
        raise HTTPException(status.HTTP_400_BAD_REQUEST,
                            "dataset: this server has no data directory (SUTURE_DATA_DIR); send 'requests'")
    try:
        admit(body, method, st.settings, st.catalog)
    except Inadmissible as exc:
        raise HTTPException(422, exc.detail()) from None


def _submit(st, owner_id: int, body: JobCreate, idempotency_key: str | None) -> tuple[JobView, bool]:
    """Queue the job. Its output_name, if a job of the same token that failed or was cancelled holds it, is
    taken back from that job (with any files a run of it that died after writing left) and given to this one."""
    try:
        return st.jobs.submit(owner_id, body, idempotency_key)
    except OutputNameTaken:
        released = body.output_name and st.jobs.release_ended_name(owner_id, body.output_name)
        if not released:
            raise
        discard_outputs(owner_area(st.settings.artifacts_dir, owner_id), body.output_name, released)
        return st.jobs.submit(owner_id, body, idempotency_key)  # once: a second clash is a live holder


@router.post("", status_code=status.HTTP_202_ACCEPTED, response_model=JobView, responses={
    **ERRORS, 200: {"model": JobView, "description": "an Idempotency-Key seen before: the same job"},
    400: {"model": ErrorBody, "description": "unknown method, or one that does not fit the job kind"},
    409: {"model": ErrorBody, "description": "output name taken, or Idempotency-Key reused with another body"},
    413: {"model": ErrorBody, "description": "body too large"},
    422: {"description": "the body is not a valid job: each error names its field and reason",
          "content": {"application/json": {"schema": {"$ref": "#/components/schemas/HTTPValidationError"}}}}},
    openapi_extra=JOB_BODY)
async def submit(request: Request, response: Response, caller: Caller, st: State,
                 idempotency_key: Annotated[str | None, Header(max_length=200)] = None) -> JobView:
    # The body is a JobCreate, parsed in a worker thread (job_body.py), not on the event loop.
    body = await run_in_threadpool(parse_job, await request.body(), request.headers.get("content-type"))
    await run_in_threadpool(_check_refs, st, caller, body)
    try:
        job, created = await run_in_threadpool(_submit, st, caller.id, body, idempotency_key)
    except (IdempotencyConflict, OutputNameTaken) as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    if created:
        st.metrics.submitted.labels(body.kind.value).inc()
    else:
        response.status_code = status.HTTP_200_OK
        response.headers["Idempotent-Replayed"] = "true"
    return job


async def _visible(st, caller, job_id: str) -> JobView:
    job = await run_in_threadpool(st.jobs.get, job_id)
    if job is None or not sees(caller, await run_in_threadpool(st.jobs.owner_of, job_id)):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no job {job_id!r}")
    return job


@router.get("/{job_id}", response_model=JobView, responses=ERRORS)
async def get_job(job_id: str, caller: Caller, st: State) -> JobView:
    return await _visible(st, caller, job_id)


@router.get("", response_model=JobPage, responses={401: ERRORS[401]})
async def list_jobs(caller: Caller, st: State, status_: Annotated[JobStatus | None, Query(alias="status")] = None,
                    kind: JobKind | None = None, model: Annotated[str | None, Query(max_length=200)] = None,
                    cursor: Annotated[int | None, Query(ge=0, le=2**62)] = None,
                    limit: Annotated[int, Query(ge=1, le=200)] = 50) -> JobPage:
    owner = None if caller.admin else caller.id
    items, next_cursor = await run_in_threadpool(
        st.jobs.list, owner, status_.value if status_ else None, kind.value if kind else None, model, cursor, limit)
    return JobPage(items=items, next_cursor=next_cursor)


@router.post("/{job_id}/cancel", response_model=JobView, responses=ERRORS)
async def cancel_job(job_id: str, caller: Caller, st: State) -> JobView:
    """Queued jobs are cancelled at once; running ones stop at their next progress report."""
    await _visible(st, caller, job_id)
    return await run_in_threadpool(st.jobs.cancel, job_id)


@router.get("/{job_id}/events", responses={**ERRORS, 200: {"content": {"text/event-stream": {}},
                                                            "description": "progress events until the job ends"}})
async def job_events(job_id: str, caller: Caller, st: State) -> StreamingResponse:
    """Server-sent events: `progress` whenever status, progress or stage change, then one `end`."""
    await _visible(st, caller, job_id)

    async def stream():
        last, n, quiet = None, 0, 0.0
        while True:
            job = await run_in_threadpool(st.jobs.get, job_id)
            if job is None:
                return
            snapshot = (job.status, round(job.progress, 3), job.stage)
            if snapshot != last:
                last, n, quiet = snapshot, n + 1, 0.0
                event = "end" if job.status.terminal else "progress"
                yield f"id: {n}\nevent: {event}\ndata: {json.dumps(job.model_dump(mode='json'))}\n\n"
                if job.status.terminal:
                    return
            elif quiet >= 15:
                quiet = 0.0
                yield ": keep-alive\n\n"
            await asyncio.sleep(0.25)
            quiet += 0.25

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


